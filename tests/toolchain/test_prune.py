"""The prune pass: structure really removed, zeros really zero, bad ratios refused."""

from __future__ import annotations

import numpy as np
import pytest

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from targets import reference
from toolchain.calibration import calibrate
from toolchain.errors import UserError
from toolchain.ir import INPUT, Connection, Graph, Population
from toolchain.passes.prune import Calibration, GramAccumulator, PruneOptions, prune
from toolchain.passes.prune_search import greedy_prune
from toolchain.passes.quantize import QuantizeOptions, quantize
from toolchain.synaptic import accumulate


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
    calibration = calibrate(graph, digits.x_train[:300], gram=True)
    accuracy = lambda g: np.mean(reference.run(g, digits.x_test).predictions() == digits.y_test)  # noqa: E731
    plain = accuracy(prune(graph, PruneOptions(0.3, "structured", "l1")))
    compensated = accuracy(prune(graph, PruneOptions(0.3, "structured", "activity", "mean"), calibration))
    regression = accuracy(prune(graph, PruneOptions(0.3, "structured", "activity", "regression"), calibration))
    assert regression >= compensated >= plain


def conv_chain(rng):
    """input (1, 6, 6) -> conv a (4, 4, 4) -> conv b (4, 2, 2; stride 2, padding 1) -> dense out (2)."""
    pop = lambda name, shape: Population(name, shape, 0.0, 0.9, 1.0, 0.0)  # noqa: E731
    return Graph((1, 6, 6), [pop("a", (4, 4, 4)), pop("b", (4, 2, 2)), pop("out", (2,))],
                 [Connection(INPUT, "a", rng.normal(size=(4, 1, 3, 3)), "conv"),
                  Connection("a", "b", rng.normal(size=(4, 4, 3, 3)), "conv", (2, 2), (1, 1)),
                  Connection("b", "out", rng.normal(size=(2, 16)))], "out", 4, 1e-3)


def test_mean_compensation_keeps_the_mean_drive_of_every_neuron_borders_included():
    """At the calibration means, pruned weights plus folded bias give exactly the original drive."""
    rng = np.random.default_rng(3)
    graph = conv_chain(rng)
    rates = {"a": rng.uniform(0, 1, 64), "b": rng.uniform(0, 1, 16)}
    pruned = prune(graph, PruneOptions(0.5, "structured", "activity", "mean"), Calibration(rates))
    kept_a, kept_b = (np.sort(np.argsort(rates[n].reshape(4, -1).sum(1))[2:]) for n in ("a", "b"))
    conn = graph.connections[1]

    def drive(weight, x, channels):
        return accumulate("conv", torch.as_tensor(weight), torch.as_tensor(x[None]), (channels, 4, 4), conn.stride,
                          conn.padding).numpy()[0]
    rows = (kept_b[:, None] * 4 + np.arange(4)).ravel()
    original = drive(conn.weight, rates["a"], 4)[rows]
    folded_bias = pruned.population("b").bias - graph.population("b").bias[rows]
    kept_rates = rates["a"].reshape(4, -1)[kept_a].reshape(-1)
    assert np.allclose(drive(pruned.connections[1].weight, kept_rates, 2) + folded_bias, original)
    assert np.ptp(folded_bias[:4]) > 0  # the corner neurons of a padded convolution lose less than the centre


def twin_neurons():
    """A dense layer of 4 neurons where neuron 3 is neuron 0's twin, and input that makes every
    neuron fire at its own times: (graph, inputs)."""
    rng = np.random.default_rng(0)
    w_in = rng.uniform(0.1, 0.6, (4, 5))
    w_in[3] = w_in[0]
    pop = lambda name, n: Population(name, (n,), 0.0, 0.9, 1.0, 0.0)  # noqa: E731
    graph = Graph((5,), [pop("h", 4), pop("out", 2)],
                  [Connection(INPUT, "h", w_in), Connection("h", "out", rng.normal(size=(2, 4)))], "out", 8, 1e-3,
                  input_levels=1)
    return graph, rng.integers(0, 2, (400, 8, 5))


