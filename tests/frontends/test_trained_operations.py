"""Operation counts of the model as trained: NeuroBench 2.3's definitions, by hand on a tiny conv+pool
network, against NeuroBench itself on the digits MLP and CSNN, and against the compiled counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frontends.models import SpikingNetwork
from frontends.nir_export import to_nir
from frontends.trained_operations import count_trained_operations, totals
from targets.registry import get_target
from toolchain.nir_import import graph_from_nir
from toolchain.operations import count_operations
from toolchain.operations import totals as compiled_totals

STEPS, LEVELS = 3, 16
SAMPLES = 200


def tiny_conv_pool() -> SpikingNetwork:
    """(1, 4, 4) -> 3x3 conv (padding 1, tap (0, 0) pruned, bias 10 so all four pooled neurons fire
    every step) -> 2x2 average pool -> Linear(4 -> 2) with two of its eight weights zero."""
    config = {"arch": "csnn", "channels": [1], "kernel": 3, "padding": 1, "batchnorm": False, "pool": 2,
              "beta": 0.5, "threshold": 1.0}
    model = SpikingNetwork(config, (1, 4, 4), classes=2, steps=STEPS)
    conv, linear = model.blocks[0].synapse[0], model.blocks[1].synapse[1]
    with torch.no_grad():
        conv.weight.fill_(0.1)
        conv.weight[0, 0, 0, 0] = 0.0
        conv.bias.fill_(10.0)
        linear.weight.fill_(0.5)
        linear.weight[0, 1] = linear.weight[1, 2] = 0.0
    return model


def one_pixel(value: int) -> np.ndarray:
    """One image whose only nonzero pixel is the top-left corner."""
    x = np.zeros((1, 1, 4, 4), dtype=np.int64)
    x[0, 0, 0, 0] = value
    return x


def test_a_graded_pixel_counts_macs_through_the_full_resolution_convolution():
    first, second = count_trained_operations(tiny_conv_pool(), one_pixel(8), LEVELS)
    # The corner pixel reaches output positions (0,0), (0,1), (1,0), (1,1) through taps (1,1), (1,0),
    # (0,1), (0,0); tap (0,0) is zero: 3 MACs a step. Dense: in-bounds taps per axis 2+3+3+2 = 10.
    assert (first.layer, first.effective_acs, first.effective_macs, first.dense) == ("b0_lif", 0, 3 * STEPS,
                                                                                     10 * 10 * STEPS)
    # Four pooled neurons fire every step into six nonzero weights; dense 4 x 2 a step.
    assert (second.layer, second.effective_acs, second.effective_macs, second.dense) == ("b1_lif", 6 * STEPS, 0,
                                                                                         8 * STEPS)
    assert totals([first, second]) == {"Effective_ACs": 18.0, "Effective_MACs": 9.0, "Dense": 324.0}


def test_an_input_of_zeros_and_ones_counts_acs_as_neurobench_does():
    first, _ = count_trained_operations(tiny_conv_pool(), one_pixel(LEVELS), LEVELS)
    assert (first.effective_acs, first.effective_macs) == (3 * STEPS, 0)


def test_the_compiled_counts_of_the_same_network_reach_only_the_pooled_target():
    model = tiny_conv_pool()
    graph = graph_from_nir(to_nir(model, input_levels=LEVELS))
    run = get_target("reference").run(graph, one_pixel(8))
    first, second = count_operations(graph, run.activity, run.samples, graph.steps)
    # Pooling folded into a 4x4 stride-2 kernel: the corner pixel is one synapse of pooled neuron (0,0).
    assert (first.macs, second.acs) == (1 * STEPS, 6 * STEPS)


def test_layers_are_named_as_the_compiled_graph_names_them(csnn, digits):
    model, graph = csnn
    counted = count_trained_operations(model, digits.x_test[:2], digits.levels)
    assert [o.layer for o in counted] == [p.name for p in graph.populations]


@pytest.mark.parametrize("arch", ["mlp", "csnn"])
def test_the_counts_are_neurobench_synaptic_operations(arch, request, digits):
    pytest.importorskip("neurobench", reason="neurobench not installed (pip install --no-deps neurobench==2.3.0)")
    from neurobench.metrics.workload import SynapticOperations
    from neurobench.models import SNNTorchModel

    model, _ = request.getfixturevalue(arch)
    x = digits.x_test[:SAMPLES]
    ours = totals(count_trained_operations(model, x, digits.levels, batch_size=64))
    wrapped, metric = SNNTorchModel(model, custom_forward=True), SynapticOperations()
    wrapped.register_hooks()
    try:
        for start in range(0, SAMPLES, 64):
            frames = torch.as_tensor(x[start:start + 64], dtype=torch.float32) / digits.levels
            batch = frames.unsqueeze(1).expand(-1, model.steps, *frames.shape[1:])  # (batch, steps, ...)
            wrapped.reset_hooks()
            with torch.no_grad():
                theirs = metric(wrapped, wrapped(batch), (batch, None))
    finally:
        wrapped.cleanup_hooks()
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert ours["Effective_ACs"] > 0 and ours["Effective_MACs"] > 0


def test_without_pooling_the_as_trained_counts_are_the_compiled_counts(mlp, digits):
    model, graph = mlp
    x = digits.x_test[:SAMPLES]
    run = get_target("reference").run(graph, x)
    compiled = compiled_totals(count_operations(graph, run.activity, run.samples, graph.steps))
    trained = totals(count_trained_operations(model, x, digits.levels))
    assert trained == {"Effective_ACs": compiled["acs"], "Effective_MACs": compiled["macs"],
                       "Dense": compiled["dense_acs"] + compiled["dense_macs"]}


def test_counting_leaves_the_model_in_training_mode_and_without_hooks(mlp, digits):
    model, _ = mlp
    was_training = model.training
    model.train()
    try:
        count_trained_operations(model, digits.x_test[:2], digits.levels)
        assert model.training
        assert all(not layer._forward_pre_hooks for layer in model.modules())
    finally:
        model.train(was_training)
