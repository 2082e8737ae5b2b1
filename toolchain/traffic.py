"""Spike traffic of a mapped program: events per neuron, messages between cores, hops, per-core work.

A spike travels once to every core that holds targets of the neuron that
fired, so one message per (spike, destination core); the host's graded
input values count the same way. Hops are Manhattan distances on the mesh
(see ``toolchain.mapping`` for how chips tile it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from toolchain.connectivity import Wiring
from toolchain.ir import INPUT
from toolchain.mapping import HOST_PORT, Core, Mapping, Mesh, Traffic, flat_of_position, position_of_flat

if TYPE_CHECKING:
    from toolchain.program import Program


def spike_counts(program: Program, activity=None) -> dict[str, np.ndarray]:
    """Events per neuron (and per input element) from ``RunResult.activity``; without
    one, every neuron and input element fires once (uniform rates)."""
    names = [INPUT] + [layer.name for layer in program.layers]
    if activity is None:
        return {name: np.ones(int(np.prod(program.shape_of(name)))) for name in names}
    return {name: np.asarray(activity[name].spike_counts, dtype=np.float64).reshape(-1) for name in names}


@dataclass(frozen=True)
class Flow:
    """Spike messages of one synapse connection between pairs of nodes (indices into the
    cores; the host input is the node after the last core). ``senders``: source neurons
    wired across each pair, which is also the messages at uniform rates."""

    source: np.ndarray
    target: np.ndarray
    messages: np.ndarray
    senders: np.ndarray


INTERVAL_CHUNK = 2**22
"""Entries of the dense per-chunk table that sums messages over core intervals."""


def message_flows(program: Program, cores: list[Core], counts: dict[str, np.ndarray]) -> dict[str, Flow]:
    """Per synapse connection (by name), the messages between every pair of wired nodes."""
    host = len(cores)
    by_layer: dict[str, list[int]] = {}
    for i, core in enumerate(cores):
        by_layer.setdefault(core.layer, []).append(i)
    ids = {layer: np.array(index) for layer, index in by_layer.items()}
    starts = {layer: np.array([cores[i].start for i in index]) for layer, index in by_layer.items()}
    columns = {layer: cores[index[0]].by_columns for layer, index in by_layer.items()}
    flows = {}
    for syn in program.synapses:
        wiring = Wiring(syn, program.shape_of(syn.source), program.shape_of(syn.target))
        source, first, last = wiring.destinations(starts[syn.target], columns[syn.target])
        if syn.source == INPUT:
            row, row_ids = np.zeros(source.size, dtype=np.int64), np.array([host])
        else:
            row, row_ids = core_of_neurons(starts[syn.source], program.shape_of(syn.source),
                                           columns[syn.source])[source], ids[syn.source]
            if columns[syn.source]:  # cores by column are not ascending in the flat source order
                ascending = np.argsort(row, kind="stable")
                row, source, first, last = row[ascending], source[ascending], first[ascending], last[ascending]
        pairs = _sum_over_intervals(row, first, last, np.stack([counts[syn.source][source], np.ones(source.size)]),
                                    row_ids.size, ids[syn.target].size)
        rows, columns_found, (messages, senders) = pairs
        flows[syn.name] = Flow(row_ids[rows], ids[syn.target][columns_found], np.maximum(messages, 0.0), senders)
    return flows


def core_of_neurons(starts: np.ndarray, shape: tuple[int, ...], by_columns: bool) -> np.ndarray:
    """Index among its layer's cores of each neuron (by flat index), for cores starting at ``starts``."""
    size = int(np.prod(shape))
    in_order = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, size)))
    return in_order[position_of_flat(shape, by_columns)] if by_columns else in_order