def test_regression_compensation_moves_a_duplicate_units_drive_onto_its_twin():
    """A unit that always fires with another is predicted exactly: its outgoing weights add onto the twin's."""
    graph, x = twin_neurons()
    w_in = graph.connections[0].weight
    calibration = calibrate(graph, x, gram=True)
    pruned = prune(graph, PruneOptions(0.25, "structured", "redundancy", "regression", ridge=1e-9), calibration)
    assert pruned.population("h").size == 3
    w_out = graph.connections[1].weight
    twin = np.flatnonzero(np.all(pruned.connections[0].weight == w_in[0], axis=1))
    assert len(twin) == 1  # one of the twins went, the other stayed
    assert np.allclose(pruned.connections[1].weight[:, twin[0]], w_out[:, 0] + w_out[:, 3], rtol=1e-4, atol=1e-6)
    assert np.array_equal(reference.run(pruned, x).output, reference.run(graph, x).output)


def test_regression_compensation_rebuilds_a_padded_strided_convolutions_input_from_a_twin_channel():
    """A channel that duplicates another is rebuilt exactly through the next convolution's
    kernel, borders included: every kept channel downstream spikes as before."""
    rng = np.random.default_rng(6)
    graph = conv_chain(rng)
    w_a = graph.connections[0].weight
    w_a[3] = w_a[0]  # channel 3 of layer a fires exactly with channel 0
    x = rng.integers(0, 256, (300, 1, 6, 6))
    calibration = calibrate(graph, x, gram=True)
    pruned = prune(graph, PruneOptions(0.25, "structured", "redundancy", "regression", ridge=1e-9), calibration)
    assert pruned.population("a").shape[0] == 3
    assert sum(np.array_equal(w, w_a[0]) for w in pruned.connections[0].weight) == 1  # one twin went
    before = reference.run(graph, x, record=True).trains["b"].reshape(len(x), graph.steps, 4, -1)
    after = reference.run(pruned, x, record=True).trains["b"].reshape(len(x), graph.steps, 3, -1)
    matches = [[np.array_equal(after[:, :, j], before[:, :, c]) for c in range(4)] for j in range(3)]
    assert all(any(row) for row in matches)


