"""export_to_nir for the user's own snnTorch network: the compiled graph spikes as snnTorch does."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from frontends.snntorch_export import export_to_nir, to_nir_graph
from targets import reference
from tests.nir_simulator import simulate
from snn_compile.cli import main
from toolchain.errors import UserError
from toolchain.nir_import import graph_from_nir

STEPS, SAMPLES = 16, 6


def snntorch_trains(net: nn.Sequential, x: torch.Tensor) -> list[np.ndarray]:
    """snnTorch's own spikes per neuron layer, stepping the network as its users do."""
    for module in net.modules():
        if hasattr(module, "reset_hidden"):
            module.reset_hidden()
    trains = {i: [] for i, m in enumerate(net) if isinstance(m, (snn.Leaky, snn.Synaptic, snn.RLeaky,
                                                                  snn.RSynaptic))}
    with torch.no_grad():
        for t in range(x.shape[1]):
            h = x[:, t]
            for i, module in enumerate(net):
                h = module(h)
                h = h[0] if isinstance(h, tuple) else h
                if i in trains:
                    trains[i].append(h)
    return [torch.stack(v, 1).reshape(len(x), x.shape[1], -1).numpy().astype(np.uint8) for v in trains.values()]


def spikes(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand((SAMPLES, STEPS) + shape, generator=generator) < 0.3).float()


def assert_compiled_spikes_like_snntorch(net, x, margin=1e-5):
    net.eval()
    graph = to_nir_graph(net, x[:1, 0], steps=STEPS, input_levels=1)
    margins = {}
    simulate(graph, x.numpy(), graph.metadata["dt"], margins=margins)
    assert min(margins.values()) > margin  # no spike here is decided by float rounding
    imported = graph_from_nir(graph)
    result = reference.run(imported, x.numpy().astype(np.uint8), record=True)
    ours = [result.trains[p.name] for p in imported.populations if not p.name.endswith("_any")]
    theirs = snntorch_trains(net, x)
    assert len(ours) == len(theirs)
    for layer, (mine, expected) in enumerate(zip(ours, theirs)):
        assert expected.sum() > 20, f"layer {layer} hardly fires: the comparison would say little"
        assert np.array_equal(mine, expected), f"layer {layer}: {int((mine != expected).sum())} slots differ"
    return graph


def zero_reset(**kw):
    return {"init_hidden": True, "reset_mechanism": "zero", "reset_delay": False, **kw}


def test_mlp_with_batchnorm_dropout_and_per_neuron_parameters():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 12), nn.BatchNorm1d(12),
                        snn.Leaky(beta=torch.linspace(0.5, 0.9, 12), threshold=torch.linspace(0.8, 1.2, 12),
                                  **zero_reset()),
                        nn.Dropout(0.3), nn.Linear(12, 5, bias=False), snn.Leaky(beta=0.9, **zero_reset()))
    with torch.no_grad():
        net[2].running_mean.uniform_(-0.2, 0.2)
        net[2].running_var.uniform_(0.5, 1.5)
        net[1].weight.mul_(3)
        net[5].weight.mul_(3)
    graph = assert_compiled_spikes_like_snntorch(net, spikes((1, 6, 6), seed=1))
    assert isinstance(graph.nodes["5"], nir.Linear) and isinstance(graph.nodes["1"], nir.Affine)
    assert "2" not in graph.nodes and "4" not in graph.nodes  # BatchNorm folded, Dropout dropped


def test_convolutions_pooling_and_synaptic_readout():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
                        snn.Leaky(beta=torch.full((4, 1, 1), 0.7), **zero_reset()), nn.MaxPool2d(2),
                        nn.Conv2d(4, 4, 3, padding=1, bias=False), snn.Leaky(beta=0.8, **zero_reset()),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 4),
                        snn.Synaptic(alpha=0.5, beta=0.8, **zero_reset()))
    with torch.no_grad():
        net[1].running_var.uniform_(0.5, 1.5)
        for index, factor in ((0, 3.0), (4, 2.0), (8, 5.0)):
            net[index].weight.mul_(factor)
    graph = assert_compiled_spikes_like_snntorch(net, spikes((1, 8, 8), seed=2))
    assert isinstance(graph.nodes["3"], nir.SumPool2d) and isinstance(graph.nodes["3_any"], nir.LIF)
    assert isinstance(graph.nodes["9"], nir.CubaLIF)


def test_recurrent_layers():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(10, 12), snn.RLeaky(beta=0.8, linear_features=12, **zero_reset()),
                        nn.Linear(12, 6), snn.RLeaky(beta=0.8, all_to_all=False, V=torch.linspace(-0.5, 0.5, 6),
                                                     **zero_reset()))
    with torch.no_grad():
        net[0].weight.mul_(2.5)
        net[2].weight.mul_(3.5)
    graph = assert_compiled_spikes_like_snntorch(net, spikes((10,), seed=3))
    assert ("1", "1_recurrent") in graph.edges and ("1_recurrent", "1") in graph.edges
    assert isinstance(graph.nodes["1_recurrent"], nir.Affine)
    np.testing.assert_allclose(np.diag(graph.nodes["3_recurrent"].weight), np.linspace(-0.5, 0.5, 6), atol=1e-7)


