"""Prune to a core budget: structured pruning, chosen per layer, until the mapped program fits.

A layer's cores are not smooth in its width (a convolution's tile holds a
power-of-two number of columns, a dense layer's cores step with synapse
memory), so the search prunes and maps for real: each round tries removing
one more step of units (channels of a convolution, neurons of a dense layer)
from each prunable layer alone, lowers and maps every trial, and keeps the
trial that saves the most cores or, given ``deviation`` (what the readout
loses, as the sweep measures it), the one that loses least per core saved.
When no trial saves a core, the layer with the most cores gives up a step.
Within a layer, units go in the order of ``options.rank`` and what they gave
is compensated as ``options.compensation`` says (``toolchain.passes.prune``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from toolchain.drc import check_fits
from toolchain.errors import UserError
from toolchain.passes.partition import map_in_order
from toolchain.passes.prune import Calibration, PruneOptions, prunable, remove_units, unit_count, unit_scores

if TYPE_CHECKING:
    from toolchain.ir import Graph
    from toolchain.mapping import Mapping
    from toolchain.program import Program

STEP = 0.05
"""Share of a layer's units one trial removes (at least one unit)."""
MOST = 0.9
"""Largest share of any layer's units the search removes before it gives up."""


@dataclass
class BudgetFit:
    """The pruned graph and its program, what was removed per layer (units of the unpruned graph, in
    removal order), the cores, chips and (given ``accuracy``) accuracy before and after, and (given
    ``deviation``) what the pruned graph's readout lost."""

    graph: Graph
    program: Program
    removed: dict[str, np.ndarray]
    units: dict[str, int]
    cores: tuple[int, int]
    chips: tuple[int, int]
    accuracy: tuple[float, float] | None = None
    deviation: float | None = None

    def summary(self) -> dict:
        return {"cores_before": self.cores[0], "cores_after": self.cores[1], "chips_before": self.chips[0],
                "chips_after": self.chips[1],
                "chosen_by": "cores saved" if self.deviation is None else "readout deviation per core saved",
                **({} if self.deviation is None else {"readout_deviation": self.deviation}),
                "pruned": {name: {"units": self.units[name], "removed": int(len(gone))}
                           for name, gone in self.removed.items()},
                **({"accuracy_before": self.accuracy[0], "accuracy_after": self.accuracy[1],
                    "accuracy_drop": self.accuracy[0] - self.accuracy[1]} if self.accuracy else {})}


def prune_to_fit(graph: Graph, lower: Callable[[Graph], Program], chip, max_cores: int | None = None,
                 chips: int | None = None, options: PruneOptions = PruneOptions(0.0),
                 calibration: Calibration | None = None, deviation: Callable[[Graph], float] | None = None,
                 accuracy: Callable[[Graph], float] | None = None, step: float = STEP) -> BudgetFit:
    """``graph`` pruned until ``lower(graph)`` (a program for ``chip``) maps within ``max_cores`` and
    ``chips`` and every per-core limit; unchanged when it fits already. Raises ``UserError`` when a
    budget is missing or cannot be met with ``MOST`` of every layer removed."""
    if max_cores is None and chips is None:
        raise UserError("pruning to fit needs a budget: give --max-cores or --chips")
    if not 0 < step < 1:
        raise ValueError(f"step must be in (0, 1), got {step}")

    def mapped(candidate: Graph) -> tuple[Program, Mapping]:
        program = lower(candidate)
        return program, map_in_order(program, chip)

    program, mapping = mapped(graph)
    start = (len(mapping.cores), mapping.chips_used)
    units = {name: unit_count(graph, name) for name in prunable(graph)}
    order = {name: np.argsort(unit_scores(graph, graph.population(name), options, calibration), kind="stable")
             for name in units}
    taken = {name: 0 for name in units}
    pruned, lost = graph, deviation(graph) if deviation else 0.0
    while check_fits(mapping, chip, max_cores=max_cores, chips=chips):
        trials = []
        for name, count in units.items():
            more = taken[name] + max(1, int(round(step * count)))
            if more > MOST * count:
                continue
            trial = {**taken, name: more}
            candidate = remove_units(graph, {n: order[n][:k] for n, k in trial.items()}, options, calibration)
            trials.append((name, trial, candidate, *mapped(candidate)))
        if not trials:
            budget = " and ".join(part for part in (f"{max_cores} cores" if max_cores is not None else "",
                                                    f"{chips} chips" if chips is not None else "") if part)
            raise UserError(f"does not fit {chip.name} in {budget} even with {MOST:.0%} of a layer's units pruned "
                            f"({len(mapping.cores)} cores left); allow more cores or chips, or use fewer weight bits")
        saving = [(t, len(mapping.cores) - len(t[4].cores)) for t in trials]
        helpful = [(t, saved) for t, saved in saving if saved > 0]
        if helpful and deviation:
            losses = [(deviation(t[2]), t, saved) for t, saved in helpful]
            loss, best, _ = min(losses, key=lambda item: (item[0] - lost) / item[2])
            lost = loss
        elif helpful:
            best = max(helpful, key=lambda item: item[1])[0]
        else:
            busiest = max(units, key=lambda name: sum(c.layer == name for c in mapping.cores))
            best = next((t for t in trials if t[0] == busiest), trials[0])
            lost = deviation(best[2]) if deviation else lost
        _, taken, pruned, program, mapping = best
    return BudgetFit(pruned, program, {name: order[name][:k] for name, k in taken.items() if k}, units,
                     (start[0], len(mapping.cores)), (start[1], mapping.chips_used),
                     (accuracy(graph), accuracy(pruned)) if accuracy else None, lost if deviation else None)
