"""The native emulator against Intel's Lava (lava-nc 0.10.0), spike for spike, u and v included.

Lava is the ground truth. These tests need the Lava environment (`make lava`);
without a Python 3.10 to build it they skip and say why.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from targets.chips import load_chip
from targets.lava import environment
from targets.lava import runner as lava_runner
from targets.loihi2.emulator import run as run_emulator
from tests.builders import conv_graph, synaptic_network
from snn_compile.compare import first_divergence
from toolchain.errors import UserError
from toolchain.ir import INPUT
from toolchain.nir_import import ImportOptions, graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize
from toolchain.program import Layer, Program, Synapses

needs_lava = pytest.mark.skipif(not environment.is_ready(),
                                reason=f"Lava environment missing ({environment.venv_dir()}): "
                                       f"{environment.HOW_TO_CREATE} (needs a Python 3.10)")

TRAINED_SAMPLES = 200


def assert_bit_exact(program: Program, inputs: np.ndarray, batch_size: int = 256):
    emulated = run_emulator(program, inputs, record=True)
    simulated = lava_runner.run(program, inputs, record=True, batch_size=batch_size)
    layers = [layer.name for layer in program.layers]
    divergence = first_divergence(emulated, simulated, layers)
    assert divergence is None, divergence.describe()
    assert np.array_equal(emulated.output, simulated.output)
    for name in layers:
        assert np.array_equal(emulated.activity[name].spike_counts, simulated.activity[name].spike_counts)
    return emulated


@needs_lava
@pytest.mark.parametrize("arch", ["mlp", "csnn"])
def test_trained_models_match_lava_at_8_4_2_bits(arch, request, digits, loihi2):
    """Every spike, u and v of the emulator equals Lava's on 200 test samples at each width."""
    _, graph = request.getfixturevalue(arch)
    x = digits.x_test[:TRAINED_SAMPLES].reshape((TRAINED_SAMPLES,) + tuple(graph.input_shape))
    for bits in (8, 4, 2):
        program = quantize(graph, loihi2, QuantizeOptions(bits=bits))
        result = assert_bit_exact(program, x)
        assert sum(t.sum() for t in result.trains.values()) > 0


def layer(name, n, du=4095, dv=0, vth=100, bias_mant=0, bias_exp=0, shape=None, **extra):
    return Layer(name=name, shape=shape or (n,), du=du, dv=dv, vth=vth, bias_mant=bias_mant, bias_exp=bias_exp,
                 v_scale=1.0, **extra)


def chain(layers, synapses, n_in, steps, levels, input_shape=None):
    return Program(chip="loihi2", input_shape=input_shape or (n_in,), input_levels=levels, steps=steps,
                   layers=layers, synapses=synapses, output=layers[-1].name)


def dense(source, target, weights, exp, bits=8, message_bits=0):
    weights = np.asarray(weights)
    return Synapses(source, target, weights, np.broadcast_to(np.asarray(exp), (weights.shape[0],)), bits,
                    message_bits=message_bits)


RNG = np.random.default_rng(7)


