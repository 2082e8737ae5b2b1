"""The vectorised emulator (and the stepped chip) against the plain per-neuron reference, bit for bit."""

from __future__ import annotations

from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targets.loihi2.chip import Chip, run_samples
from targets.loihi2 import emulator
from targets.loihi2.emulator import run
from tests.builders import chains, conv_program, to_program
from tests.loihi_reference import run_dense_chain
from toolchain.ir import INPUT


PATHS = (("kernel", "sums"), ("kernel", "events"), ("torch", None))
"""(neurons, how the kernel forms its sums): after one matrix product, or event by event."""


def path_taken(path):
    """Force the kernel's choice between its matrix-product and event-driven sums."""
    return mock.patch.object(emulator, "EVENT_WORK", float("inf") if path[1] == "events" else -1.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_emulator_equals_per_neuron_reference(case):
    layers, inputs, levels = case
    steps, n_in = len(inputs[0]), len(inputs[0][0])
    program = to_program(layers, n_in, steps, levels)
    expected = run_dense_chain(layers, inputs)
    for path in PATHS:  # the compiled kernels and the torch steps, each against the reference
        with path_taken(path):
            result = run(program, np.array(inputs), record=True, neurons=path[0])
        for i in range(len(layers)):
            name = f"l{i}"
            for s, sample in enumerate(expected):
                spikes, us, vs = sample[i]
                assert result.trains[name][s].tolist() == spikes, path
                assert result.u[name][s].tolist() == us, path
                assert result.v[name][s].tolist() == vs, path


def test_large_input_wraps_current_and_clips_voltage():
    """A single huge input: u wraps past 2^23 once, v saturates at 2^23 - 1."""
    layers = [{"weights": [[255, 255]], "weight_exp": 4, "bits": 8, "du": 4095, "dv": 0, "vth": 2**17 - 1,
               "bias_mant": [0], "bias_exp": [0]}]
    program = to_program(layers, 2, 2, 255)
    result = run(program, np.array([[[255, 255], [100, 0]]]), record=True)
    expected = run_dense_chain(layers, [[[255, 255], [100, 0]]])[0][0]
    a_in = (255 * 255 * 2) << 4
    wrapped = ((a_in << 6) + 2**31) % 2**32 - 2**31
    assert result.u["l0"][0, 0, 0] == expected[1][0][0]
    assert result.u["l0"][0, 0, 0] == (wrapped - 2**24 if wrapped > 2**23 else wrapped)
    assert abs(int(result.v["l0"][0].max())) <= 2**23 - 1
    assert result.v["l0"][0].tolist() == expected[2]


def _single(weights, weight_exp, inputs, du=4095, dv=0, vth=2**17 - 1):
    layers = [{"weights": weights, "weight_exp": weight_exp, "bits": 8, "du": du, "dv": dv, "vth": vth,
               "bias_mant": [0], "bias_exp": [0]}]
    program = to_program(layers, len(weights[0]), len(inputs), 255)
    return run(program, np.array([inputs]), record=True)


def test_current_of_exactly_two_to_the_23_is_not_wrapped():
    """Lava wraps u only when it exceeds 2^23 (strict): 128 * 8 << 7 << 6 == 2^23 stays."""
    result = _single([[128]], 7, [[8]])
    assert result.u["l0"][0, 0, 0] == 2**23
    assert result.trains["l0"][0, 0, 0] == 1  # v saturated at 2^23 - 1 > vth << 6, so it fired


def test_current_one_above_wraps_negative():
    result = _single([[128, 2]], 7, [[8, 1]])  # a_in << 6 = 2^23 + 2^14
    assert result.u["l0"][0, 0, 0] == 2**23 + 2**14 - 2**24


def test_int32_overflow_of_shifted_input_is_kept_as_lava_does():
    """5 * 255 * 255 << 7 << 6 overflows int32; Lava's single 24-bit wrap then leaves u out of range."""
    result = _single([[255] * 5], 7, [[255] * 5])
    shifted = (5 * 255 * 255 << 7) << 6
    as_int32 = (shifted + 2**31) % 2**32 - 2**31
    assert as_int32 < -(2**23)
    assert result.u["l0"][0, 0, 0] == as_int32 + 2**24


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_stepped_chip_equals_per_neuron_reference(case):
    """The board model steps the same arithmetic one chip step at a time, pipeline delays included."""
    layers, inputs, levels = case
    steps, n_in = len(inputs[0]), len(inputs[0][0])
    program = to_program(layers, n_in, steps, levels)
    _, traces = run_samples(Chip(program), np.array(inputs), probe=True)
    expected = run_dense_chain(layers, inputs)
    for i in range(len(layers)):
        for s, sample in enumerate(expected):
            spikes, us, vs = sample[i]
            assert traces[f"l{i}"]["spikes"][s].tolist() == spikes
            assert traces[f"l{i}"]["u"][s].tolist() == us
            assert traces[f"l{i}"]["v"][s].tolist() == vs


def _one_neuron(vth, inputs, weight=255, weight_exp=7, current_bias=None, current_bias_exp=0, du=4095):
    """One subtract-reset neuron: (emulator result, the reference's spikes, u, v of neuron 0 per step)."""
    layer = {"weights": [[weight]], "weight_exp": weight_exp, "bits": 8, "du": du, "dv": 0, "vth": vth,
             "bias_mant": [0], "bias_exp": [0], "reset": "subtract"}
    if current_bias is not None:
        layer.update(current_bias=[current_bias], current_bias_exp=current_bias_exp)
    steps = [[x] for x in inputs]
    result = run(to_program([layer], 1, len(inputs), 255), np.array([steps]), record=True)
    spikes, us, vs = run_dense_chain([layer], [steps])[0][0]
    return result, ([s[0] for s in spikes], [u[0] for u in us], [v[0] for v in vs])


def test_subtract_reset_from_saturated_voltage_is_exact():
    """v clips at 2^23 - 1, fires and keeps v - (vth << 6): integer-exact at the saturation corner."""
    result, (spikes, _, vs) = _one_neuron(vth=2**17 - 1, inputs=[255, 255, 0])
    assert result.v["l0"][0, :, 0].tolist() == vs
    assert vs[0] == 2**23 - 1 - ((2**17 - 1) << 6) == 63 and spikes[0] == 1


def test_subtract_reset_with_zero_threshold_keeps_firing():
    """vth = 0 subtracts nothing: a neuron above 0 fires every step (v > 0 stays true)."""
    result, (spikes, _, vs) = _one_neuron(vth=0, inputs=[1, 0, 0, 0], weight=3, weight_exp=0)
    assert result.trains["l0"][0, :, 0].tolist() == spikes == [1, 1, 1, 1]
    assert result.v["l0"][0, :, 0].tolist() == vs == [192, 192, 192, 192]


def test_current_bias_is_an_always_on_synapse():
    """A current bias enters u every step as a_in << 6, held and shifted like an 8-bit weight:
    255 << 7 accumulated with the slowest decay wraps u past 2^23 on the fifth step; -3 with exponent -1
    floors to -2."""
    result, (_, us, _) = _one_neuron(vth=2**17 - 1, inputs=[0] * 5, weight=0, current_bias=255, current_bias_exp=7,
                                     du=0)
    assert result.u["l0"][0, :, 0].tolist() == us
    assert us[0] == 255 * 2**7 * 2**6 and us[3] > 0 > us[4]  # the fifth step wrapped
    result, (_, us, _) = _one_neuron(vth=10, inputs=[0] * 3, weight=0, current_bias=-3, current_bias_exp=-1)
    assert result.u["l0"][0, :, 0].tolist() == us == [-128, -128, -128]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_kernel_equals_torch_steps_on_conv_programs(seed, held, exact):
    """The kernel path multiplies small convolutions as dense matrices and computes a held input's
    sums once per sample; the torch path convolves every step: the same integers."""
    program = conv_program(seed, exact=exact)
    rng = np.random.default_rng(seed)
    shape = (3,) + ((() if held else (program.steps,)) + program.input_shape)
    x = rng.integers(0, 16, shape)
    torch_steps = run(program, x, record=True, neurons="torch")
    for path in PATHS[:2]:
        with path_taken(path):
            kernel = run(program, x, record=True)
        _assert_same_run(kernel, torch_steps)
    if held:  # a held input is the same as that input repeated at every step
        repeated = run(program, np.repeat(x[:, None], program.steps, axis=1), record=True)
        for name in ("c1", "c2", "out"):
            assert np.array_equal(kernel.u[name], repeated.u[name])
        assert np.array_equal(kernel.activity[INPUT].spikes_per_step, repeated.activity[INPUT].spikes_per_step)


def _assert_same_run(kernel, torch_steps):
    for name in ("c1", "c2", "out"):
        assert np.array_equal(kernel.trains[name], torch_steps.trains[name])
        assert np.array_equal(kernel.u[name], torch_steps.u[name])
        assert np.array_equal(kernel.v[name], torch_steps.v[name])
        assert np.array_equal(kernel.activity[name].spike_counts, torch_steps.activity[name].spike_counts)
        assert np.array_equal(kernel.activity[name].spikes_per_step, torch_steps.activity[name].spikes_per_step)
    assert np.array_equal(kernel.output, torch_steps.output)
    assert np.array_equal(kernel.activity[INPUT].spike_counts, torch_steps.activity[INPUT].spike_counts)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 7), st.integers(1, 3), st.integers(1, 2),
       st.integers(0, 2), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_conv_as_dense_and_fan_out_give_the_convolution_sums(c_in, c_out, side, kernel, stride, padding, seed):
    """Both matrices a convolution runs as: the matrix product's (outputs, inputs) and the event
    path's (inputs, outputs)."""
    import torch
    import torch.nn.functional as F

    from targets.loihi2.emulator import conv_as_dense
    from targets.loihi2.kernel import conv_fan_out

    kernel = min(kernel, side + 2 * padding)
    rng = np.random.default_rng(seed)
    weight = torch.as_tensor(rng.integers(-256, 256, (c_out, c_in, kernel, kernel)), dtype=torch.float64)
    x = torch.as_tensor(rng.integers(0, 2, (4, c_in, side, side)), dtype=torch.float64)
    expected = F.conv2d(x, weight, stride=stride, padding=padding).reshape(4, -1)
    dense = conv_as_dense(weight, (c_in, side, side), (stride, stride), (padding, padding))
    assert torch.equal(x.reshape(4, -1) @ dense.T, expected)
    out_side = (side + 2 * padding - kernel) // stride + 1
    fan_out = np.zeros((c_in * side * side, c_out * out_side**2), dtype=np.int32)
    conv_fan_out(weight.to(torch.int32).numpy(), side, side, out_side, out_side, stride, stride, padding, padding,
                 fan_out)
    assert np.array_equal(x.reshape(4, -1).numpy() @ fan_out, expected.numpy())


