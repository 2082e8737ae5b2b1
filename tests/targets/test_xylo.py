"""Xylo: the emulator against an independent per-neuron reference and against SynSense's xylosim,
the lowering's design rules and refusals, and the cycle model."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from snn_compile.compile import CompileOptions, compile_model
from targets.chips import load_chip
from targets.lava.environment import venv_python
from targets.registry import get_target
from targets.xylo.costs import cycles_per_step
from targets.xylo.drc import check_fits
from targets.xylo.emulator import input_events, simulate
from targets.xylo.costs import xylo_costs
from targets.xylo.lowering import current_gain, dash_of, map_core, quantize
from targets.xylo.program import OUTPUT, LayerSlot, XyloProgram
from toolchain.errors import UserError
from toolchain.ir import INPUT, Connection, Graph, Population

LOW, HIGH = -(2**15), 2**15 - 1


@pytest.fixture(scope="module")
def xylo():
    return load_chip("xylo")


def reference(p: XyloProgram, events: np.ndarray) -> dict:
    """xylosim's C++ neuron (``XyloIAFNeuron::evolve``, ``safe_add``) one neuron, one source and one
    event count at a time."""
    def add(x, y):  # safe_add: the sum, or the bound it would reach or pass
        bound = LOW if y < 0 else HIGH
        return x + y if abs(bound - x) > abs(y) else bound

    def sat(x):
        return min(max(x, LOW), HIGH)

    def dec(x, d):
        step = x >> d
        return (1 if x > 0 else -1 if x < 0 else 0) if step == 0 else step

    out = {k: [] for k in ("spikes", "spikes_out", "isyn", "vmem", "isyn_out", "vmem_out")}
    for sample in events:
        nh, no = p.n_hidden, p.n_out
        isyn, vmem, isyn_o, vmem_o, prev = [0] * nh, [0] * nh, [0] * no, [0] * no, [0] * nh
        rows = {k: [] for k in out}
        for step in sample:
            for j in range(nh):
                x = isyn[j]
                for c in range(p.n_in):
                    x = sat(x + min(int(step[c]), 15) * (int(p.w_in[c, j]) << p.shift_in))
                for h in range(nh):
                    x = sat(x + prev[h] * (int(p.w_rec[h, j]) << p.shift_rec))
                isyn[j] = x - dec(x, int(p.dash_syn[j]))
            for k in range(no):
                x = isyn_o[k]
                for h in range(nh):
                    x = sat(x + prev[h] * (int(p.w_out[h, k]) << p.shift_out))
                isyn_o[k] = x - dec(x, int(p.dash_syn_out[k]))
            fired = [0] * nh
            for j in range(nh):
                v = add(vmem[j], add(add(-dec(vmem[j], int(p.dash_mem[j])), isyn[j]), int(p.bias[j])))
                while v >= p.threshold[j] and fired[j] < 31:
                    v -= int(p.threshold[j])
                    fired[j] += 1
                vmem[j] = v
            fired_o = [0] * no
            for k in range(no):
                v = add(vmem_o[k], add(add(-dec(vmem_o[k], int(p.dash_mem_out[k])), isyn_o[k]),
                                       int(p.bias_out[k])))
                if v >= p.threshold_out[k]:
                    v -= int(p.threshold_out[k])
                    fired_o[k] = 1
                vmem_o[k] = v
            prev = fired
            for name, value in (("spikes", fired), ("spikes_out", fired_o), ("isyn", list(isyn)),
                                ("vmem", list(vmem)), ("isyn_out", list(isyn_o)), ("vmem_out", list(vmem_o))):
                rows[name].append(value)
        for k in out:
            out[k].append(rows[k])
    return {k: np.array(v, dtype=np.int64) for k, v in out.items()}


def random_program(rng, n_in=4, n_hidden=6, n_out=3, big=False) -> XyloProgram:
    """Weights over the whole int8 range; ``big``: shifts and thresholds that drive every state into
    saturation and neurons to 31 events a step."""
    def w(*shape):
        return rng.integers(-128, 128, shape) * (rng.random(shape) < 0.7)

    shift = (lambda: int(rng.integers(5, 8))) if big else (lambda: int(rng.integers(0, 3)))
    threshold = rng.integers(1, 40, n_hidden) if big else rng.integers(50, 2000, n_hidden)
    return XyloProgram(
        w_in=w(n_in, n_hidden), w_rec=w(n_hidden, n_hidden), w_out=w(n_hidden, n_out), shift_in=shift(),
        shift_rec=shift(), shift_out=shift(), dash_syn=rng.integers(1, 8, n_hidden),
        dash_mem=rng.integers(0, 8, n_hidden), threshold=threshold, bias=rng.integers(-300, 300, n_hidden),
        dash_syn_out=rng.integers(1, 8, n_out), dash_mem_out=rng.integers(0, 8, n_out),
        threshold_out=rng.integers(1, 3000, n_out), bias_out=rng.integers(-300, 300, n_out),
        slots=[LayerSlot("h", "hidden", 0, n_hidden, 0), LayerSlot("o", OUTPUT, 0, n_out, 1)],
        steps=10, input_shape=(n_in,), input_levels=15, edges=[(INPUT, "h"), ("h", "h"), ("h", "o")])


@pytest.mark.parametrize("big", [False, True])
def test_emulator_equals_the_per_neuron_reference(big):
    rng = np.random.default_rng(3 + big)
    program = random_program(rng, big=big)
    events = rng.integers(0, 20, (3, 12, program.n_in)) * (rng.random((3, 12, program.n_in)) < 0.6)
    got, want = simulate(program, events), reference(program, events)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    if big:  # the corners this case is for were reached
        saturated = [(x - (x >> program.dash_syn)) for x in (HIGH, LOW)]  # a clipped Isyn, decayed
        assert all(np.any(got["isyn"] == value) for value in saturated) and got["vmem"].min() == LOW
        assert got["spikes"].max() == 31 and events.max() > 15


XYLOSIM = r"""
import json, sys
from xylosim.v2 import XyloLayer, XyloSynapse
spec = json.load(sys.stdin)
def synapses(w):
    return [[XyloSynapse(j, 0, v) for j, v in enumerate(row) if v] for row in w]
