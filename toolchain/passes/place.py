"""Place pass: put a partitioned program's cores on the mesh so spikes travel few hops.

The cost is spike traffic times hops: for every pair of cores, the messages
one sends the other (``toolchain.mapping``: one per spike per destination
core, counted from a calibration run's activity, or at uniform rates
without one) times their Manhattan distance on the mesh of all chips used.
Cores use as few chips as hold them.

Algorithm, on the graph of cores weighted by messages both ways:

1. Spectral start: the two leading nontrivial eigenvectors of the
   normalised traffic graph give every core a 2-D coordinate in which busy
   partners lie close. Cores sorted by the first fill the mesh column by
   column, each column sorted by the second. The cheaper of this and the
   in-order placement is kept.
2. Refinement sweeps, busiest core first: move the core to the weighted
   median position of its partners (the point minimising its own traffic x
   hops under the Manhattan metric), swapping with that slot's occupant or
   one of its four neighbours, whichever lowers the total cost most, if any
   does. Sweeps stop after ``sweeps`` or when one gains less than
   ``min_gain`` of the cost.

No step raises the cost, so the result never costs more than the in-order
placement. The seed fixes the eigensolver's start vector and the order of
cores of equal traffic: the same seed gives the same placement.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

from toolchain.errors import UserError
from toolchain.mapping import HOST_PORT, Mesh
from toolchain.traffic import Flow, message_flows, placed_mapping, spike_counts

if TYPE_CHECKING:
    from toolchain.program import Program

NEIGHBOURS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
DENSE_EIGEN_LIMIT = 400
"""Graphs up to this many nodes use a dense eigendecomposition: faster there, and the sparse
solver needs more nodes than eigenvectors."""


def place(program: Program, chip, activity=None, seed: int = 0, sweeps: int = 4, min_gain: float = 1e-3) -> Program:
    """The program with its cores placed to reduce traffic x hops; ``activity``:
    ``RunResult.activity`` of a calibration run (None: uniform rates)."""
    cores, mesh, flows, rates = _prepare(program, chip, activity)
    slots = traffic_aware_slots(flows, len(cores), mesh, seed=seed, sweeps=sweeps, min_gain=min_gain)
    mapping = placed_mapping(chip, mesh, cores, slots, flows, rates, f"traffic-aware (seed {seed})")
    return replace(program, mapping=mapping)


def place_in_order(program: Program, chip, activity=None) -> Program:
    """The naive placement, for comparison: cores in layer order, row-major, chip by chip."""
    cores, mesh, flows, rates = _prepare(program, chip, activity)
    mapping = placed_mapping(chip, mesh, cores, np.arange(len(cores)), flows, rates, "in-order")
    return replace(program, mapping=mapping)


def _prepare(program: Program, chip, activity):
    if program.mapping is None:
        raise UserError("the program has no cores to place yet: run the partition pass first")
    cores = program.mapping.cores
    mesh = Mesh.of(chip, math.ceil(len(cores) / chip.limit("cores_per_chip")))
    flows = message_flows(program, cores, spike_counts(program, activity))
    return cores, mesh, flows, "uniform" if activity is None else "calibration"


def traffic_aware_slots(flows: dict[str, Flow], n_cores: int, mesh: Mesh, seed: int = 0, sweeps: int = 4,
                        min_gain: float = 1e-3) -> np.ndarray:
    """A slot (numbered chip by chip, row-major) for every core; the host port is node ``n_cores``."""
    chips = math.ceil(n_cores / mesh.cores_per_chip)
    slot_x, slot_y = mesh.global_xy(*mesh.slot_position(np.arange(chips * mesh.cores_per_chip)))
    nodes = n_cores + 1
    messages = sp.coo_matrix((np.concatenate([f.messages for f in flows.values()]),
                              (np.concatenate([f.source for f in flows.values()]),
                               np.concatenate([f.target for f in flows.values()]))), shape=(nodes, nodes)).tocsr()
    partners = (messages + messages.T).tocsr()
    partners.setdiag(0)
    partners.eliminate_zeros()
    if partners.nnz == 0:  # no traffic between cores: every placement costs nothing
        return np.arange(n_cores)

    def cost(slots):
        x, y = np.append(slot_x[slots], HOST_PORT[0]), np.append(slot_y[slots], HOST_PORT[1])
        m = messages.tocoo()
        return float(m.data @ (np.abs(x[m.row] - x[m.col]) + np.abs(y[m.row] - y[m.col])))

    rng = np.random.default_rng(seed)
    in_order = np.arange(n_cores)
    spectral = _spectral_slots(partners, n_cores, slot_x, slot_y, rng)
    start = min((in_order, spectral), key=cost)
    return _refine(start, partners, n_cores, slot_x, slot_y, cost(start), rng, sweeps, min_gain)


def _spectral_slots(partners: sp.csr_matrix, n_cores: int, slot_x: np.ndarray, slot_y: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """Slots from a 2-D spectral embedding of the traffic graph, column by column of the mesh."""
    degree = np.asarray(partners.sum(axis=1)).ravel()
    scale = sp.diags(1 / np.sqrt(np.maximum(degree, 1e-300)) * (degree > 0))
    normalised = scale @ partners @ scale
    if partners.shape[0] <= DENSE_EIGEN_LIMIT:
        values, vectors = np.linalg.eigh(normalised.toarray())
    else:
        try:
            values, vectors = eigsh(normalised, k=3, which="LA", v0=rng.standard_normal(partners.shape[0]), tol=1e-4)
        except ArpackNoConvergence:  # no embedding: the in-order start is used
            return np.arange(n_cores)
    leading = np.argsort(-values, kind="stable")[1:3]
    embedding = (scale @ vectors[:, leading])[:n_cores]
    if embedding.shape[1] < 2:
        return np.arange(n_cores)
    by_first = np.argsort(embedding[:, 0], kind="stable")
    slots_by_column = np.lexsort((slot_y, slot_x))
    slots = np.empty(n_cores, dtype=np.int64)
    edges = np.concatenate([[0], np.cumsum(np.bincount(slot_x))])
    for lo, hi in zip(edges[:-1], edges[1:]):
        column = by_first[lo:min(hi, n_cores)]
        if column.size == 0:
            break
        slots[column[np.argsort(embedding[column, 1], kind="stable")]] = slots_by_column[lo:lo + column.size]
    return slots


def _refine(slots: np.ndarray, partners: sp.csr_matrix, n_cores: int, slot_x: np.ndarray, slot_y: np.ndarray,
            current: float, rng: np.random.Generator, sweeps: int, min_gain: float) -> np.ndarray:
    """Weighted-median swap sweeps (module docstring, step 2); only improving swaps are made."""
    indptr, neighbour, weight = partners.indptr, partners.indices, partners.data
    # slot at each global position, with a border of -1 so neighbours of edge slots need no checks
    slot_at = -np.ones((slot_y.max() + 3, slot_x.max() + 3), dtype=np.int64)
    slot_at[slot_y + 1, slot_x + 1] = np.arange(slot_x.size)
    step_x, step_y = np.array(NEIGHBOURS).T
    slot_of = slots.copy()
    occupant = np.full(slot_x.size, -1)
    occupant[slot_of] = np.arange(n_cores)
    x = np.append(slot_x[slot_of], HOST_PORT[0]).astype(np.int64)
    y = np.append(slot_y[slot_of], HOST_PORT[1]).astype(np.int64)

    strength = np.asarray(partners[:n_cores].sum(axis=1)).ravel()
    order = np.lexsort((rng.permutation(n_cores), -strength))
    order = order[strength[order] > 0]
    for _ in range(sweeps):
        before = current
        for a in order.tolist():
            nbr, w = neighbour[indptr[a]:indptr[a + 1]], weight[indptr[a]:indptr[a + 1]]
            nx, ny, ax, ay = x[nbr], y[nbr], x[a], y[a]
            candidates = slot_at[_weighted_median(ny, w) + 1 + step_y, _weighted_median(nx, w) + 1 + step_x]
            candidates = candidates[(candidates >= 0) & (candidates != slot_of[a])]
            if candidates.size == 0:
                continue
            sx, sy = slot_x[candidates], slot_y[candidates]
            moved = (np.abs(nx[None, :] - sx[:, None]) + np.abs(ny[None, :] - sy[:, None])) @ w
            delta = moved - float(w @ (np.abs(nx - ax) + np.abs(ny - ay)))
            best, best_delta = -1, -1e-9 * max(current, 1.0)
            for k in np.flatnonzero(delta < 0).tolist():  # only moves that help a itself
                d, b = float(delta[k]), occupant[candidates[k]]
                if b >= 0:
                    nb, wb = neighbour[indptr[b]:indptr[b + 1]], weight[indptr[b]:indptr[b + 1]]
                    d += float(wb @ (np.abs(x[nb] - ax) + np.abs(y[nb] - ay)
                                     - np.abs(x[nb] - sx[k]) - np.abs(y[nb] - sy[k])))
                    # the a-b link keeps its length; both sums above counted it as changing
                    d += 2 * float(w[nbr == b].sum()) * (abs(int(sx[k]) - ax) + abs(int(sy[k]) - ay))
                if d < best_delta:
                    best, best_delta = int(candidates[k]), d
            if best >= 0:
                b, old = occupant[best], slot_of[a]
                occupant[old], occupant[best] = b, a
                slot_of[a] = best
                x[a], y[a] = slot_x[best], slot_y[best]
                if b >= 0:
                    slot_of[b] = old
                    x[b], y[b] = slot_x[old], slot_y[old]
                current += best_delta
        if before - current <= min_gain * before:
            break
    return slot_of


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> int:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return int(values[order[np.searchsorted(cumulative, cumulative[-1] / 2)]])
