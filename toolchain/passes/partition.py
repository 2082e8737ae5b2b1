"""Partition pass: split every layer's neurons into cores within each per-core limit.

A core holds a contiguous range of one layer's neurons. Each layer is cut
greedily, every core taking the longest range that stays within the limits
on neurons, synapse memory, fan-in axons and fan-out axons (resource model
in ``toolchain.mapping``). Every one of those only grows with the range, so
the greedy cut uses the fewest cores a contiguous split can. A layer whose
synapses overflow a core's memory thus gets fewer neurons per core, in
proportion to its fan-in synapses.

A neuron's fan-out depends on how its targets are split, so layers are cut
from the output back to the input. A recurrent layer's fan-out depends on
its own cut: it is counted against a trial cut, and the cut is redone
against the union of both until the new cut is no finer than the one it was
counted against (a coarser cut never reaches more cores, so the limits
hold). A neuron that alone breaks a limit gets a core to itself and
``check_fits`` reports it. No random choices: the result is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from toolchain.connectivity import Wiring
from toolchain.errors import UserError
from toolchain.mapping import (USAGE_OF_LIMIT, Core, CoreUsage, Mesh, check_fits, index_bits, message_flows,
                               placed_mapping, spike_counts)

if TYPE_CHECKING:
    from toolchain.program import Program


def partition(program: Program, chip, max_cores: int | None = None, chips: int | None = None) -> Program:
    """The program with a mapping: its layers split into cores, placed in order on as few chips as hold them.

    Raises ``UserError`` (one line: layer, limit, value, excess, what helps)
    when a limit cannot be met or the cores exceed ``max_cores`` or ``chips``.
    """
    cores = split_layers(program, chip)
    mesh = Mesh.of(chip, math.ceil(len(cores) / chip.limit("cores_per_chip")))
    flows = message_flows(program, cores, spike_counts(program))
    mapping = placed_mapping(chip, mesh, cores, np.arange(len(cores)), flows, "uniform", "in-order")
    mapped = replace(program, mapping=mapping)
    violations = check_fits(mapped, chip, max_cores=max_cores, chips=chips)
    if violations:
        more = f" (and {len(violations) - 1} more limits broken)" if len(violations) > 1 else ""
        raise UserError(f"does not fit {chip.name}: {violations[0]}{more}")
    return mapped


def split_layers(program: Program, chip) -> list[Core]:
    """Cores for every layer, in layer order, each positioned at its index (in-order placement)."""
    limits = {limit: chip.limit(limit) for limit in USAGE_OF_LIMIT}
    wirings = {id(syn): Wiring(syn, program.shape_of(syn.source), program.shape_of(syn.target))
               for syn in program.synapses}
    starts, memory, fan_in, fan_out = {}, {}, {}, {}
    for layer in reversed(program.layers):
        incoming = [wirings[id(syn)] for syn in program.incoming(layer.name)]
        outgoing = [syn for syn in program.synapses if syn.source == layer.name]
        memory[layer.name] = sum(wiring.synapses_per_target() * (wiring.synapses.weight_bits + index_bits(chip))
                                 for wiring in incoming)
        fan_in[layer.name] = _fan_in_of(incoming)
        onward = sum((_fan_out_per_neuron(wirings[id(syn)], starts[syn.target], layer.size)
                      for syn in outgoing if not syn.recurrent), np.zeros(layer.size))
        recurrent = [wirings[id(syn)] for syn in outgoing if syn.recurrent]
        cut = _cut(layer.size, memory[layer.name], onward, fan_in[layer.name], limits)
        if recurrent:
            counted_against = cut
            while True:
                sent = onward + _recurrent_fan_out(recurrent, counted_against, layer.size)
                cut = _cut(layer.size, memory[layer.name], sent, fan_in[layer.name], limits)
                if np.isin(cut, counted_against).all():
                    break
                counted_against = np.union1d(counted_against, cut)
        starts[layer.name] = cut
        fan_out[layer.name] = onward + _recurrent_fan_out(recurrent, cut, layer.size)

    cores = []
    mesh = Mesh.of(chip)
    for layer in program.layers:
        cut = starts[layer.name]
        stops = np.append(cut[1:], layer.size)
        stored = np.concatenate([[0], np.cumsum(memory[layer.name])])
        sent = np.concatenate([[0], np.cumsum(fan_out[layer.name])])
        for start, stop in zip(cut.tolist(), stops.tolist()):
            usage = CoreUsage(neurons=stop - start, synapse_memory_bits=int(stored[stop] - stored[start]),
                              fan_in_axons=fan_in[layer.name](start, stop),
                              fan_out_axons=int(sent[stop] - sent[start]))
            chip_index, x, y = (int(v) for v in mesh.slot_position(len(cores)))
            cores.append(Core(layer.name, start, stop, chip_index, x, y, usage))
    return cores


def _fan_in_of(wirings: list[Wiring]):
    return lambda start, stop: sum(w.fan_in(start, stop) for w in wirings)


def _recurrent_fan_out(recurrent: list[Wiring], cut: np.ndarray, size: int) -> np.ndarray:
    return sum((_fan_out_per_neuron(w, cut, size) for w in recurrent), np.zeros(size))


def _fan_out_per_neuron(wiring: Wiring, target_starts: np.ndarray, size: int) -> np.ndarray:
    """Distinct target cores each source neuron reaches through ``wiring``."""
    source, first, last = wiring.destinations(target_starts)
    return np.bincount(source, weights=last - first + 1, minlength=size)


def _cut(size: int, memory: np.ndarray, fan_out: np.ndarray, fan_in, limits: dict) -> np.ndarray:
    """First neuron of each core: greedy longest ranges within every per-core limit."""
    memory_total = np.concatenate([[0], np.cumsum(memory)])
    fan_out_total = np.concatenate([[0], np.cumsum(fan_out)])
    fan_in_limit = limits["fan_in_axons_per_core"]
    starts, start = [], 0
    while start < size:
        stop = min(size, start + limits["neurons_per_core"],
                   int(np.searchsorted(memory_total, memory_total[start] + limits["synapse_memory_bits_per_core"],
                                       side="right")) - 1,
                   int(np.searchsorted(fan_out_total, fan_out_total[start] + limits["fan_out_axons_per_core"],
                                       side="right")) - 1)
        stop = max(stop, start + 1)
        if fan_in(start, stop) > fan_in_limit:  # longest range within the fan-in limit, by bisection
            fits, over = start + 1, stop
            if fan_in(start, fits) > fan_in_limit:
                over = fits
            while over - fits > 1:
                middle = (fits + over) // 2
                if fan_in(start, middle) <= fan_in_limit:
                    fits = middle
                else:
                    over = middle
            stop = fits
        starts.append(start)
        start = stop
    return np.array(starts, dtype=np.int64)
