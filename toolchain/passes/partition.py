"""Partition pass: split every layer's neurons into cores within each per-core limit.

The resource model is in ``toolchain.mapping``; the constants are the chip
spec's. Two ways to cut a layer, both deterministic:

- By columns, as Loihi 2's compiler tiles a convolution's output: a core
  holds every channel and row of a power-of-two number of columns, the
  widest tile under ``conv_tile_neurons_below`` neurons (the shared kernel
  is stored once per core). A tile whose neurons would reach too many cores
  is halved. Used for every layer of shape (C, H, W) fed only by
  convolutions and not recurrent, when a single column, its kernel and its
  axons fit a core.
- Flat: contiguous ranges of the layer's neurons, each the longest within
  every limit (neurons and the tile size, synapse memory, fan-in and fan-out
  axons). Every one of those only grows with the range, so the greedy cut
  uses the fewest cores a contiguous split can.

A neuron's fan-out depends on how its targets are split, so layers are cut
from the output back to the input. A recurrent layer's fan-out depends on
its own cut: it is counted against a trial cut, and the cut is redone
against the union of both until the new cut is no finer than the one it was
counted against (a coarser cut never reaches more cores, so the limits
hold). A neuron that alone breaks a limit gets a core to itself and
``check_fits`` reports it. Every core records the limit that ended it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from toolchain.connectivity import Wiring
from toolchain.drc import check_fits, raise_if_any
from toolchain.mapping import USAGE_OF_LIMIT, Core, CoreUsage, Mapping, Mesh, index_bits
from toolchain.traffic import message_flows, placed_mapping, spike_counts

if TYPE_CHECKING:
    from toolchain.program import Layer, Program


def partition(program: Program, chip, max_cores: int | None = None, chips: int | None = None) -> Program:
    """The program with a mapping: its layers split into cores, placed in order on as few chips as hold them.

    Raises ``UserError`` (one line: layer, limit, value, excess, what helps)
    when a limit cannot be met or the cores exceed ``max_cores`` or ``chips``.
    """
    mapping = map_in_order(program, chip)
    raise_if_any(check_fits(mapping, chip, max_cores=max_cores, chips=chips), f"does not fit {chip.name}")
    return replace(program, mapping=mapping)


def map_in_order(program: Program, chip) -> Mapping:
    """The in-order mapping of ``program`` on as few chips as hold it, whether or not it fits."""
    cores = split_layers(program, chip)
    mesh = Mesh.of(chip, math.ceil(len(cores) / chip.limit("cores_per_chip")))
    flows = message_flows(program, cores, spike_counts(program))
    return placed_mapping(chip, mesh, cores, np.arange(len(cores)), flows, "uniform", "in-order")


@dataclass
class _Plan:
    """A layer's cut: first position of each core in the layer's order, why each ends, what each uses."""

    by_columns: bool
    starts: np.ndarray
    reasons: list[str]
    usages: list[CoreUsage]


def tile_neurons(shape: tuple[int, ...], chip) -> int:
    """Most neurons of a layer of ``shape`` on one core: a convolution's widest tile of whole
    columns (a power of two of them) under the chip's tile limit, or the neuron limit."""
    below, most = chip.limit("conv_tile_neurons_below"), chip.limit("neurons_per_core")
    if len(shape) != 3:
        return most
    column = shape[0] * shape[1]
    if column >= below:
        return min(below - 1, most)
    width = 2 ** int(math.floor(math.log2((below - 1) // column)))
    return min(column * width, most)


def split_layers(program: Program, chip) -> list[Core]:
    """Cores for every layer, in layer order, each positioned at its index (in-order placement)."""
    limits = {limit: chip.limit(limit) for limit in USAGE_OF_LIMIT}
    store = _Storage(index_bits(chip), chip.limit("dense_synapse_extra_bits"))
    wirings = {id(syn): Wiring(syn, program.shape_of(syn.source), program.shape_of(syn.target))
               for syn in program.synapses}
    plans: dict[str, _Plan] = {}
    for layer in reversed(program.layers):
        incoming = [wirings[id(syn)] for syn in program.incoming(layer.name)]
        outgoing = [syn for syn in program.synapses if syn.source == layer.name]
        onward = sum((_fan_out_per_neuron(wirings[id(syn)], plans[syn.target], layer.size)
                      for syn in outgoing if not syn.recurrent), np.zeros(layer.size))
        recurrent = [wirings[id(syn)] for syn in outgoing if syn.recurrent]
        plan = None if recurrent else _column_plan(layer, incoming, onward, store, limits, chip)
        if plan is None:
            plan = _flat_plan(layer, incoming, onward, recurrent, store, limits, tile_neurons(layer.shape, chip))
        plans[layer.name] = plan

    cores = []
    mesh = Mesh.of(chip)
    for layer in program.layers:
        plan = plans[layer.name]
        stops = np.append(plan.starts[1:], layer.size)
        for start, stop, reason, usage in zip(plan.starts.tolist(), stops.tolist(), plan.reasons, plan.usages):
            chip_index, x, y = (int(v) for v in mesh.slot_position(len(cores)))
            cores.append(Core(layer.name, start, stop, chip_index, x, y, usage, plan.by_columns, reason))
    return cores


class _Storage:
    """Synapse memory and fan-in axons of a range of a layer's neurons (``toolchain.mapping``'s model)."""

    def __init__(self, index_bits: int, dense_extra_bits: int):
        self.index_bits, self.dense_extra_bits = index_bits, dense_extra_bits

    def memory_bits(self, wiring: Wiring, start: int, stop: int) -> int:
        """The cheapest encoding's bits for the synapses onto flat neurons [start, stop)."""
        bits = wiring.synapses.weight_bits
        if wiring.synapses.kind == "conv":
            plane = wiring.target_size // wiring.synapses.weights.shape[0]
            per_channel = wiring.kernel_nonzero_per_channel()
            return int(per_channel[start // plane:(stop - 1) // plane + 1].sum()) * bits
        indptr = wiring.by_target.indptr
        nonzero = int(indptr[stop] - indptr[start])
        if nonzero == 0:
            return 0
        sparse = nonzero * (bits + self.index_bits)
        dense = wiring.fan_in(start, stop) * (stop - start) * (bits + self.dense_extra_bits)
        return min(sparse, dense)

    @staticmethod
    def axons_in(wiring: Wiring, start: int, stop: int) -> int:
        if wiring.synapses.kind == "conv":
            return 0 if wiring.empty else int(wiring.synapses.stride[1])
        return wiring.fan_in(start, stop)


def _column_plan(layer: Layer, incoming: list[Wiring], fan_out: np.ndarray, store: _Storage, limits: dict,
                 chip) -> _Plan | None:
    """Tiles of whole columns, or None where the layer cannot be tiled so (see the module docstring)."""
    if len(layer.shape) != 3 or not incoming or any(w.synapses.kind != "conv" for w in incoming):
        return None
    channels, rows, width = layer.shape
    column = channels * rows
    tile = tile_neurons(layer.shape, chip) // column
    memory = sum(store.memory_bits(w, 0, layer.size) for w in incoming)
    axons = sum(store.axons_in(w, 0, layer.size) for w in incoming)
    if tile < 1 or memory > limits["synapse_memory_bits_per_core"] or axons > limits["fan_in_axons_per_core"]:
        return None
    per_column = np.concatenate([[0], np.cumsum(fan_out.reshape(layer.shape).sum(axis=(0, 1)))])
    starts, reasons, usages = [], [], []
    first = 0
    while first < width:
        span, reason = tile, "conv_tile_neurons_below"
        while per_column[min(first + span, width)] - per_column[first] > limits["fan_out_axons_per_core"]:
            if span == 1:
                return None
            span, reason = span // 2, "fan_out_axons_per_core"
        last = min(first + span, width)
        if last == width and reason == "conv_tile_neurons_below":
            reason = "layer end"
        starts.append(first * column)
        reasons.append(reason)
        usages.append(CoreUsage(neurons=(last - first) * column, synapse_memory_bits=memory, fan_in_axons=axons,
                                fan_out_axons=int(per_column[last] - per_column[first])))
        first = last
    return _Plan(True, np.array(starts, dtype=np.int64), reasons, usages)


def _flat_plan(layer: Layer, incoming: list[Wiring], onward: np.ndarray, recurrent: list[Wiring],
               store: _Storage, limits: dict, most: int) -> _Plan:
    """Greedy contiguous ranges (see the module docstring), recurrent fan-out settled by iteration."""
    def memory(start, stop):
        return sum(store.memory_bits(w, start, stop) for w in incoming)

    def fan_in(start, stop):
        return sum(store.axons_in(w, start, stop) for w in incoming)

    cap = (most, "neurons_per_core" if most == limits["neurons_per_core"] else "conv_tile_neurons_below")
    flat = _Plan(False, np.zeros(1, dtype=np.int64), [], [])
    cut, reasons = _cut(layer.size, cap, onward, memory, fan_in, limits)
    if recurrent:
        counted_against = cut
        while True:
            flat.starts = counted_against
            sent = onward + sum(_fan_out_per_neuron(w, flat, layer.size) for w in recurrent)
            cut, reasons = _cut(layer.size, cap, sent, memory, fan_in, limits)
            if np.isin(cut, counted_against).all():
                break
            counted_against = np.union1d(counted_against, cut)
    flat.starts = cut
    fan_out = onward + sum((_fan_out_per_neuron(w, flat, layer.size) for w in recurrent), np.zeros(layer.size))
    sent = np.concatenate([[0], np.cumsum(fan_out)])
    stops = np.append(cut[1:], layer.size)
    flat.reasons = reasons
    flat.usages = [CoreUsage(neurons=stop - start, synapse_memory_bits=memory(start, stop),
                             fan_in_axons=fan_in(start, stop), fan_out_axons=int(sent[stop] - sent[start]))
                   for start, stop in zip(cut.tolist(), stops.tolist())]
    return flat


def _fan_out_per_neuron(wiring: Wiring, target: _Plan, size: int) -> np.ndarray:
    """Distinct target cores each source neuron reaches through ``wiring``."""
    source, first, last = wiring.destinations(target.starts, target.by_columns)
    return np.bincount(source, weights=last - first + 1, minlength=size)


def _cut(size: int, cap: tuple[int, str], fan_out: np.ndarray, memory, fan_in,
         limits: dict) -> tuple[np.ndarray, list[str]]:
    """First neuron of each core and the limit that ended it: greedy longest ranges within every limit."""
    fan_out_total = np.concatenate([[0], np.cumsum(fan_out)])
    most, cap_reason = cap
    starts, reasons, start = [], [], 0
    while start < size:
        bounds = {"layer end": size, cap_reason: start + most,
                  "fan_out_axons_per_core": int(np.searchsorted(
                      fan_out_total, fan_out_total[start] + limits["fan_out_axons_per_core"], side="right")) - 1}
        reason = min(bounds, key=bounds.get)
        stop = max(bounds[reason], start + 1)
        for limit, used in (("synapse_memory_bits_per_core", memory), ("fan_in_axons_per_core", fan_in)):
            if stop > start + 1 and used(start, stop) > limits[limit]:
                fits, over = start + 1, stop  # the longest range within this limit, by bisection
                while over - fits > 1:
                    middle = (fits + over) // 2
                    if used(start, middle) <= limits[limit]:
                        fits = middle
                    else:
                        over = middle
                stop, reason = fits, limit
        starts.append(start)
        reasons.append(reason)
        start = stop
    return np.array(starts, dtype=np.int64), reasons