def test_recurrent_synaptic_layer_is_a_cubalif_with_an_edge_back():
    """snnTorch 1.0.0's RSynaptic runs only with reset_delay=True (its reset_delay=False path fails),
    whose zero reset departs from NIR (docs/guides/nir_frameworks.md), so its structure is checked here."""
    net = nn.Sequential(nn.Linear(4, 3), snn.RSynaptic(alpha=0.5, beta=torch.tensor([0.6, 0.7, 0.8]),
                                                       linear_features=3, init_hidden=True))
    graph = to_nir_graph(net, torch.zeros(1, 4))
    cuba = graph.nodes["1"]
    assert isinstance(cuba, nir.CubaLIF) and ("1_recurrent", "1") in graph.edges
    np.testing.assert_allclose(cuba.tau_mem, 1e-4 / (1 - np.array([0.6, 0.7, 0.8])))
    np.testing.assert_allclose(cuba.w_in, cuba.tau_syn / 1e-4)
    assert graph.metadata["reset"] == "subtract" and graph.metadata["reset_delay"] is True


def test_subtract_reset_is_kept_and_reproduced():
    """Small weights keep every membrane below threshold after its subtraction, where snnTorch's
    reset_delay=False subtraction is NIR's immediate one (docs/guides/nir_frameworks.md)."""
    torch.manual_seed(3)
    subtract = {"init_hidden": True, "reset_mechanism": "subtract", "reset_delay": False}
    net = nn.Sequential(nn.Linear(10, 12), snn.Leaky(beta=0.9, **subtract), nn.Linear(12, 4),
                        snn.Leaky(beta=0.9, **subtract))
    with torch.no_grad():
        net[0].weight.mul_(0.8)
        net[2].weight.mul_(1.6)
    x = spikes((10,), seed=4)
    graph = assert_compiled_spikes_like_snntorch(net, x)
    assert graph.metadata["reset"] == "subtract" and graph.metadata["reset_delay"] is False
    imported = graph_from_nir(graph)
    result = reference.run(imported, x.numpy().astype(np.uint8), record=True)
    assert all(np.all(result.v[p.name] <= p.threshold) for p in imported.populations)


def test_export_writes_a_file_the_cli_compiles_with_user_data(tmp_path):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 12), snn.Leaky(beta=0.8, **zero_reset()), nn.Linear(12, 3),
                        snn.Leaky(beta=0.9, **zero_reset()))
    path = tmp_path / "model.nir"
    export_to_nir(net, torch.zeros(1, 1, 6, 6), path, steps=8)
    assert nir.read(str(path)).metadata["steps"] == 8
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=(rng.random((40, 1, 6, 6)) < 0.3).astype(np.uint8), y=rng.integers(0, 3, 40))
    assert main([str(path), "--data", str(tmp_path / "data.npz"), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("net,message", [
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), snn.Leaky(beta=0.5, init_hidden=True)),
     r"layer 1 \(ReLU\) cannot be exported to NIR; supported: Linear"),
    (nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.5, init_hidden=True, reset_mechanism="zero"),
                   nn.Linear(4, 2), snn.Leaky(beta=0.5, init_hidden=True)),
     "the neuron layers reset differently"),
    (nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4), snn.Leaky(beta=0.5, init_hidden=True)),
     r"layer 0 \(BatchNorm1d\) cannot be exported: BatchNorm is folded"),
    (nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), "no snnTorch neuron layer"),
    (nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.5, init_hidden=True, inhibition=True)),
     r"layer 1 \(Leaky\) uses inhibition"),
])
def test_what_cannot_be_exported_is_named_in_one_line(net, message, tmp_path):
    with pytest.raises(UserError, match=message) as error:
        export_to_nir(net, torch.zeros(1, 4), tmp_path / "m.nir")
    assert "\n" not in str(error.value) and not (tmp_path / "m.nir").exists()


def test_max_pool_needs_spikes():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), snn.Leaky(beta=0.5, init_hidden=True))
    with pytest.raises(UserError, match=r"layer 1 \(MaxPool2d\) pools what is not binary spikes"):
        to_nir_graph(net, torch.zeros(1, 1, 6, 6))


def test_a_layer_that_does_not_fit_its_input_is_named():
    net = nn.Sequential(nn.Linear(4, 6), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(5, 2),
                        snn.Leaky(beta=0.5, init_hidden=True))
    with pytest.raises(UserError, match=r"layer after 1 \(Linear\) does not take inputs of shape \(6,\)"):
        to_nir_graph(net, torch.zeros(1, 4))
