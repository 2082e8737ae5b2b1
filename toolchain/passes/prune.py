"""Prune pass: remove synapses (unstructured) or whole neurons/channels (structured).

Unstructured magnitude pruning zeroes the smallest weights, per connection or
globally; zero synapses cost no energy and no synapse memory. Structured
pruning removes whole output units (neurons of a dense layer, channels of a
convolutional layer) ranked by the L1 norm of their incoming weights or by
their activity on a calibration run, or by how well the other units predict
them (``redundancy``), and really shrinks the graph: the population loses those
neurons, their incoming rows and outgoing columns disappear. A calibration run
lets the removed units' drive be folded into what stays: ``mean`` compensation
adds their mean drive to the receiving neurons' biases; ``regression``
compensation predicts each removed channel's spikes from the kept channels of
its layer by least squares on the calibration run (``s_r ~ m_r + A (s_k - m_k)``)
and moves that prediction into the kept channels' outgoing weights and the
biases, the channel-pruning reconstruction of He et al. (ICCV 2017) in closed
form. The output layer is never pruned structurally (it is the classes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from toolchain.errors import UserError
from toolchain.ir import Connection, Graph, Population
from toolchain.synaptic import accumulate


@dataclass(frozen=True)
class PruneOptions:
    """``ratio``: fraction removed, in [0, 1). ``method``: "magnitude" (unstructured,
    per connection), "global-magnitude" (unstructured, one threshold for the
    network) or "structured". ``rank``: how structured pruning orders units,
    "l1" (incoming weight norm), "activity" (spikes on a calibration run) or
    "redundancy" (outgoing weight energy x the variance the other units of the
    layer cannot predict). ``compensation`` (with calibration statistics):
    "mean" or "regression"."""

    ratio: float
    method: Literal["magnitude", "global-magnitude", "structured"] = "structured"
    rank: Literal["l1", "activity", "redundancy"] = "l1"
    compensation: Literal["mean", "regression"] = "mean"


@dataclass
class Calibration:
    """Activity of a calibration run of the graph being pruned. ``rates``: mean spikes
    per neuron per step, per population (and the input's mean value). ``covariance``:
    per population, the covariance of its units' spikes per step (units: channels of a
    convolutional layer, neurons of a dense one), pooled over samples, steps and pixels."""

    rates: dict[str, np.ndarray]
    covariance: dict[str, np.ndarray] | None = None


def check_ratio(ratio: float) -> None:
    if not 0 <= ratio < 1:
        raise UserError(f"pruning ratio {ratio:g} is out of range: it must be in [0, 1)")


def prune(graph: Graph, options: PruneOptions, calibration: Calibration | None = None) -> Graph:
    """Return a pruned copy of ``graph``. ``calibration`` is needed for ranking by activity or
    redundancy and for regression compensation; with it, structured pruning compensates."""
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
        needs_covariance = options.rank == "redundancy" or options.compensation == "regression"
        if (options.rank == "activity" or needs_covariance) and calibration is None:
            raise UserError(f"structured pruning ranked by {options.rank} with {options.compensation} compensation "
                            "needs a calibration run")
        if needs_covariance and calibration.covariance is None:
            raise UserError("regression compensation and redundancy ranking need the calibration covariance")
        return _prune_units(graph, options, calibration)
    raise UserError(f"unknown pruning method {options.method!r}; use magnitude, global-magnitude or structured")


def _with_connections(graph: Graph, connections: list[Connection]) -> Graph:
    return Graph(graph.input_shape, graph.populations, connections, graph.output, graph.steps, graph.dt,
                 graph.input_levels, dict(graph.metadata))


def _zero_smallest(conn: Connection, ratio: float) -> Connection:
    cut = np.quantile(np.abs(conn.weight), ratio)
    return replace(conn, weight=np.where(np.abs(conn.weight) <= cut, 0.0, conn.weight))


def _unit_count(pop: Population, convolutional: bool) -> int:
    return pop.shape[0] if convolutional else pop.size


def unit_count(graph: Graph, name: str) -> int:
    """Units structured pruning removes from a population: channels if it is fed by a convolution."""
    pop = graph.population(name)
    return _unit_count(pop, any(c.kind == "conv" for c in graph.incoming(name)))


class CovarianceAccumulator:
    """Covariance of a population's units from spike trains seen batch by batch.

    Units are pooled over pixels: ``cov[c, d]`` is the mean over pixels p of
    cov(s_c(p), s_d(p)), each neuron centred on its own mean."""

    def __init__(self, units: int, neurons: int):
        self.units, self.pixels = units, neurons // units
        self.moment = np.zeros((units, units))
        self.sums = np.zeros((units, self.pixels))
        self.count = 0

    def add(self, trains: np.ndarray) -> None:
        """``trains``: (samples, steps, neurons) spikes."""
        x = np.asarray(trains, dtype=np.float32).reshape(-1, self.units, self.pixels)
        flat = x.transpose(1, 0, 2).reshape(self.units, -1)
        self.moment += (flat @ flat.T).astype(np.float64)
        self.sums += x.sum(axis=0)
        self.count += len(x)

    def covariance(self) -> np.ndarray:
        means = self.sums / self.count
        return (self.moment / self.count - means @ means.T) / self.pixels


def _unit_scores(graph: Graph, pop: Population, convolutional: bool, options: PruneOptions,
                 calibration: Calibration | None) -> np.ndarray:
    units = _unit_count(pop, convolutional)
    if options.rank == "activity":
        per_neuron = np.asarray(calibration.rates[pop.name], dtype=np.float64)
        return per_neuron.reshape(units, -1).sum(axis=1)
    if options.rank == "redundancy":
        # residual variance of unit r given all the others is 1 / (C^-1)_rr
        cov = calibration.covariance[pop.name]
        residual = 1.0 / np.diag(np.linalg.inv(cov + _ridge(cov) * np.eye(len(cov))))
        outgoing = np.zeros(units)
        for conn in graph.outgoing(pop.name):
            w = conn.weight
            if conn.kind == "conv":
                outgoing += (w ** 2).sum(axis=(0, 2, 3))
            else:
                outgoing += (w ** 2).sum(axis=0).reshape(units, -1).sum(axis=1)
        return residual * outgoing
    score = np.zeros(units)
    for conn in graph.incoming(pop.name):
        if conn.recurrent:
            continue
        w = np.abs(conn.weight).reshape(conn.weight.shape[0], -1).sum(axis=1)
        score += w if conn.kind == "conv" or not convolutional else w.reshape(units, -1).sum(axis=1)
    return score


def _prune_units(graph: Graph, options: PruneOptions, calibration: Calibration | None) -> Graph:
    keep: dict[str, np.ndarray] = {}  # population -> kept neuron indices (flattened)
    kept_channels: dict[str, np.ndarray] = {}  # population -> kept units (channels or neurons)
    units: dict[str, int] = {}
    convolutional = {pop.name for pop in graph.populations if any(c.kind == "conv" for c in graph.incoming(pop.name))}
    for pop in graph.populations:
        if pop.name == graph.output:
            continue
        units[pop.name] = _unit_count(pop, pop.name in convolutional)
        removed = int(round(options.ratio * units[pop.name]))
        if removed >= units[pop.name]:
            raise UserError(f"pruning {options.ratio:g} would remove every unit of layer {pop.name}")
        order = np.argsort(_unit_scores(graph, pop, pop.name in convolutional, options, calibration), kind="stable")
        kept_units = np.sort(order[removed:])
        per_unit = pop.size // units[pop.name]
        keep[pop.name] = (kept_units[:, None] * per_unit + np.arange(per_unit)).ravel()
        kept_channels[pop.name] = kept_units
    if calibration is not None:
        graph = _fold_removed(graph, kept_channels, units, calibration, options.compensation == "regression")
    populations = []
    for pop in graph.populations:
        if pop.name not in keep:
            populations.append(pop)
            continue
        kept = keep[pop.name]
        shape = (len(kept_channels[pop.name]),) + pop.shape[1:] if pop.name in convolutional else (len(kept),)
        populations.append(Population(pop.name, shape, pop.alpha[kept], pop.beta[kept], pop.threshold[kept],
                                      pop.bias[kept], pop.spiking, pop.reset, pop.model))
    connections = [_slice_connection(graph, c, keep) for c in graph.connections]
    return Graph(graph.input_shape, populations, connections, graph.output, graph.steps, graph.dt,
                 graph.input_levels, dict(graph.metadata))


def _ridge(cov: np.ndarray) -> float:
    """Regularisation of a covariance's inverse: a small share of its mean variance."""
    return 1e-3 * max(float(np.trace(cov)) / len(cov), 1e-12)