def _sum_over_intervals(row, first, last, weights, n_rows, n_columns):
    """For each (row, column) covered by some interval ``[first, last]`` of its row, the sum of
    each weight vector over the intervals covering it; intervals are never expanded.

    ``row`` must be ascending. Difference tables (+w at ``first``, -w after
    ``last``) summed along columns, a chunk of rows at a time.
    """
    width = n_columns + 1
    rows_per_chunk = max(1, INTERVAL_CHUNK // width)
    edges = np.searchsorted(row, np.arange(0, n_rows + rows_per_chunk, rows_per_chunk))
    found_rows, found_columns, found = [], [], []
    for chunk, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        if lo == hi:
            continue
        top = chunk * rows_per_chunk
        local = (row[lo:hi] - top) * width
        rows_here = min(rows_per_chunk, n_rows - top)
        sums = []
        for w in weights[:, lo:hi]:
            difference = (np.bincount(local + first[lo:hi], w, minlength=rows_here * width)
                          - np.bincount(local + last[lo:hi] + 1, w, minlength=rows_here * width))
            sums.append(np.cumsum(difference.reshape(rows_here, width), axis=1)[:, :n_columns])
        r, c = np.nonzero(sums[-1] > 0.5)  # the last weight vector counts senders: exact integers
        found_rows.append(r + top)
        found_columns.append(c)
        found.append(np.stack([s[r, c] for s in sums]))
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((len(weights), 0))
    return np.concatenate(found_rows), np.concatenate(found_columns), np.concatenate(found, axis=1)


def assess_traffic(flows: dict[str, Flow], gx: np.ndarray, gy: np.ndarray, chip_of: np.ndarray,
                   rates: str) -> Traffic:
    """Where the messages go and how far, for node coordinates (the host port last)."""
    within = between_cores = between_chips = message_hops = 0.0
    max_hops, mean_hops = 0, {}
    for name, flow in flows.items():
        hops = np.abs(gx[flow.source] - gx[flow.target]) + np.abs(gy[flow.source] - gy[flow.target])
        same_core = flow.source == flow.target
        same_chip = chip_of[flow.source] == chip_of[flow.target]
        messages = flow.messages
        within += float(messages[same_core].sum())
        between_cores += float(messages[same_chip & ~same_core].sum())
        between_chips += float(messages[~same_chip].sum())
        message_hops += float(messages @ hops)
        if messages.sum() > 0:
            max_hops = max(max_hops, int(hops[messages > 0].max()))
            mean_hops[name] = float(messages @ hops / messages.sum())
        else:  # a silent connection: its mean at uniform rates
            mean_hops[name] = float(flow.senders @ hops / flow.senders.sum()) if hops.size else 0.0
    return Traffic(rates=rates, within_cores=within, between_cores=between_cores, between_chips=between_chips,
                   message_hops=message_hops, max_hops=max_hops, connection_mean_hops=mean_hops)


def node_coordinates(mesh: Mesh, chip, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global (x, y) and chip of every core, with the host port appended as the last node."""
    gx, gy = mesh.global_xy(chip, x, y)
    return (np.append(gx, HOST_PORT[0]), np.append(gy, HOST_PORT[1]), np.append(np.asarray(chip), 0))


def placed_mapping(chip, mesh: Mesh, cores: list[Core], slots: np.ndarray, flows: dict[str, Flow],
                   rates: str, placement: str) -> Mapping:
    """``cores`` moved to ``slots`` (numbered chip by chip, row-major), with their traffic assessed."""
    chip_index, x, y = mesh.slot_position(slots)
    placed = [replace(core, chip=int(c), x=int(i), y=int(j)) for core, c, i, j in zip(cores, chip_index, x, y)]
    gx, gy, chip_of = node_coordinates(mesh, chip_index, x, y)
    return Mapping(chip=chip.name, mesh=mesh, cores=placed, traffic=assess_traffic(flows, gx, gy, chip_of, rates),
                   placement=placement)


@dataclass
class CoreLoads:
    """Work per core over a run, in the order of ``Mapping.cores``.

    ``synaptic_ops``: arriving events times nonzero synapses (a graded input
    value counts as one event); ``neurons``: updated every time step;
    ``spikes``: updates in which the neuron fired.
    """

    synaptic_ops: np.ndarray
    neurons: np.ndarray
    spikes: np.ndarray


def core_loads(mapping: Mapping, program: Program, activity) -> CoreLoads:
    """Per-core work of ``mapping`` for a run's ``activity`` (``RunResult.activity``)."""
    counts = spike_counts(program, activity)
    synaptic_ops = np.zeros(len(mapping.cores))
    spikes = np.zeros(len(mapping.cores))
    for layer in program.layers:
        index, starts = mapping.layer_cores(layer.name)
        per_neuron = np.zeros(layer.size)
        for syn in program.incoming(layer.name):
            wiring = Wiring(syn, program.shape_of(syn.source), layer.shape)
            per_neuron += wiring.synaptic_ops_per_target(counts[syn.source])
        order = flat_of_position(layer.shape, mapping.cores[index[0]].by_columns)
        synaptic_ops[index] = np.add.reduceat(per_neuron[order], starts)
        spikes[index] = np.add.reduceat(counts[layer.name][order], starts)
    neurons = np.array([c.usage.neurons for c in mapping.cores])
    return CoreLoads(synaptic_ops=synaptic_ops, neurons=neurons, spikes=spikes)
