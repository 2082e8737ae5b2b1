"""Pruning to a core budget: structured pruning chosen per layer until the mapped program fits.

The graph is small and random; a chip with a small convolution tile makes
its layers take several cores each: conv a (8, 8, 8) takes 8 one-column
tiles, conv b (8, 4, 4) 2 two-column tiles, the read-out 1.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from targets import reference
from targets.chips import load_chip
from toolchain.drc import check_fits
from toolchain.errors import UserError
from toolchain.ir import INPUT, Connection, Graph, Population
from toolchain.passes.core_budget import prune_to_fit
from toolchain.passes.partition import map_in_order
from toolchain.passes.quantize import QuantizeOptions, quantize


def chip_with(**limits):
    chip = load_chip("loihi2")
    return replace(chip, limits={**chip.limits, **{k: {"value": v, "source": "test"} for k, v in limits.items()}})


CHIP = chip_with(conv_tile_neurons_below=128)


def graph(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    pop = lambda name, shape: Population(name, shape, 0.0, 0.9, 1.0, 0.0)  # noqa: E731
    return Graph((1, 10, 10), [pop("a", (8, 8, 8)), pop("b", (8, 4, 4)), pop("out", (3,))],
                 [Connection(INPUT, "a", rng.normal(size=(8, 1, 3, 3)), "conv"),
                  Connection("a", "b", rng.normal(size=(8, 8, 3, 3)), "conv", (2, 2), (1, 1)),
                  Connection("b", "out", rng.normal(size=(3, 128)))], "out", 4, 1e-3)


def lower(g: Graph, chip=CHIP):
    return quantize(g, chip, QuantizeOptions(8))


def cores_per_layer(g: Graph, chip=CHIP) -> list[int]:
    cores = map_in_order(lower(g, chip), chip).cores
    return [sum(c.layer == name for c in cores) for name in ("a", "b", "out")]


def test_a_program_over_its_budget_loses_the_units_that_save_most_cores():
    full = graph()
    assert cores_per_layer(full) == [8, 2, 1]
    fit = prune_to_fit(full, lower, CHIP, max_cores=7)
    # one channel of a (7 channels: two-column tiles, 4 cores) saves 4 cores, one of b saves 1
    weakest = int(np.argmin(np.abs(full.connections[0].weight).sum(axis=(1, 2, 3))))
    assert {name: gone.tolist() for name, gone in fit.removed.items()} == {"a": [weakest]}
    assert cores_per_layer(fit.graph) == [4, 2, 1] and fit.cores == (11, 7)
    kept = np.delete(np.arange(8), weakest)
    assert np.array_equal(fit.graph.connections[0].weight, full.connections[0].weight[kept])
    assert np.array_equal(fit.graph.connections[1].weight, full.connections[1].weight[:, kept])
    assert check_fits(map_in_order(fit.program, CHIP), CHIP, max_cores=7) == []
    assert fit.summary()["pruned"] == {"a": {"units": 8, "removed": 1}}


def test_what_the_readout_loses_steers_which_layer_gives_up_units():
    loss = lambda g: 10.0 * (g.population("a").shape[0] < 8)  # noqa: E731  (a is costly to prune)
    fit = prune_to_fit(graph(), lower, CHIP, max_cores=7, deviation=loss)
    # b first (free, 1 core saved), then a (the only trial that saves any)
    assert {name: len(gone) for name, gone in fit.removed.items()} == {"a": 1, "b": 1}
    assert fit.cores == (11, 6) and cores_per_layer(fit.graph) == [4, 1, 1]


def test_a_chip_budget_counts_chips_and_the_accuracy_cost_is_measured():
    chip = chip_with(conv_tile_neurons_below=128, cores_per_chip=8, mesh_columns=4, mesh_rows=2)
    full = graph()
    images = np.random.default_rng(1).random((40, 1, 10, 10))
    truth = reference.run(full, images).predictions()
    agreement = lambda g: float(np.mean(reference.run(g, images).predictions() == truth))  # noqa: E731
    fit = prune_to_fit(full, lambda g: lower(g, chip), chip, chips=1, accuracy=agreement)
    assert fit.chips == (2, 1) and fit.cores == (11, 7)
    assert fit.accuracy == (1.0, agreement(fit.graph))
    assert fit.summary()["accuracy_drop"] == pytest.approx(1.0 - agreement(fit.graph))


def test_a_program_within_its_budget_is_left_alone():
    full = graph()
    fit = prune_to_fit(full, lower, CHIP, max_cores=11)
    assert fit.graph is full and fit.removed == {} and fit.cores == (11, 11)


def test_a_missing_or_impossible_budget_is_refused():
    with pytest.raises(UserError, match="needs a budget: give --max-cores or --chips"):
        prune_to_fit(graph(), lower, CHIP)
    with pytest.raises(UserError, match=r"does not fit loihi2 in 2 cores even with 90% of a layer's units pruned "
                                        r"\(3 cores left\)"):
        prune_to_fit(graph(), lower, CHIP, max_cores=2)


def test_compile_prunes_to_the_core_budget_and_reports_it(monkeypatch):
    """The compile flow's --prune-to-fit: the program it returns fits the budget, and the notes say
    what it cost in cores."""
    from snn_compile.compile import CompileOptions, compile_model
    from targets.registry import get_target
    from toolchain.passes.prune import PruneOptions

    monkeypatch.setattr("targets.chips.load_chip", lambda name: CHIP)
    monkeypatch.setattr("snn_compile.compile.load_chip", lambda name: CHIP)
    options = CompileOptions(QuantizeOptions(8, "max"), PruneOptions(0.0), max_cores=6, prune_to_fit=True)
    compiled = compile_model(graph(), get_target("loihi2"), options)
    note = compiled.notes["prune-to-fit"]
    assert note["cores_before"] == len(map_in_order(quantize(graph(), CHIP, QuantizeOptions(8, "max")),
                                                    CHIP).cores) > 6
    assert note["cores_after"] == len(compiled.program.mapping.cores) <= 6
    assert check_fits(compiled.program.mapping, CHIP, max_cores=6) == []
    assert compiled.passes[0].startswith("prune-to-fit(bits=8, weight_scale=max")
    assert compiled.program.metadata["prune-to-fit"] == note


def test_prune_to_fit_needs_a_budget_and_a_chip():
    from snn_compile.compile import CompileOptions, compile_model
    from targets.registry import get_target

    with pytest.raises(UserError, match="needs a budget"):
        compile_model(graph(), get_target("loihi2"), CompileOptions(prune_to_fit=True))
    with pytest.raises(UserError, match="has no cores"):
        compile_model(graph(), get_target("digital45nm"), CompileOptions(max_cores=2, prune_to_fit=True))


def test_compile_with_calibration_images_cuts_where_the_readout_loses_least_per_core(monkeypatch):
    """Given calibration images, compile's --prune-to-fit keeps, of the trials (one step off each
    layer), the cut whose float readout moves least from the unpruned one's per core saved: here b's
    channel (1 core), where counting cores alone takes a's (4 cores)."""
    from snn_compile.compile import CompileOptions, compile_model
    from targets.registry import get_target
    from toolchain.passes.prune import PruneOptions, remove_units, unit_scores

    full = graph(6)
    images = np.random.default_rng(2).integers(0, 256, (64, 1, 10, 10))
    unpruned = reference.run(full, images).output
    trials = {}
    for name in ("a", "b"):
        weakest = np.argsort(unit_scores(full, full.population(name), PruneOptions(0.0), None), kind="stable")[:1]
        cut = remove_units(full, {name: weakest}, PruneOptions(0.0), None)
        trials[name] = (float(np.mean((reference.run(cut, images).output - unpruned) ** 2)),
                        sum(cores_per_layer(full)) - sum(cores_per_layer(cut)))
    assert {name: saved for name, (_, saved) in trials.items()} == {"a": 4, "b": 1}
    least = min(trials, key=lambda name: trials[name][0] / trials[name][1])
    assert least == "b"

    monkeypatch.setattr("snn_compile.compile.load_chip", lambda name: CHIP)
    options = CompileOptions(QuantizeOptions(8), PruneOptions(0.0), max_cores=10, prune_to_fit=True)
    note = compile_model(full, get_target("loihi2"), options, images).notes["prune-to-fit"]
    plain = compile_model(full, get_target("loihi2"), options).notes["prune-to-fit"]
    assert note["pruned"] == {"b": {"units": 8, "removed": 1}} and note["cores_after"] == 10
    assert note["chosen_by"] == "readout deviation per core saved"
    assert note["readout_deviation"] == pytest.approx(trials["b"][0])
    assert plain["pruned"] == {"a": {"units": 8, "removed": 1}} and plain["chosen_by"] == "cores saved"