keep = (synapses(spec["w_in"]), synapses(spec["w_rec"]), synapses(spec["w_out"]))
layer = XyloLayer(*keep, [[] for _ in spec["threshold"]], spec["threshold"], spec["threshold_out"], True,
                  spec["bias"], spec["bias_out"], *spec["shifts"], spec["dash_mem"], spec["dash_mem_out"],
                  [[d, d] for d in spec["dash_syn"]], [[d] for d in spec["dash_syn_out"]], "check")
out = []
for sample in spec["events"]:
    layer.reset_all()
    layer.evolve(sample)
    out.append({"spikes": layer.rec_recurrent_spikes, "spikes_out": layer.rec_out_spikes,
                "isyn": layer.rec_i_syn, "vmem": layer.rec_v_mem, "isyn_out": layer.rec_i_syn_out,
                "vmem_out": layer.rec_v_mem_out})
json.dump(out, sys.stdout)
"""


def xylosim(program: XyloProgram, events: np.ndarray) -> dict:
    """SynSense's xylosim (``xylosim.v2.XyloLayer``, Rockpool's XyloSim for SYNS61201) run in the
    Python 3.10 environment; traces as (samples, steps, neurons)."""
    python = venv_python()
    if not python.exists() or subprocess.run([str(python), "-c", "import xylosim.v2"],
                                             capture_output=True).returncode != 0:
        pytest.skip("xylosim 0.1.3 (Python 3.10 only) is not installed in the Lava environment "
                    f"({python}): pip install xylosim==0.1.3 there")
    spec = {name: getattr(program, name).tolist() for name in (
        "w_in", "w_rec", "w_out", "threshold", "threshold_out", "bias", "bias_out", "dash_mem", "dash_mem_out",
        "dash_syn", "dash_syn_out")}
    spec.update(shifts=[program.shift_in, program.shift_rec, program.shift_out], events=events.tolist())
    done = subprocess.run([str(python), "-c", XYLOSIM], input=json.dumps(spec), capture_output=True, text=True,
                          timeout=300, check=True)
    runs = json.loads(done.stdout)
    # xylosim records states (neurons, steps) and spikes (steps, neurons)
    return {k: np.array([np.array(r[k]).T if k not in ("spikes", "spikes_out") else r[k] for r in runs])
            for k in runs[0]}


@pytest.mark.parametrize("big", [False, True])
def test_emulator_equals_xylosim_on_hand_built_programs(big):
    """``big``: driven into saturation on every step, where the order of xylosim's saturating adds
    decides ``Vmem`` and so the spikes."""
    rng = np.random.default_rng(2 if big else 11)
    program = random_program(rng, n_in=5, n_hidden=7, n_out=3, big=big)
    events = rng.integers(0, 20, (4, 15, program.n_in)) * (rng.random((4, 15, program.n_in)) < 0.5)
    want, got = xylosim(program, events), simulate(program, events)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    if big:
        assert got["spikes"].max() == 31 and got["vmem"].min() == LOW and got["isyn"].max() > HIGH // 2


def test_emulator_equals_xylosim_on_the_trained_mlp(mlp, digits, xylo):
    _, graph = mlp
    program = map_core(quantize(graph, xylo))
    events = input_events(program, digits.x_test[:12].reshape(12, -1))
    want, got = xylosim(program, events), simulate(program, events)
    assert got["spikes_out"].sum() > 0
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_mlp_refused_naming_every_limit(mlp, xylo):
    _, graph = mlp
    program = map_core(quantize(graph, xylo))
    assert [(v.layer, v.limit, v.value, v.allowed) for v in check_fits(program, xylo)] == [
        (INPUT, "input_channels", 64, 16), (INPUT, "input_events_per_step", 16, 15),
        ("b1_lif", "output_neurons", 10, 8)]
    with pytest.raises(UserError, match=r"^the model does not fit Xylo Audio 2: layer input: needs 64 input "
                       r"channels, over the limit of 16 by 48 \(300%\); reduce the input to at most that many "
                       r"channels \(pool or select features\); input events per channel and step: needs 16, "
                       r"holds 15: encode the input with fewer levels .*; output neurons: needs 10, holds 8: "
                       r"read out at most that many classes, or compile for --target xylo-imu \(Xylo IMU: 16\)$"):
        compile_model(graph, get_target("xylo"), CompileOptions())


def _graph(connections, sizes, output="o", steps=8, levels=15, **population):
    pops = [Population(name, (size,), alpha=0.5, beta=0.875, threshold=1.0, bias=0.0, **population)
            for name, size in sizes]
    return Graph((sizes[0][1] if False else connections[0].weight.shape[1],), pops, connections, output, steps,
                 1e-3, input_levels=levels)


def small_recurrent_graph(rng):
    """16 inputs -> 12 (recurrent) -> 6 -> 4 outputs, fitting Xylo."""
    def w(n, m):
        return rng.normal(0, 0.6, (n, m))

    return _graph([Connection(INPUT, "a", w(12, 16)), Connection("a", "a", w(12, 12) * 0.3),
                   Connection("a", "b", w(6, 12)), Connection("b", "o", w(4, 6))],
                  [("a", 12), ("b", 6), ("o", 4)], reset="subtract")


def test_a_fitting_recurrent_model_compiles_and_maps_as_blocks(xylo):
    rng = np.random.default_rng(0)
    graph = small_recurrent_graph(rng)
    compiled = compile_model(graph, get_target("xylo"), CompileOptions())
    program = compiled.model
    assert [(s.name, s.start, s.size, s.depth) for s in program.slots] == [("a", 0, 12, 0), ("b", 12, 6, 1),
                                                                          ("o", 0, 4, 2)]
    # the hidden matrix holds a->a and a->b blocks only
    nonzero = program.w_rec != 0
    assert nonzero[:12, :12].any() and nonzero[:12, 12:].any() and not nonzero[12:].any()
    assert program.metadata["passes"] == ["quantize(bits=8, headroom=4)", "map()", "drc()"]
    x = rng.integers(0, 16, (5, 16))
    result = get_target("xylo").run(program, x, record=True)
    assert result.output.shape == (5, 4) and set(result.activity) == {INPUT, "a", "b", "o"}
    full = simulate(program, input_events(program, x))
    np.testing.assert_array_equal(result.trains["b"], full["spikes"][:, 1:9, 12:])
    np.testing.assert_array_equal(result.output, full["spikes_out"][:, 2:10].sum(1))


def test_quantize_stays_in_the_chip_widths(xylo):
    program = map_core(quantize(small_recurrent_graph(np.random.default_rng(1)), xylo, bits=6))
    for w in (program.w_in, program.w_rec, program.w_out):
        assert w.min() >= -32 and w.max() <= 31 and np.abs(w).max() >= 16
    assert program.threshold.max() <= 2**15 // 4 and program.threshold.min() >= 1
    assert 0 <= min(program.shift_in, program.shift_rec, program.shift_out)
    assert max(program.shift_in, program.shift_rec, program.shift_out) <= 7


def test_dash_is_rockpools_nearest_time_constant():
    # tau/dt = -1/ln(decay): 0.9 -> 9.49 (log2 3.25 -> 3); 0.97 -> 32.8 (5.04 -> 5); 0 -> the lowest allowed
    assert dash_of(np.array([0.0, 0.5, 0.9, 0.97, 1.0]), 1, 15).tolist() == [1, 1, 3, 5, 15]
    assert dash_of(np.array([0.0, 0.2]), 0, 15).tolist() == [0, 0]


def test_conv_and_unchained_graphs_are_refused(xylo):
    conv = Graph((1, 4, 4), [Population("c", (2, 3, 3), 0.0, 0.9, 1.0, 0.0), Population("o", (2,), 0.0, 0.9, 1.0, 0.0)],
                 [Connection(INPUT, "c", np.ones((2, 1, 2, 2)), kind="conv"), Connection("c", "o", np.ones((2, 18)))],
                 "o", 4, 1e-3)
    with pytest.raises(UserError, match=r"^connection input->c is a convolution; Xylo has no convolutions"):
        compile_model(conv, get_target("xylo"), CompileOptions())
    rng = np.random.default_rng(2)
    skip = _graph([Connection(INPUT, "a", rng.normal(size=(3, 4))), Connection("a", "b", rng.normal(size=(3, 3))),
                   Connection("a", "o", rng.normal(size=(2, 3))), Connection("b", "o", rng.normal(size=(2, 3)))],
                  [("a", 3), ("b", 3), ("o", 2)])
    with pytest.raises(UserError, match=r"^connection a->o skips a layer"):
        quantize(skip, xylo)
    recurrent_out = _graph([Connection(INPUT, "a", np.ones((3, 4))), Connection("a", "o", np.ones((2, 3))),
                            Connection("o", "o", np.ones((2, 2)))], [("a", 3), ("o", 2)])
    with pytest.raises(UserError, match=r"output neurons cannot be recurrent"):
        quantize(recurrent_out, xylo)


def test_cycle_model_is_rockpools_formula(xylo):
    program = random_program(np.random.default_rng(5), n_in=4, n_hidden=6, n_out=3)
    fanout = np.mean(np.count_nonzero(program.w_rec, axis=1))
    # Rockpool cycles_model, worst case (every channel and neuron fires), no isyn2, no aliases
    expected = 4 * (6 * 3.5 + 1) + (fanout * 7 + 3) * 6 + (1 + 3 * 8) * 6 + (19 + 3) * 6 + 12 * 3
    assert cycles_per_step(program, 1.0, 1.0, 1.0, xylo) == pytest.approx(expected)


def test_emulator_equals_xylosim_on_a_recurrent_program(xylo):
    """A recurrent first layer and a second hidden layer: blocks of the one hidden matrix."""
    rng = np.random.default_rng(4)
    program = compile_model(small_recurrent_graph(rng), get_target("xylo"), CompileOptions()).model
    events = input_events(program, rng.integers(0, 16, (6, 16)))
    want, got = xylosim(program, events), simulate(program, events)
    assert got["spikes"][:, :, :12].sum() > 0 and got["spikes"][:, :, 12:].sum() > 0
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_a_held_input_reaches_the_float_steady_current():
    # Xylo: I = a (I + g x) settles at a g x / (1 - a); the float current at x / (1 - alpha)
    for alpha, chip_alpha in ((0.0, 0.5), (0.8, 0.75), (0.5, 0.5)):
        g = float(current_gain(np.array([alpha]), np.array([chip_alpha]))[0])
        current = 0.0
        for _ in range(200):
            current = chip_alpha * (current + g)
        assert current == pytest.approx(1 / (1 - alpha))


def imu_graph(first: int, out: int = 10) -> Graph:
    rng = np.random.default_rng(7)
    def w(n, m):
        return rng.normal(0, 0.5, (n, m))

    return _graph([Connection(INPUT, "a", w(first, 16)), Connection("a", "b", w(150, first)),
                   Connection("b", "o", w(out, 150))], [("a", first), ("b", 150), ("o", out)])


def test_xylo_imu_is_a_second_spec_with_its_own_limits():
    imu = load_chip("xylo_imu")
    program = map_core(quantize(imu_graph(130), imu))
    assert [(v.layer, v.limit, v.value, v.allowed) for v in check_fits(program, imu)] == [
        ("a", "input_expansion_neurons", 130, 128), ("b", "output_expansion_neurons", 150, 128)]
    with pytest.raises(UserError, match=r"^the model does not fit Xylo IMU: layer a: needs 130 hidden neurons "
                       r"taking input \(the first ids\), over the limit of 128 by 2 .*make the first hidden layer "
                       r"at most that wide; hidden neurons read by the outputs \(the last ids\): needs 150, holds 128"):
        compile_model(imu_graph(130), get_target("xylo-imu"), CompileOptions())
    # 10 outputs: over Xylo Audio 2's 8, within the IMU's 16
    assert [v.limit for v in check_fits(map_core(quantize(imu_graph(100), imu)), load_chip("xylo"))] == [
        "output_neurons"]


def test_imu_cycles_count_the_expansion_neurons_and_only_audio2_has_a_published_power(xylo):
    imu = load_chip("xylo_imu")
    program = random_program(np.random.default_rng(5), n_in=4, n_hidden=6, n_out=3)
    program.w_in[:, 3:] = 0  # input reaches hidden 0..2 only
    program.w_out[:2] = 0  # the outputs read hidden 2..5
    fanout = np.mean(np.count_nonzero(program.w_rec, axis=1))
    expected = 4 * (3 * 3.5 + 1) + (fanout * 7 + 3) * 6 + (1 + 3 * 8) * 4 + (19 + 3) * 6 + 12 * 3
    assert cycles_per_step(program, 1.0, 1.0, 1.0, imu) == pytest.approx(expected)
    result = get_target("xylo").run(program, np.ones((2, 4), np.int64))
    audio2, imu_costs = (xylo_costs(program, result.activity, 2, chip) for chip in (xylo, imu))
    assert audio2["energy_per_inference_j"] == pytest.approx(291e-6 * 11 * 1e-3)  # 10 steps + 1 of latency
    assert "arXiv:2406.15112" in audio2["energy_source"] and "energy_per_inference_j" not in imu_costs