def edge_programs():
    """Programs that exercise one corner of Loihi's arithmetic each, with inputs."""
    n_in, steps = 6, 5
    graded = RNG.integers(0, 256, (12, steps, n_in))
    binary = RNG.integers(0, 2, (12, steps, n_in))
    mixed = RNG.integers(-255, 256, (4, n_in))
    cases = {}
    wrap_weights = np.concatenate([np.full((4, n_in), 255), np.full((2, n_in), -255)])
    cases["u_wrap_and_v_clip"] = (chain(
        [layer("a", 6, du=4095, dv=0, vth=2**17 - 1)],
        [dense(INPUT, "a", wrap_weights, [7, 6, 5, 4, 1, 0], message_bits=8)], n_in, steps, 255), graded)
    cases["vth_max_and_du_dv_corners"] = (chain(
        [layer("a", 4, du=0, dv=4095, vth=2**17 - 1, bias_mant=4095, bias_exp=7),
         layer("b", 3, du=4095, dv=0, vth=0)],
        [dense(INPUT, "a", mixed, 5, message_bits=8), dense("a", "b", RNG.integers(-255, 256, (3, 4)), 3)],
        n_in, steps, 255), graded)
    cases["negative_weight_exp"] = (chain(
        [layer("a", 5, du=1000, dv=200, vth=3)],
        [dense(INPUT, "a", RNG.integers(-255, 256, (5, n_in)), -6, bits=5, message_bits=8)],
        n_in, steps, 255), graded)
    cases["sign_modes"] = (chain(
        [layer("exc", 3, vth=5, bias_mant=-30), layer("inh", 3, vth=1, bias_mant=200, bias_exp=2)],
        [dense(INPUT, "exc", RNG.integers(0, 256, (3, n_in)), 0, bits=3),
         dense("exc", "inh", -RNG.integers(0, 257, (3, 3)), 1, bits=3)], n_in, steps, 1), binary)
    cases["graded_input"] = (chain(
        [layer("a", 4, du=2048, dv=512, vth=40)],
        [dense(INPUT, "a", mixed, -2, bits=7, message_bits=8)], n_in, steps, 255), graded)
    rec = layer("r", 4, du=3000, dv=300, vth=20, bias_mant=60, bias_exp=2)
    cases["recurrent"] = (chain(
        [rec], [dense(INPUT, "r", RNG.integers(-100, 200, (4, n_in)), 2),
                dense("r", "r", RNG.integers(-255, 256, (4, 4)), 3)], n_in, steps, 1), binary)
    split_weights = RNG.integers(-200, 200, (6, n_in))
    split_weights[4] = 2 * RNG.integers(10, 100, n_in) + 1  # excitatory, and odd: its own process keeps the low bit
    grouped = Layer(name="g", shape=(6,), du=[4095, 4095, 100, 100, 4095, 100], dv=[0, 0, 500, 500, 0, 500],
                    vth=[10, 10, 30, 30, 10, 30], bias_mant=RNG.integers(-100, 100, 6), bias_exp=1, v_scale=1.0)
    cases["groups_and_split_exponents"] = (chain(
        [grouped, layer("out", 3, vth=8)],
        [dense(INPUT, "g", split_weights, [2, 2, 1, 0, 3, 1]),
         dense("g", "out", RNG.integers(-255, 256, (3, 6)), 2)], n_in, steps, 1), binary)
    # current biases: mixed signs and odd values (Lava drops their low bit), a negative exponent that floors,
    # and exponents that differ between neurons of one group (so the group becomes two processes)
    biased = layer("cb", 6, du=[3000, 3000, 3000, 100, 100, 100], dv=300, vth=40, bias_mant=-20,
                   current_bias_mant=[255, -256, 37, -3, 5, 0], current_bias_exp=[2, 2, 2, -1, 0, -1])
    cases["current_bias"] = (chain(
        [biased, layer("cb_out", 3, du=2000, dv=100, vth=30, current_bias_mant=[-7, 9, 120], current_bias_exp=1)],
        [dense(INPUT, "cb", RNG.integers(-120, 120, (6, n_in)), 1, message_bits=8),
         dense("cb", "cb_out", RNG.integers(-255, 256, (3, 6)), 2)], n_in, steps, 255), graded)
    conv_in = (2, 7, 7)
    conv_out = layer("c", 3 * 4 * 4, vth=20, shape=(3, 4, 4), bias_mant=-5)
    conv = Synapses(INPUT, "c", RNG.integers(-255, 256, (3, 2, 3, 3)), np.repeat([1, 0, 2], 16), 6, kind="conv",
                    stride=(2, 2), padding=(1, 1))
    cases["conv_stride_padding"] = (chain(
        [conv_out, layer("fc", 4, vth=6)],
        [conv, dense("c", "fc", RNG.integers(-255, 256, (4, 48)), 0)], 0, steps, 1, input_shape=conv_in),
        RNG.integers(0, 2, (10, steps) + conv_in))
    return cases


EDGE_CASES = edge_programs()


@needs_lava
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_case_programs_match_lava(case):
    program, inputs = EDGE_CASES[case]
    assert_bit_exact(program, inputs, batch_size=5)


@needs_lava
def test_recurrent_layer_spikes_at_sample_ends():
    """The recurrent case is only a test of Lava's sample boundary if spikes cross it."""
    program, inputs = EDGE_CASES["recurrent"]
    result = run_emulator(program, inputs, record=True)
    assert result.trains["r"][:, -1].sum() > 0


@needs_lava
def test_u_wraps_and_v_clips_in_the_edge_case():
    program, inputs = EDGE_CASES["u_wrap_and_v_clip"]
    result = run_emulator(program, inputs, record=True)
    assert (result.u["a"][:, :, :4] < 0).any()  # positive drive wrapped past 2^23
    assert (result.v["a"][:, :, 4:] == -(2**23 - 1)).any()  # negative drive saturated


