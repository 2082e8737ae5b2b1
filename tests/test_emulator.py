"""The vectorised emulator (and the stepped chip) against the plain per-neuron reference, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targets.loihi2.chip import Chip, run_samples
from targets.loihi2.emulator import NEURON_PATHS, run
from tests.loihi_reference import run_dense_chain
from toolchain.ir import INPUT
from toolchain.program import Layer, Program, Synapses


@st.composite
def chains(draw):
    """Random 1-2 layer dense programs whose values reach the 24-bit wrap and the v clip."""
    steps = draw(st.integers(1, 6))
    n_in = draw(st.integers(1, 5))
    samples = draw(st.integers(1, 3))
    levels = draw(st.sampled_from([1, 15, 255]))
    inputs = draw(st.lists(st.lists(st.lists(st.integers(0, levels), min_size=n_in, max_size=n_in),
                                    min_size=steps, max_size=steps), min_size=samples, max_size=samples))
    layers, size = [], n_in
    for depth in range(draw(st.integers(1, 2))):
        n = draw(st.integers(1, 4))
        weight = st.integers(-300, 300)
        layer = {
            "weights": draw(st.lists(st.lists(weight, min_size=size, max_size=size), min_size=n, max_size=n)),
            "weight_exp": draw(st.integers(-8, 7)), "bits": draw(st.integers(1, 8)),
            "du": draw(st.sampled_from([0, 1, 2047, 4094, 4095]) | st.integers(0, 4095)),
            "dv": draw(st.sampled_from([0, 1, 2048, 4095]) | st.integers(0, 4095)),
            "vth": draw(st.sampled_from([0, 1, 2**17 - 1]) | st.integers(0, 2**17 - 1)),
            "bias_mant": draw(st.lists(st.integers(-4096, 4095), min_size=n, max_size=n)),
            "bias_exp": draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)),
            "reset": draw(st.sampled_from(["zero", "subtract"])),
        }
        if draw(st.booleans()):
            layer["current_bias"] = draw(st.lists(st.sampled_from([-256, -255, -1, 0, 1, 255]) | weight,
                                                  min_size=n, max_size=n).map(lambda b: [min(max(w, -256), 255)
                                                                                         for w in b]))
            layer["current_bias_exp"] = draw(st.integers(-8, 7))
        if draw(st.booleans()):
            layer["recurrent"] = draw(st.lists(st.lists(weight, min_size=n, max_size=n), min_size=n, max_size=n))
            layer["recurrent_exp"] = draw(st.integers(-8, 7))
        layers.append(layer)
        size = n
    return layers, inputs, levels


def to_program(layers, n_in, steps, levels) -> Program:
    prog_layers, synapses, source = [], [], INPUT
    for i, spec in enumerate(layers):
        name, n = f"l{i}", len(spec["weights"])
        prog_layers.append(Layer(name=name, shape=(n,), du=spec["du"], dv=spec["dv"], vth=spec["vth"],
                                 bias_mant=spec["bias_mant"], bias_exp=spec["bias_exp"], v_scale=1.0,
                                 reset=spec.get("reset", "zero"), current_bias_mant=spec.get("current_bias", 0),
                                 current_bias_exp=spec.get("current_bias_exp", 0)))
        bits = 8 if levels > 1 else 0
        synapses.append(Synapses(source, name, np.array(spec["weights"]), np.full(n, spec["weight_exp"]),
                                 spec["bits"], message_bits=bits if source == INPUT else 0))
        if "recurrent" in spec:
            synapses.append(Synapses(name, name, np.array(spec["recurrent"]), np.full(n, spec["recurrent_exp"]),
                                     spec["bits"]))
        source = name
    return Program(chip="loihi2", input_shape=(n_in,), input_levels=levels, steps=steps, layers=prog_layers,
                   synapses=synapses, output=source)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_emulator_equals_per_neuron_reference(case):
    layers, inputs, levels = case
    steps, n_in = len(inputs[0]), len(inputs[0][0])
    program = to_program(layers, n_in, steps, levels)
    expected = run_dense_chain(layers, inputs)
    for neurons in NEURON_PATHS:  # the compiled kernel and the torch steps, each against the reference
        result = run(program, np.array(inputs), record=True, neurons=neurons)
        for i in range(len(layers)):
            name = f"l{i}"
            for s, sample in enumerate(expected):
                spikes, us, vs = sample[i]
                assert result.trains[name][s].tolist() == spikes, neurons
                assert result.u[name][s].tolist() == us, neurons
                assert result.v[name][s].tolist() == vs, neurons


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
