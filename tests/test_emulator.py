"""The vectorised emulator against the plain per-neuron reference, bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from targets.loihi2.emulator import run
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
        }
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
                                 bias_mant=spec["bias_mant"], bias_exp=spec["bias_exp"], v_scale=1.0))
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
    result = run(program, np.array(inputs), record=True)
    expected = run_dense_chain(layers, inputs)
    for i in range(len(layers)):
        name = f"l{i}"
        for s, sample in enumerate(expected):
            spikes, us, vs = sample[i]
            assert result.trains[name][s].tolist() == spikes
            assert result.u[name][s].tolist() == us
            assert result.v[name][s].tolist() == vs


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
