"""The prune pass: structure really removed, zeros really zero, bad ratios refused."""

from __future__ import annotations

import numpy as np
import pytest

from targets import reference
from toolchain.errors import UserError
from toolchain.passes.prune import PruneOptions, prune
from toolchain.passes.quantize import QuantizeOptions, quantize


def calibration_rates(graph, x):
    result = reference.run(graph, x)
    return {k: v.spike_counts / (len(x) * graph.steps) for k, v in result.activity.items()}


def test_structured_pruning_shrinks_the_program(csnn, digits, loihi2):
    _, graph = csnn
    pruned = prune(graph, PruneOptions(0.25, "structured", "l1"))
    assert [p.shape for p in pruned.populations] == [(12, 4, 4), (24, 2, 2), (10,)]
    before, after = quantize(graph, loihi2, QuantizeOptions(8)), quantize(pruned, loihi2, QuantizeOptions(8))
    assert sum(layer.size for layer in after.layers) < sum(layer.size for layer in before.layers)
    assert sum(s.weights.size for s in after.synapses) < 0.7 * sum(s.weights.size for s in before.synapses)
    # the kept channels are the ones with the largest incoming L1 norm
    first = graph.connections[0].weight
    norms = np.abs(first).reshape(first.shape[0], -1).sum(1)
    kept = np.sort(np.argsort(norms)[4:])
    assert np.allclose(pruned.connections[0].weight, first[kept])


def test_activity_ranking_with_compensation_beats_plain_l1(csnn, digits):
    _, graph = csnn
    rates = calibration_rates(graph, digits.x_train[:300])
    accuracy = lambda g: np.mean(reference.run(g, digits.x_test).predictions() == digits.y_test)  # noqa: E731
    compensated = accuracy(prune(graph, PruneOptions(0.2, "structured", "activity"), rates))
    plain = accuracy(prune(graph, PruneOptions(0.2, "structured", "l1")))
    assert compensated >= plain


@pytest.mark.parametrize("method", ["magnitude", "global-magnitude"])
def test_unstructured_pruning_zeroes_the_requested_share(mlp, method):
    _, graph = mlp
    pruned = prune(graph, PruneOptions(0.4, method))
    zeros = sum(int((c.weight == 0).sum()) for c in pruned.connections)
    total = sum(c.weight.size for c in pruned.connections)
    assert 0.39 <= zeros / total <= 0.42
    assert [p.shape for p in pruned.populations] == [p.shape for p in graph.populations]


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_out_of_range(mlp, ratio):
    with pytest.raises(UserError, match="out of range"):
        prune(mlp[1], PruneOptions(ratio))


def test_ratio_that_removes_a_whole_layer(mlp):
    _, graph = mlp
    with pytest.raises(UserError, match="remove every unit"):
        prune(graph, PruneOptions(0.999, "structured"))