def _fold_removed(graph: Graph, kept_channels: dict[str, np.ndarray], units: dict[str, int],
                  calibration: Calibration, regression: bool) -> Graph:
    """Fold each removed unit's predicted drive into what stays (weights and biases still full size).

    A removed unit's spikes are predicted as ``m_r + A (s_k - m_k)`` from the kept
    units of its layer (``A = 0`` for mean compensation): the ``A`` part moves into
    the kept units' outgoing weights, the rest (``m_r - A m_k``, per neuron, so a
    convolution's borders get their own) into the receiving neurons' biases."""
    extra = {pop.name: np.zeros(pop.size) for pop in graph.populations}
    connections = []
    for conn in graph.connections:
        if conn.source not in kept_channels:
            connections.append(conn)
            continue
        n_units, kept = units[conn.source], kept_channels[conn.source]
        removed = np.setdiff1d(np.arange(n_units), kept)
        means = np.asarray(calibration.rates[conn.source], dtype=np.float64).reshape(n_units, -1)
        a = np.zeros((len(removed), len(kept)))
        if regression and len(removed):
            cov = calibration.covariance[conn.source]
            ck = cov[np.ix_(kept, kept)]
            a = np.linalg.solve(ck + _ridge(ck) * np.eye(len(kept)), cov[np.ix_(kept, removed)]).T
        offset = means[removed] - a @ means[kept]  # (removed, pixels): what the kept units do not carry
        w = np.array(conn.weight, dtype=np.float64)
        if conn.kind == "dense":
            wr = w.reshape(w.shape[0], n_units, -1)
            wr[:, kept] += np.einsum("orp,rk->okp", wr[:, removed], a)
            extra[conn.target] += np.einsum("orp,rp->o", wr[:, removed], offset)
            w = wr.reshape(w.shape)
        else:
            drive = accumulate("conv", torch.as_tensor(w[:, removed]),
                               torch.as_tensor(offset.reshape(1, -1)),
                               (len(removed),) + tuple(graph.shape_of(conn.source)[1:]), conn.stride, conn.padding)
            extra[conn.target] += drive.numpy().reshape(-1)
            w[:, kept] += np.einsum("orhw,rk->okhw", w[:, removed], a)
        connections.append(replace(conn, weight=w))
    populations = [replace(p, bias=p.bias + extra[p.name]) if extra[p.name].any() else p for p in graph.populations]
    return Graph(graph.input_shape, populations, connections, graph.output, graph.steps, graph.dt,
                 graph.input_levels, dict(graph.metadata))


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
