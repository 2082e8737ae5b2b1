"""Structured pruning that chooses its units by what the readout loses.

One-shot rankings (L1, activity, reconstruction loss) score each unit alone
and layer by layer. Removing units in rounds instead, each round trying every
remaining unit with the rest of its layer refitted and the earlier removals
in place, accounts for units that only matter together and for what a layer's
loss does downstream. Each trial is a full pruned graph scored by the caller
(the sweep: the readout's distance from the uncompressed model's on
validation images), so the search costs one evaluation per remaining unit per
round; on wide layers it tries only the units a one-shot ranking puts first.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from toolchain.ir import Graph
from toolchain.passes.prune import (Calibration, PruneOptions, check_ratio, prunable, removal_count,
                                    remove_units, unit_count, unit_scores)

ROUND = 0.05  # share of each layer's units removed per round


def greedy_prune(graph: Graph, options: PruneOptions, calibration: Calibration | None,
                 deviation: Callable[[Graph], float], round_share: float = ROUND,
                 max_candidates: int | None = None) -> Graph:
    """``graph`` pruned by ``options.ratio`` per layer, in rounds of ``round_share``: each round
    removes, layer by layer, the units whose removal (with ``options.compensation`` when
    ``calibration`` is given) gives the lowest ``deviation``. ``max_candidates``: per layer and
    round, try only this many of the remaining units, the first by ``options.rank``."""
    check_ratio(options.ratio)
    if not 0 < round_share <= 1:
        raise ValueError(f"round share must be in (0, 1], got {round_share}")
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(f"max candidates must be positive, got {max_candidates}")
    layers = {name: unit_count(graph, name) for name in prunable(graph)}
    order = {name: np.argsort(unit_scores(graph, graph.population(name), options, calibration), kind="stable")
             for name in layers if max_candidates is not None and max_candidates < layers[name]}
    targets = {name: removal_count(name, units, options.ratio) for name, units in layers.items()}
    removed = {name: np.zeros(0, dtype=int) for name in layers}
    rounds = int(np.ceil(options.ratio / round_share - 1e-9))
    for r in range(1, rounds + 1):
        share = min(r * round_share, options.ratio)
        for name, units in layers.items():
            need = min(int(round(share * units)), targets[name]) - len(removed[name])
            if need <= 0:
                continue
            candidates = np.setdiff1d(np.arange(units), removed[name])
            if name in order:
                candidates = order[name][np.isin(order[name], removed[name], invert=True)][:max(max_candidates, need)]
            scores = [deviation(remove_units(graph, {**removed, name: np.append(removed[name], c)}, options,
                                             calibration)) for c in candidates]
            removed[name] = np.sort(np.append(removed[name], candidates[np.argsort(scores, kind="stable")[:need]]))
    return remove_units(graph, removed, options, calibration)