@needs_lava
def test_cuba_lif_network_with_biases_matches_lava():
    """snnTorch's Linear(bias=True) -> Synaptic, compiled: the current biases run on Lava as always-on inputs."""
    nir_graph, x, _, _ = synaptic_network(samples=12, steps=20)
    program = quantize(graph_from_nir(nir_graph, ImportOptions(input_levels=1)), load_chip("loihi2"),
                       QuantizeOptions(bits=8))
    assert all(layer.has_current_bias for layer in program.layers)
    result = assert_bit_exact(program, x, batch_size=6)
    assert result.trains["lif1"].sum() > 100


@needs_lava
def test_neuron_groups_splitting_conv_channels_match_lava():
    """Gains and thresholds that vary within a channel: four groups share each channel's kernel."""
    program = quantize(graph_from_nir(conv_graph(dense=False)), load_chip("loihi2"), QuantizeOptions(bits=8))
    assert len(program.layer("lif").groups()) == 4
    x = RNG.integers(0, 256, size=(8, 1, 6, 6))
    result = assert_bit_exact(program, x)
    assert result.trains["lif"].sum() > 0


def test_subtract_reset_is_refused_in_one_line_before_lava_starts(monkeypatch):
    """Lava 0.10's LIF resets to zero and it has no process that subtracts: --target lava says so."""
    program, inputs = EDGE_CASES["graded_input"]
    subtracting = Program(chip="loihi2", input_shape=program.input_shape, input_levels=program.input_levels,
                          steps=program.steps, layers=[layer("a", 4, du=2048, dv=512, vth=40, reset="subtract")],
                          synapses=program.synapses, output="a")
    monkeypatch.setattr(lava_runner, "run_worker", lambda *args: pytest.fail("the worker must not start"))
    with pytest.raises(UserError) as err:
        lava_runner.run(subtracting, inputs)
    message = str(err.value)
    assert "\n" not in message and "layer 'a' resets by subtraction" in message
    assert "Lava 0.10 has no such process" in message and "--reset zero" in message


def test_missing_environment_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SNN_LAVA_VENV", str(tmp_path))
    program, inputs = EDGE_CASES["graded_input"]
    with pytest.raises(UserError) as err:
        lava_runner.run(program, inputs)
    message = str(err.value)
    assert "\n" not in message and "make lava" in message and "snn-compile lava setup" in message


@needs_lava
def test_worker_crash_is_a_clear_error_and_leaves_nothing_running(tmp_path, monkeypatch):
    """A worker that dies mid-run (and has forked a child, as Lava does) is reported and reaped."""
    pid_file = tmp_path / "child.pid"
    crashing = tmp_path / "crashing_worker.py"
    crashing.write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("progress 3 12", flush=True)
        print("RuntimeError: a Lava process died", file=sys.stderr)
        sys.exit(3)
    """))
    monkeypatch.setattr(lava_runner, "WORKER", crashing)
    program, inputs = EDGE_CASES["graded_input"]
    with pytest.raises(UserError) as err:
        lava_runner.run(program, inputs)
    assert "failed after 3 of 12 samples" in str(err.value) and "a Lava process died" in str(err.value)
    assert not _alive(int(pid_file.read_text()))


@needs_lava
def test_worker_timeout_kills_the_worker(tmp_path, monkeypatch):
    pid_file = tmp_path / "worker.pid"
    hanging = tmp_path / "hanging_worker.py"
    hanging.write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    monkeypatch.setattr(lava_runner, "WORKER", hanging)
    monkeypatch.setenv("SNN_LAVA_TIMEOUT", "2")
    program, inputs = EDGE_CASES["graded_input"]
    with pytest.raises(UserError, match="timed out"):
        lava_runner.run(program, inputs)
    assert not _alive(int(pid_file.read_text()))


def test_program_for_another_chip_is_refused():
    program, inputs = EDGE_CASES["graded_input"]
    other = Program(chip="digital45nm", input_shape=program.input_shape, input_levels=program.input_levels,
                    steps=program.steps, layers=program.layers, synapses=program.synapses, output=program.output)
    with pytest.raises(UserError, match="Lava runs Loihi programs"):
        lava_runner.run(other, inputs)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