def test_batches_shrink_to_the_memory_bound_with_the_same_results(monkeypatch):
    from targets.loihi2 import emulator

    program = conv_program(3)
    x = np.random.default_rng(3).integers(0, 16, (7,) + program.input_shape)
    whole = run(program, x, record=True)
    per_sample = program.steps * sum(layer.size for layer in program.layers) * (
        emulator.BYTES_PER_NEURON_STEP + emulator.RECORD_BYTES_PER_NEURON_STEP)
    monkeypatch.setattr(emulator, "BATCH_MEMORY", 2 * per_sample)
    sizes = []
    original = emulator._run_batch
    monkeypatch.setattr(emulator, "_run_batch", lambda program, compiled, x, *rest: sizes.append(len(x))
                        or original(program, compiled, x, *rest))
    split = run(program, x, record=True)
    assert sizes == [2, 2, 2, 1]
    for name in ("c1", "c2", "out"):
        assert np.array_equal(whole.trains[name], split.trains[name])
        assert np.array_equal(whole.v[name], split.v[name])
    assert np.array_equal(whole.output, split.output)


def test_a_program_edited_in_place_runs_with_its_new_contents():
    """Prepared layers are reused across runs only while the program's arrays are unchanged."""
    import copy

    program = conv_program(4)
    x = np.random.default_rng(0).integers(0, 16, (3,) + program.input_shape)
    before = run(program, x, record=True)
    assert np.array_equal(run(program, x, record=True).u["c2"], before.u["c2"])
    for syn in program.synapses:
        syn.weights[...] = np.random.default_rng(1).integers(-128, 128, syn.weights.shape)
    program.layers[1].vth[...] = 7
    after, expected = run(program, x, record=True), run(copy.deepcopy(program), x, record=True)
    assert not np.array_equal(after.u["c2"], before.u["c2"])
    for name in ("c1", "c2", "out"):
        assert np.array_equal(after.u[name], expected.u[name])
        assert np.array_equal(after.trains[name], expected.trains[name])
