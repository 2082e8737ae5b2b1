"""The float reference agrees with an independent NIR simulator on generated graphs.

tests/nir_simulator.py shares no code with the importer or the reference,
so agreement on graphs mixing Affine/Linear (with and without bias), LIF,
CubaLIF, IF, LI, Conv2d, pooling and recurrence checks our discretisation
of NIR's equations, not one implementation against itself.
"""

from __future__ import annotations

import nir
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from targets import reference
from tests.nir_simulator import simulate
from toolchain.nir_import import ImportOptions, graph_from_nir

DT = 1e-3
SAMPLES, STEPS = 3, 12
MARGIN = 1e-4
"""Where the simulator's membrane came this close to a threshold, float32 rounding may flip a spike."""


def values(data, shape, low, high):
    return data.rng.uniform(low, high, shape).astype(np.float32)


def neuron(data, kind, shape):
    """One neuron node of ``kind`` with per-neuron parameters (or one shared value)."""
    per_neuron = data.draw(st.booleans())

    def param(low, high):
        drawn = values(data, shape if per_neuron else (1,), low, high)
        return np.broadcast_to(drawn, shape).astype(np.float32).copy()
    threshold = param(0.5, 1.5)
    if kind == "IF":
        return nir.IF(r=param(0.5, 2.0), v_threshold=threshold)
    tau = param(2 * DT, 20 * DT)
    leak = param(-0.3, 0.3) if data.draw(st.booleans()) else np.zeros(shape, np.float32)
    if kind == "LIF":
        return nir.LIF(tau=tau, r=param(0.5, 2.0), v_leak=leak, v_threshold=threshold)
    if kind == "LI":
        return nir.LI(tau=tau, r=param(0.5, 2.0), v_leak=leak)
    return nir.CubaLIF(tau_syn=param(2 * DT, 20 * DT), tau_mem=tau, r=param(0.5, 2.0), v_leak=leak,
                       v_threshold=threshold, w_in=param(0.5, 2.0))


def dense(data, n_in, n_out, gain):
    weight = values(data, (n_out, n_in), -gain, gain)
    if data.draw(st.booleans()):
        return nir.Affine(weight=weight, bias=values(data, (n_out,), -0.3, 0.3))
    return nir.Linear(weight=weight)


@st.composite
def graphs(draw):
    """Input -> [Conv2d (+ pool) -> neurons ->] pool? -> Flatten -> dense -> neurons (recurrent?)
    -> dense -> readout neurons -> Output."""
    nodes, edges = {}, []
    convolutional = draw(st.booleans())
    previous = "input"

    def add(name, node):
        nonlocal previous
        nodes[name] = node
        edges.append((previous, name))
        previous = name
    drawer = _Drawer(draw)
    if convolutional:
        channels, size = draw(st.integers(1, 2)), 6
        nodes["input"] = nir.Input(input_type={"input": np.array([channels, size, size])})
        out_channels, padding = draw(st.integers(1, 3)), draw(st.integers(0, 1))
        bias = values(drawer, (out_channels,), -0.3, 0.3) if draw(st.booleans()) else np.zeros(out_channels,
                                                                                              np.float32)
        add("conv", nir.Conv2d(input_shape=(size, size), weight=values(drawer, (out_channels, channels, 3, 3),
                                                                       -1.2, 1.2),
                               stride=1, padding=padding, dilation=1, groups=1, bias=bias))
        size = size - 2 + 2 * padding
        pool = draw(st.sampled_from([None, nir.SumPool2d, nir.AvgPool2d]))
        if pool is not None and size % 2 == 0:
            add("pool", pool(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])))
            size //= 2
        shape = (out_channels, size, size)
        add("conv_neurons", neuron(drawer, draw(st.sampled_from(["LIF", "CubaLIF", "IF"])), shape))
        if size % 2 == 0 and draw(st.booleans()):
            add("spike_pool", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                            padding=np.array([0, 0])))
            shape = (out_channels, size // 2, size // 2)
        add("flatten", nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
        width = int(np.prod(shape))
    else:
        width = draw(st.integers(2, 6))
        nodes["input"] = nir.Input(input_type={"input": np.array([width])})
    hidden = draw(st.integers(2, 6))
    add("hidden_in", dense(drawer, width, hidden, 1.5))
    kind = draw(st.sampled_from(["LIF", "CubaLIF", "IF"]))
    add("hidden", neuron(drawer, kind, (hidden,)))
    if draw(st.booleans()):
        nodes["recurrent"] = dense(drawer, hidden, hidden, 0.8)
        edges += [("hidden", "recurrent"), ("recurrent", "hidden")]
    outputs = draw(st.integers(1, 3))
    add("readout_in", dense(drawer, hidden, outputs, 1.5))
    add("readout", neuron(drawer, draw(st.sampled_from(["LIF", "CubaLIF", "IF", "LI"])), (outputs,)))
    add("output", nir.Output(output_type={"output": np.array([outputs])}))
    input_shape = tuple(nodes["input"].input_type["input"])
    x = drawer.rng.random((SAMPLES, STEPS) + input_shape) < draw(st.floats(0.1, 0.6))
    return nir.NIRGraph(nodes=nodes, edges=edges), x.astype(np.uint8)


class _Drawer:
    """The structure comes from hypothesis (``draw``), the parameter values from a seeded generator."""

    def __init__(self, draw):
        self.draw = draw
        self.rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(graphs())
def test_reference_agrees_with_the_independent_simulator(case):
    graph, x = case
    margins = {}
    expected = simulate(graph, x.astype(np.float64), DT, margins=margins)
    assume(min(margins.values(), default=np.inf) >= MARGIN)  # else float rounding decides a spike
    assert_reference_matches(graph, x, expected, ImportOptions(steps=STEPS, dt=DT, input_levels=1))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(graphs())
def test_nir_convention_steps_if_literally(case):
    """``framework="nir"`` reads IF's dv/dt = R I as v <- v + dt R I, as the simulator's "euler"."""
    graph, x = case
    margins = {}
    expected = simulate(graph, x.astype(np.float64), DT, if_discretisation="euler", margins=margins)
    assume(min(margins.values(), default=np.inf) >= MARGIN)
    assert_reference_matches(graph, x, expected, ImportOptions(steps=STEPS, dt=DT, input_levels=1,
                                                               framework="nir"))


def assert_reference_matches(graph, x, expected, options):
    """Spikes exactly; a non-spiking readout's membrane to 1e-5."""
    imported = graph_from_nir(graph, options)
    result = reference.run(imported, x, record=True)
    assert [p.name for p in imported.populations] == [n for n in expected if n.endswith(("neurons", "hidden",
                                                                                          "readout"))]
    for population in imported.populations:
        want = expected[population.name].reshape(SAMPLES, STEPS, -1)
        if population.spiking:
            assert np.array_equal(result.trains[population.name], want), population.name
        else:
            np.testing.assert_allclose(result.v[population.name], want, atol=1e-5, rtol=1e-5)
