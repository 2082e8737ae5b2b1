"""NIR graphs from any framework: node types, groups, recurrence, fusion."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from targets import reference
from targets.chips import load_chip
from targets.loihi2 import run
from toolchain.errors import UserError
from toolchain.nir_import import ImportOptions, graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize

rng = np.random.default_rng(0)


def lif(shape, tau=2e-3, threshold=1.0, dt=1e-3):
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / dt), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, threshold))


def test_conv_then_pool_fuses_into_one_exact_convolution():
    kernel = rng.normal(size=(3, 2, 3, 3))
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
             "conv": nir.Conv2d(input_shape=(8, 8), weight=kernel, stride=1, padding=1, dilation=1, groups=1,
                                bias=np.array([0.1, -0.2, 0.3])),
             "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "lif": lif((3, 4, 4)), "output": nir.Output(output_type={"output": np.array([3, 4, 4])})}
    graph = graph_from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "pool"), ("pool", "lif"),
                                                            ("lif", "output")], metadata={"dt": 1e-3, "steps": 4}))
    (conn,) = graph.connections
    x = torch.as_tensor(rng.normal(size=(5, 2, 8, 8)))
    expected = F.avg_pool2d(F.conv2d(x, torch.as_tensor(kernel), padding=1), 2)
    got = F.conv2d(x, torch.as_tensor(conn.weight), stride=conn.stride, padding=conn.padding)
    gain = 1e-3 / 2e-3 * 2.0  # dt/tau * R
    assert torch.allclose(got, expected * gain, atol=1e-9)
    assert np.allclose(graph.populations[0].bias.reshape(3, -1)[:, 0], gain * np.array([0.1, -0.2, 0.3]))


def _foreign_graph():
    """Per-neuron thresholds and taus, a CubaLIF, a recurrent edge, an LI readout, no dt in metadata."""
    n_in, n_hid, n_out = 6, 8, 3
    tau = np.where(np.arange(n_hid) < 4, 2e-3, 4e-3)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "fc1": nir.Affine(weight=rng.normal(size=(n_hid, n_in)), bias=np.zeros(n_hid)),
        "cuba": nir.CubaLIF(tau_syn=np.full(n_hid, 2e-3), tau_mem=tau, r=np.ones(n_hid) * 2, v_leak=np.zeros(n_hid),
                            v_threshold=np.where(np.arange(n_hid) % 2 == 0, 1.0, 1.5)),
        "rec": nir.Linear(weight=rng.normal(size=(n_hid, n_hid)) * 0.3),
        "fc2": nir.Linear(weight=rng.normal(size=(n_out, n_hid))),
        "li": nir.LI(tau=np.full(n_out, 5e-3), r=np.ones(n_out), v_leak=np.zeros(n_out)),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "fc1"), ("fc1", "cuba"), ("cuba", "rec"), ("rec", "cuba"), ("cuba", "fc2"), ("fc2", "li"),
             ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={})


def test_foreign_graph_imports_with_groups_recurrence_and_readout(tmp_path):
    path = tmp_path / "g.nir"
    nir.write(str(path), _foreign_graph())
    graph = graph_from_nir(nir.read(str(path)), ImportOptions(steps=10, dt=1e-3))
    assert graph.metadata["dt_source"] == "option"
    assert [c.recurrent for c in graph.connections] == [False, True, False]
    assert not graph.population("li").spiking
    program = quantize(graph, load_chip("loihi2"), QuantizeOptions(bits=8))
    assert len(program.layer("cuba").groups()) == 4  # 2 taus x 2 thresholds
    assert program.readout == "membrane" and program.layer("cuba").du.max() < 4095
    x = rng.integers(0, 256, size=(64, 6))
    ref, chip = reference.run(graph, x), run(program, x)
    assert np.mean(ref.predictions() == chip.predictions()) > 0.9


def test_missing_steps_is_a_clear_error():
    with pytest.raises(UserError, match="--steps"):
        graph_from_nir(_foreign_graph())


def test_unsupported_node_is_named():
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "delay": nir.Delay(delay=np.ones(4)), "output": nir.Output(output_type={"output": np.array([4])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "delay"), ("delay", "output")], type_check=False)
    with pytest.raises(UserError, match="'delay' of type Delay is not supported"):
        graph_from_nir(graph, ImportOptions(steps=4))
