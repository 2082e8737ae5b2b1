"""Prune pass: remove synapses (unstructured) or whole neurons/channels (structured).

Unstructured magnitude pruning zeroes the smallest weights, per connection or
globally; zero synapses cost no energy and no synapse memory. Structured
pruning removes whole output units (neurons of a dense layer, channels of a
convolutional layer) ranked by the L1 norm of their incoming weights, by their
activity on a calibration run, or by how much of the next layers' input the
kept units cannot reconstruct without them (``redundancy``), and really
shrinks the graph: the population loses those neurons, their incoming rows and
outgoing columns disappear. A calibration run lets the removed units' drive be
folded into what stays: ``mean`` compensation adds their mean drive to the
receiving neurons' biases; ``regression`` compensation refits each outgoing
connection's kept weights and bias by ridge least squares so that, on the
calibration run, the kept inputs reproduce the input current the whole layer
gave every receiving neuron (the reconstruction step of channel pruning, He et
al. ICCV 2017, in closed form from one Gram matrix per connection). The output
layer is never pruned structurally (it is the classes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import torch

from toolchain.errors import UserError
from toolchain.ir import Connection, Graph, Population
from toolchain.synaptic import accumulate, patches

# Default ridge of the least-squares fits, as a share of the mean input energy (the Gram
# matrix's diagonal). On the Fashion-MNIST CSNN's validation split 0.1 to 3 pruned equally well.
RIDGE = 0.3
Method = Literal["structured", "magnitude", "global-magnitude"]
Rank = Literal["l1", "activity", "redundancy"]
Compensation = Literal["regression", "mean", "none"]
METHODS, RANKS, COMPENSATIONS = get_args(Method), get_args(Rank), get_args(Compensation)


@dataclass(frozen=True)
class PruneOptions:
    """``ratio``: fraction removed, in [0, 1). ``method``: "magnitude" (unstructured,
    per connection), "global-magnitude" (unstructured, one threshold for the
    network) or "structured". ``rank``: how structured pruning orders units,
    "l1" (incoming weight norm), "activity" (spikes on a calibration run) or
    "redundancy" (the input current the next layers lose when the unit goes and
    the rest of its layer is refitted). ``compensation`` of what the removed
    units gave the next layers (needs calibration statistics): "mean",
    "regression" or "none". ``ridge``: regularisation of the least-squares fits,
    as a share of the mean input energy."""

    ratio: float
    method: Method = "structured"
    rank: Rank = "l1"
    compensation: Compensation = "none"
    ridge: float = RIDGE

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"unknown pruning method {self.method!r}; use {', '.join(METHODS)}")
        if self.rank not in RANKS:
            raise UserError(f"unknown pruning rank {self.rank!r}; use {', '.join(RANKS)}")
        if self.compensation not in COMPENSATIONS:
            raise UserError(f"unknown pruning compensation {self.compensation!r}; use {', '.join(COMPENSATIONS)}")
        if not self.ridge > 0:  # zero leaves the fit singular whenever a kept unit never fired
            raise UserError(f"pruning ridge {self.ridge:g} must be positive")


CALIBRATED = PruneOptions(0.0, "structured", "redundancy", "regression")
"""The recipe when calibration data is at hand (the command line's default); ``PruneOptions``'s own
defaults are the one that needs none."""


@dataclass
class Calibration:
    """Activity of a calibration run of the graph being pruned. ``rates``: mean spikes
    per neuron per step, per population (and the input's mean value). ``gram``: per
    connection (source, target) leaving a prunable population, the Gram matrix of what
    its weights multiply (``patches``, then a constant 1), summed over samples, steps
    and output positions: every least-squares fit of the pass needs only this."""

    rates: dict[str, np.ndarray]
    gram: dict[tuple[str, str], np.ndarray] | None = None


def check_ratio(ratio: float, name: str = "pruning ratio") -> None:
    if not 0 <= ratio < 1:
        raise UserError(f"{name} {ratio:g} is out of range: it must be in [0, 1)")


def needs_calibration(options: PruneOptions) -> bool:
    """Whether ``options`` read a calibration run (ranking by activity or redundancy, or
    compensation of structured pruning)."""
    return options.method == "structured" and (options.rank != "l1" or options.compensation != "none")


def needs_gram(options: PruneOptions) -> bool:
    """Whether ``options`` read the calibration's Gram matrices."""
    return options.method == "structured" and (options.rank == "redundancy" or options.compensation == "regression")


def prune(graph: Graph, options: PruneOptions, calibration: Calibration | None = None) -> Graph:
    """Return a pruned copy of ``graph``. ``calibration`` is needed for ranking by activity or
    redundancy and for compensation; with it, structured pruning compensates as
    ``options.compensation`` says."""
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
    if needs_calibration(options) and calibration is None:
        raise UserError(f"structured pruning ranked by {options.rank} with {options.compensation} compensation "
                        "needs a calibration run")
    if needs_gram(options) and calibration.gram is None:
        raise UserError("regression compensation and redundancy ranking need the calibration's Gram matrices")
    return _prune_units(graph, options, calibration)


def _with_connections(graph: Graph, connections: list[Connection]) -> Graph:
    return graph.replace(connections=connections)


def _zero_smallest(conn: Connection, ratio: float) -> Connection:
    cut = np.quantile(np.abs(conn.weight), ratio)
    return replace(conn, weight=np.where(np.abs(conn.weight) <= cut, 0.0, conn.weight))


def prunable(graph: Graph) -> list[str]:
    """Populations structured pruning thins: all but the output."""
    return [p.name for p in graph.populations if p.name != graph.output]


class GramAccumulator:
    """Gram matrix of a connection's inputs (patches and a constant 1) from spike trains seen
    batch by batch."""

    def __init__(self, graph: Graph, conn: Connection, chunk_elements: int = 2 ** 24):
        self.conn, self.in_shape = conn, graph.shape_of(conn.source)
        positions = graph.population(conn.target).size // conn.weight.shape[0] if conn.kind == "conv" else 1
        features = int(np.prod(conn.weight.shape[1:]))
        self.gram = np.zeros((features + 1, features + 1))
        self.frames_per_chunk = max(1, chunk_elements // (positions * features))  # bounds the patch matrix

    def add(self, trains: np.ndarray) -> None:
        """``trains``: (samples, steps, neurons) spikes of the connection's source."""
        frames = torch.as_tensor(np.asarray(trains, dtype=np.float32).reshape(-1, trains.shape[-1]))
        for start in range(0, len(frames), self.frames_per_chunk):
            x = patches(self.conn.kind, frames[start:start + self.frames_per_chunk], self.in_shape,
                        self.conn.weight.shape[2:], self.conn.stride, self.conn.padding)
            x = torch.cat([x, torch.ones(len(x), 1)], dim=1)
            self.gram += (x.T @ x).double().numpy()


def unit_scores(graph: Graph, pop: Population, options: PruneOptions, calibration: Calibration | None) -> np.ndarray:
    """Per unit of ``pop``, how much it matters by ``options.rank``: the lowest go first."""
    convolutional, units = _convolutional(graph, pop.name), unit_count(graph, pop.name)
    if options.rank == "activity":
        per_neuron = np.asarray(calibration.rates[pop.name], dtype=np.float64)
        return per_neuron.reshape(units, -1).sum(axis=1)
    if options.rank == "redundancy":
        return _reconstruction_loss(graph, pop, units, calibration, options.ridge)
    score = np.zeros(units)
    for conn in graph.incoming(pop.name):
        if conn.recurrent:
            continue
        w = np.abs(conn.weight).reshape(conn.weight.shape[0], -1).sum(axis=1)
        score += w if conn.kind == "conv" or not convolutional else w.reshape(units, -1).sum(axis=1)
    return score


def _prune_units(graph: Graph, options: PruneOptions, calibration: Calibration | None) -> Graph:
    removed = {}
    for name in prunable(graph):
        units = unit_count(graph, name)
        count = removal_count(name, units, options.ratio)
        scores = unit_scores(graph, graph.population(name), options, calibration)
        removed[name] = np.argsort(scores, kind="stable")[:count]
    return remove_units(graph, removed, options, calibration)


def _convolutional(graph: Graph, name: str) -> bool:
    return any(c.kind == "conv" for c in graph.incoming(name))


def unit_count(graph: Graph, name: str) -> int:
    """Units structured pruning removes from a population: channels of a convolution's output,
    otherwise neurons."""
    pop = graph.population(name)
    return pop.shape[0] if _convolutional(graph, name) else pop.size


def removal_count(name: str, units: int, ratio: float) -> int:
    removed = int(round(ratio * units))
    if removed >= units:
        raise UserError(f"pruning {ratio:g} would remove every unit of layer {name}")
    return removed


def remove_units(graph: Graph, removed: dict[str, np.ndarray], options: PruneOptions,
                 calibration: Calibration | None = None) -> Graph:
    """``graph`` without the given units (population -> unit indices); what they gave the next
    layers is compensated from ``calibration`` as ``options.compensation`` says."""
    if options.compensation != "none" and calibration is None:
        raise UserError(f"{options.compensation} compensation needs a calibration run")
    removed = {name: gone for name, gone in removed.items() if len(gone)}
    units = {name: unit_count(graph, name) for name in removed}
    kept_channels = {name: np.setdiff1d(np.arange(units[name]), gone) for name, gone in removed.items()}
    keep = {}  # population -> kept neuron indices (flattened)
    for name, kept_units in kept_channels.items():
        per_unit = graph.population(name).size // units[name]
        keep[name] = (kept_units[:, None] * per_unit + np.arange(per_unit)).ravel()
    if options.compensation != "none":
        graph = _fold_removed(graph, kept_channels, units, calibration, options)
    populations = []
    for pop in graph.populations:
        if pop.name not in keep:
            populations.append(pop)
            continue
        kept = keep[pop.name]
        shape = (len(kept_channels[pop.name]),) + pop.shape[1:] if _convolutional(graph, pop.name) else (len(kept),)
        populations.append(replace(pop, shape=shape, alpha=pop.alpha[kept], beta=pop.beta[kept],
                                   threshold=pop.threshold[kept], bias=pop.bias[kept],
                                   current_bias=pop.current_bias[kept]))
    connections = [_slice_connection(graph, c, keep) for c in graph.connections]
    return graph.replace(populations=populations, connections=connections)


def _regularised(gram: np.ndarray, share: float) -> np.ndarray:
    """``gram`` plus the ridge on every input but the trailing constant."""
    ridge = share * max(float(np.mean(np.diag(gram)[:-1])), 1e-12)
    return gram + np.diag(np.r_[np.full(len(gram) - 1, ridge), 0.0])


def _weights_with_bias(conn: Connection) -> np.ndarray:
    """(outputs, inputs + 1): the weights as they multiply a patch, a zero for the constant."""
    w = np.asarray(conn.weight, dtype=np.float64).reshape(conn.weight.shape[0], -1)
    return np.hstack([w, np.zeros((len(w), 1))])


def _reconstruction_loss(graph: Graph, pop: Population, units: int, calibration: Calibration,
                         ridge: float) -> np.ndarray:
    """Per unit: the squared input-current error its removal leaves in every receiving neuron
    after the other inputs are refitted by least squares (for a group g of inputs with
    fitted weights B and inverse regularised Gram H: ``tr(B_g' H_gg^-1 B_g)``)."""
    loss = np.zeros(units)
    for conn in graph.outgoing(pop.name):
        gram = calibration.gram[(conn.source, conn.target)]
        inverse = np.linalg.inv(_regularised(gram, ridge))
        fitted = inverse @ gram @ _weights_with_bias(conn).T
        for unit, inputs in enumerate(_inputs_of_units(conn, units)):
            b = fitted[inputs]
            loss[unit] += np.trace(b.T @ np.linalg.solve(inverse[np.ix_(inputs, inputs)], b))
    return loss


def _inputs_of_units(conn: Connection, units: int) -> np.ndarray:
    """(units, inputs per unit): a connection's input indices (in patch order) owned by each
    unit of its source (a channel's kernel taps, or a dense source's neurons)."""
    return np.arange(int(np.prod(conn.weight.shape[1:]))).reshape(units, -1)


def _fold_removed(graph: Graph, kept_channels: dict[str, np.ndarray], units: dict[str, int],
                  calibration: Calibration, options: PruneOptions) -> Graph:
    """Fold what the removed units gave each receiving neuron into what stays (weights and
    biases still full size): their mean drive into the biases (per neuron, so a convolution's
    borders get their own), or, with ``regression``, the least-squares refit of the kept
    weights and a bias per receiving unit."""
    extra = {pop.name: np.zeros(pop.size) for pop in graph.populations}
    connections = []
    for conn in graph.connections:
        if conn.source not in kept_channels:
            connections.append(conn)
            continue
        n_units, kept = units[conn.source], kept_channels[conn.source]
        removed = np.setdiff1d(np.arange(n_units), kept)
        w = np.array(conn.weight, dtype=np.float64)
        if options.compensation == "regression":
            w, bias = _refit(conn, w, n_units, kept, removed, calibration.gram[(conn.source, conn.target)],
                             options.ridge)
            extra[conn.target] += np.repeat(bias, graph.population(conn.target).size // len(bias))
        else:
            means = np.asarray(calibration.rates[conn.source], dtype=np.float64).reshape(n_units, -1)[removed]
            if conn.kind == "dense":
                w_removed, in_shape = w[:, _inputs_of_units(conn, n_units)[removed].ravel()], (means.size,)
            else:
                w_removed, in_shape = w[:, removed], (len(removed),) + tuple(graph.shape_of(conn.source)[1:])
            extra[conn.target] += accumulate(conn.kind, torch.as_tensor(w_removed), torch.as_tensor(means.reshape(1, -1)),
                                             in_shape, conn.stride, conn.padding).numpy().reshape(-1)
        connections.append(replace(conn, weight=w))
    populations = [_with_mean_drive(p, extra[p.name]) if extra[p.name].any() else p for p in graph.populations]
    return graph.replace(populations=populations, connections=connections)


def _with_mean_drive(pop: Population, drive: np.ndarray) -> Population:
    """``pop`` with a constant input ``drive`` added where the input enters: the synaptic current
    of neurons that have one (alpha > 0), else the membrane (the same thing when alpha = 0)."""
    synaptic = pop.alpha > 0
    return replace(pop, bias=pop.bias + np.where(synaptic, 0.0, drive),
                   current_bias=pop.current_bias + np.where(synaptic, drive, 0.0))


def _refit(conn: Connection, w: np.ndarray, units: int, kept: np.ndarray, removed: np.ndarray,
           gram: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Kept weights plus the ridge least-squares prediction, from the kept inputs and a
    constant, of what the removed inputs gave each output (``G_kk^-1 G_kr W_r'``)."""
    inputs = _inputs_of_units(conn, units)
    kept_inputs = np.r_[inputs[kept].ravel(), len(gram) - 1]
    removed_inputs = inputs[removed].ravel()
    flat = w.reshape(len(w), -1)
    delta = np.linalg.solve(_regularised(gram[np.ix_(kept_inputs, kept_inputs)], ridge),
                            gram[np.ix_(kept_inputs, removed_inputs)] @ flat[:, removed_inputs].T)
    flat[:, kept_inputs[:-1]] += delta[:-1].T
    return flat.reshape(w.shape), delta[-1]


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