def naive_patches(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """(frames, channels, h, w) -> one row per frame and output position, channel-major taps."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    rows = []
    for frame in x:
        for i in range(0, x.shape[2] - kernel + 1, stride):
            for j in range(0, x.shape[3] - kernel + 1, stride):
                rows.append(frame[:, i:i + kernel, j:j + kernel].ravel())
    return np.array(rows)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.integers(1, 3),
       st.integers(0, 2**31 - 1))
def test_gram_accumulator_equals_the_gram_of_every_patch(channels, kernel, stride, padding, batches, seed):
    rng = np.random.default_rng(seed)
    side = 5
    out_side = (side + 2 * padding - kernel) // stride + 1
    graph = Graph((1, side, side), [Population("a", (channels, side, side), 0.0, 0.9, 1.0, 0.0),
                                    Population("b", (2, out_side, out_side), 0.0, 0.9, 1.0, 0.0)],
                  [Connection("a", "b", rng.normal(size=(2, channels, kernel, kernel)), "conv", (stride, stride),
                              (padding, padding))], "b", 4, 1e-3)
    accumulator = GramAccumulator(graph, graph.connections[0], chunk_elements=60)
    trains = [rng.integers(0, 2, (2, 4, channels * side * side)) for _ in range(batches)]
    for t in trains:
        accumulator.add(t)
    frames = np.concatenate(trains).reshape(-1, channels, side, side).astype(float)
    x = naive_patches(frames, kernel, stride, padding)
    x = np.hstack([x, np.ones((len(x), 1))])
    assert np.array_equal(accumulator.gram, x.T @ x)


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


@pytest.mark.parametrize("field, value", [("method", "random"), ("rank", "gradient"), ("compensation", "retrain")])
def test_unknown_pruning_options_are_refused(field, value):
    with pytest.raises(UserError, match=f"unknown pruning {field} {value!r}"):
        PruneOptions(0.2, **{field: value})


@pytest.mark.parametrize("ridge", [0.0, -0.3])
def test_ridge_must_be_positive(ridge):
    with pytest.raises(UserError, match=f"pruning ridge {ridge:g} must be positive"):
        PruneOptions(0.2, "structured", "redundancy", "regression", ridge)


def test_ratio_that_removes_a_whole_layer(mlp):
    _, graph = mlp
    with pytest.raises(UserError, match="remove every unit"):
        prune(graph, PruneOptions(0.999, "structured"))


@pytest.mark.parametrize("rank, compensation", [("activity", "mean"), ("redundancy", "mean"), ("l1", "regression")])
def test_calibrated_pruning_without_a_calibration_run_is_refused(mlp, rank, compensation):
    with pytest.raises(UserError, match="needs a calibration run"):
        prune(mlp[1], PruneOptions(0.2, "structured", rank, compensation))


def test_regression_compensation_needs_the_gram_matrices(mlp, digits):
    rates_only = Calibration(calibrate(mlp[1], digits.x_train[:50]).rates)
    with pytest.raises(UserError, match="need the calibration's Gram matrices"):
        prune(mlp[1], PruneOptions(0.2, "structured", "l1", "regression"), rates_only)


def _twenty_unit_layer(w_in: np.ndarray, rng) -> Graph:
    """Input (5) -> hidden layer "h" of 20 neurons with incoming weights ``w_in`` -> 2 outputs."""
    pop = lambda name, n: Population(name, (n,), 0.0, 0.9, 1.0, 0.0)  # noqa: E731
    return Graph((5,), [pop("h", 20), pop("out", 2)],
                 [Connection(INPUT, "h", w_in), Connection("h", "out", rng.normal(size=(2, 20)))], "out", 4, 1e-3,
                 input_levels=1)


def _kept_rows(graph: Graph, w_in: np.ndarray) -> list[int]:
    """Which of the original hidden neurons (rows of ``w_in``) a pruned graph kept."""
    return [int(np.flatnonzero(np.all(w_in == row, axis=1))[0]) for row in graph.connections[0].weight]


def test_greedy_pruning_removes_the_units_the_deviation_misses_least_in_rounds():
    """With a deviation that is the summed importance of the removed units, rounds of one unit
    remove the least important ones, trying every remaining unit each round."""
    rng = np.random.default_rng(1)
    w_in = rng.normal(size=(20, 5))
    graph = _twenty_unit_layer(w_in, rng)
    importance = rng.permutation(20)
    calls = []

    def deviation(g):
        kept = _kept_rows(g, w_in)
        calls.append(kept)
        return float(importance.sum() - importance[kept].sum())

    pruned = greedy_prune(graph, PruneOptions(0.3, "structured"), None, deviation)
    kept = _kept_rows(pruned, w_in)
    assert sorted(importance[np.setdiff1d(np.arange(20), kept)]) == list(range(6))
    assert len(calls) == sum(range(15, 21))  # six rounds of one unit (0.05 of 20), every remaining unit tried


def test_greedy_pruning_with_a_cap_tries_only_the_units_ranked_first():
    """With ``max_candidates`` each round tries the remaining units with the smallest weights (the
    options' L1 rank), so a search over a wide layer costs rounds x cap trials."""
    rng = np.random.default_rng(2)
    w_in = rng.normal(size=(20, 5)) * rng.permutation(np.arange(1, 21))[:, None]
    graph = _twenty_unit_layer(w_in, rng)
    by_l1 = list(np.argsort(np.abs(w_in).sum(axis=1)))
    tried = []

    def deviation(g):
        kept = _kept_rows(g, w_in)
        tried.append(set(range(20)) - set(kept))
        return float(-np.abs(w_in[list(tried[-1])]).sum())  # prefers the largest of those tried

    pruned = greedy_prune(graph, PruneOptions(0.2, "structured", "l1"), None, deviation, max_candidates=3)
    assert len(tried) == 4 * 3  # four rounds of one unit, three candidates each
    removed = []
    for r in range(4):
        candidates = {u for t in tried[3 * r:3 * r + 3] for u in t} - set(removed)
        assert candidates == set([u for u in by_l1 if u not in removed][:3])
        removed.append(max(candidates, key=lambda u: np.abs(w_in[u]).sum()))
    kept = _kept_rows(pruned, w_in)
    assert set(kept) == set(range(20)) - set(removed)
    with pytest.raises(ValueError, match="max candidates must be positive"):
        greedy_prune(graph, PruneOptions(0.2, "structured"), None, deviation, max_candidates=0)


def test_greedy_pruning_finds_the_twin_and_keeps_the_output():
    graph, x = twin_neurons()
    w_in = graph.connections[0].weight
    calibration = calibrate(graph, x, gram=True)
    before = reference.run(graph, x).output
    pruned = greedy_prune(graph, PruneOptions(0.25, "structured", compensation="regression", ridge=1e-9), calibration,
                          lambda g: float(np.mean((reference.run(g, x).output - before) ** 2)))
    assert sum(np.array_equal(w, w_in[0]) for w in pruned.connections[0].weight) == 1
    assert np.array_equal(reference.run(pruned, x).output, before)
