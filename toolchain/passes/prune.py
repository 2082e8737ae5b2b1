"""Prune pass: remove synapses (unstructured) or whole neurons/channels (structured).

Unstructured magnitude pruning zeroes the smallest weights, per connection or
globally; zero synapses cost no energy and no synapse memory. Structured
pruning removes whole output units (neurons of a dense layer, channels of a
convolutional layer) ranked by the L1 norm of their incoming weights or by
their activity on a calibration run, and really shrinks the graph: the
population loses those neurons, their incoming rows and outgoing columns
disappear. When a calibration run gives firing rates, the mean drive the
removed units delivered downstream is folded into the receiving neurons'
biases, so pruning removes variance, not the average input. The output layer
is never pruned structurally (it is the classes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from toolchain.errors import UserError
from toolchain.ir import Connection, Graph, Population


@dataclass(frozen=True)
class PruneOptions:
    """``ratio``: fraction removed, in [0, 1). ``method``: "magnitude" (unstructured,
    per connection), "global-magnitude" (unstructured, one threshold for the
    network) or "structured". ``rank``: how structured pruning orders units,
    "l1" (incoming weight norm) or "activity" (spikes on a calibration run)."""

    ratio: float
    method: Literal["magnitude", "global-magnitude", "structured"] = "structured"
    rank: Literal["l1", "activity"] = "l1"


def check_ratio(ratio: float) -> None:
    if not 0 <= ratio < 1:
        raise UserError(f"pruning ratio {ratio:g} is out of range: it must be in [0, 1)")


def prune(graph: Graph, options: PruneOptions, rates: dict[str, np.ndarray] | None = None) -> Graph:
    """Return a pruned copy of ``graph``; ``rates`` maps population -> mean spikes per neuron per
    step on calibration data (needed for ranking by activity, used for bias compensation)."""
    check_ratio(options.ratio)
    if options.ratio == 0:
        return graph
    if options.method == "magnitude":
        return _with_connections(graph, [_zero_smallest(c, options.ratio) for c in graph.connections])
    if options.method == "global-magnitude":
        weights = np.concatenate([np.abs(c.weight).ravel() for c in graph.connections])
        cut = np.quantile(weights, options.ratio)
        return _with_connections(graph, [replace(c, weight=np.where(np.abs(c.weight) <= cut, 0.0, c.weight))
                                         for c in graph.connections])
    if options.method == "structured":
        if options.rank == "activity" and rates is None:
            raise UserError("structured pruning ranked by activity needs a calibration run")
        return _prune_units(graph, options, rates)
    raise UserError(f"unknown pruning method {options.method!r}; use magnitude, global-magnitude or structured")


def _with_connections(graph: Graph, connections: list[Connection]) -> Graph:
    return Graph(graph.input_shape, graph.populations, connections, graph.output, graph.steps, graph.dt,
                 graph.input_levels, dict(graph.metadata))


def _zero_smallest(conn: Connection, ratio: float) -> Connection:
    cut = np.quantile(np.abs(conn.weight), ratio)
    return replace(conn, weight=np.where(np.abs(conn.weight) <= cut, 0.0, conn.weight))


def _unit_count(pop: Population, convolutional: bool) -> int:
    return pop.shape[0] if convolutional else pop.size


def _unit_scores(graph: Graph, pop: Population, convolutional: bool, options: PruneOptions, rates) -> np.ndarray:
    units = _unit_count(pop, convolutional)
    if options.rank == "activity":
        per_neuron = np.asarray(rates[pop.name], dtype=np.float64)
        return per_neuron.reshape(units, -1).sum(axis=1)
    score = np.zeros(units)
    for conn in graph.incoming(pop.name):
        if conn.recurrent:
            continue
        w = np.abs(conn.weight).reshape(conn.weight.shape[0], -1).sum(axis=1)
        score += w if conn.kind == "conv" or not convolutional else w.reshape(units, -1).sum(axis=1)
    return score


def _prune_units(graph: Graph, options: PruneOptions, rates) -> Graph:
    keep: dict[str, np.ndarray] = {}  # population -> kept neuron indices (flattened)
    populations = []
    for pop in graph.populations:
        if pop.name == graph.output:
            populations.append(pop)
            continue
        convolutional = any(c.kind == "conv" for c in graph.incoming(pop.name))
        units = _unit_count(pop, convolutional)
        removed = int(round(options.ratio * units))
        if removed >= units:
            raise UserError(f"pruning {options.ratio:g} would remove every unit of layer {pop.name}")
        order = np.argsort(_unit_scores(graph, pop, convolutional, options, rates), kind="stable")
        kept_units = np.sort(order[removed:])
        per_unit = pop.size // units
        kept = (kept_units[:, None] * per_unit + np.arange(per_unit)).ravel()
        keep[pop.name] = kept
        shape = (len(kept_units),) + pop.shape[1:] if convolutional else (len(kept),)
        populations.append(Population(pop.name, shape, pop.alpha[kept], pop.beta[kept], pop.threshold[kept],
                                      pop.bias[kept], pop.spiking, pop.reset, pop.model))
    if rates is not None:
        populations = [_compensate(graph, pop, keep, rates) for pop in populations]
    connections = [_slice_connection(graph, c, keep) for c in graph.connections]
    return Graph(graph.input_shape, populations, connections, graph.output, graph.steps, graph.dt,
                 graph.input_levels, dict(graph.metadata))


def _compensate(graph: Graph, pop: Population, keep: dict[str, np.ndarray], rates) -> Population:
    """Add the removed sources' mean drive to ``pop``'s bias (``pop`` is already sliced)."""
    extra = np.zeros(graph.population(pop.name).size)
    for conn in graph.incoming(pop.name):
        if conn.source not in keep:
            continue
        removed = np.setdiff1d(np.arange(graph.population(conn.source).size), keep[conn.source])
        rate = np.asarray(rates[conn.source], dtype=np.float64)
        if conn.kind == "dense":
            extra += conn.weight[:, removed] @ rate[removed]
        else:
            source_channels = graph.population(conn.source).shape[0]
            channel_rate = rate.reshape(source_channels, -1).mean(axis=1)
            lost = np.zeros(source_channels, dtype=bool)
            lost[np.unique(removed // (rate.size // source_channels))] = True
            per_channel = np.einsum("ocuv,c->o", conn.weight[:, lost], channel_rate[lost])
            extra += np.repeat(per_channel, extra.size // conn.weight.shape[0])
    if not extra.any():
        return pop
    kept = keep.get(pop.name, np.arange(extra.size))
    return replace(pop, bias=pop.bias + extra[kept])


def _slice_connection(graph: Graph, conn: Connection, keep: dict[str, np.ndarray]) -> Connection:
    w = conn.weight
    if conn.target in keep:
        rows = keep[conn.target]
        if conn.kind == "dense":
            w = w[rows]
        else:
            per_channel = graph.population(conn.target).size // w.shape[0]
            w = w[np.unique(rows // per_channel)]
    if conn.source in keep:
        cols = keep[conn.source]
        if conn.kind == "dense":
            w = w[:, cols]
        else:
            per_channel = graph.population(conn.source).size // w.shape[1]
            w = w[:, np.unique(cols // per_channel)]
    return replace(conn, weight=w)
