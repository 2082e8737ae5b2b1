"""Lowering a layered float graph onto one Xylo core: quantize -> map -> design-rule check.

``passes`` is what the compile flow asks a chip's ``lowering`` module for.

quantize: each population's decays become bit shifts (``dash``; decay =
1 - 2^-dash) chosen as Rockpool does (``round(log2(tau / dt))``), with the
error reported per layer; weights become ``bits``-bit integers with one
left shift per matrix, thresholds and biases 16-bit integers. Every neuron
has its own scale (its weights, threshold and bias together, as Rockpool's
``channel_quantize``): a spike does not depend on it. Xylo adds a step's
input to ``Isyn`` before decaying it, and a synapse-less float neuron gets Xylo's shortest current
decay: the weights carry the factor that keeps a held input's steady-state current.

map: as Rockpool's mapper, hidden populations take consecutive hidden ids;
input weights go to the input matrix, every connection between hidden
populations (recurrent ones included) into one block of the recurrent
matrix, the last population to the output neurons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from targets.xylo.drc import check_fits, title
from targets.xylo.program import OUTPUT, LayerSlot, XyloProgram
from toolchain.errors import UserError
from toolchain.ir import INPUT, Graph
from toolchain.passes.pipeline import CompilerPass, Context

THRESHOLD_MAX = 2**15 - 1
HEADROOM = 4
"""Thresholds and biases are scaled to at most 1/HEADROOM of the 16-bit state, so a membrane can
go a few thresholds past zero either way before it saturates."""


def dash_of(decay: np.ndarray, low: int, high: int) -> np.ndarray:
    """The bit-shift decay nearest in time constant (Rockpool: round(log2(tau / dt)), tau / dt =
    -1 / ln(decay)), within [low, high]."""
    decay = np.asarray(decay, dtype=np.float64)
    inside = (decay > 0) & (decay < 1)
    tau = np.where(inside, -1.0 / np.log(np.where(inside, decay, 0.5)), 0.0)
    dash = np.where(inside, np.round(np.log2(np.maximum(tau, 1e-300))), 0.0)
    dash = np.where(decay >= 1, high, np.where(decay <= 0, low, dash))
    return np.clip(dash, low, high).astype(np.int64)


def chip_decay(dash: np.ndarray) -> np.ndarray:
    return 1.0 - 2.0 ** -np.asarray(dash, dtype=np.float64)


def current_gain(alpha: np.ndarray, chip_alpha: np.ndarray) -> np.ndarray:
    """The weight factor that gives a held input the float current's steady state: Xylo's current
    settles at ``chip_alpha g x / (1 - chip_alpha)``, the float one at ``x / (1 - alpha)``. A
    non-decaying float current has no steady state; it keeps ``1 / chip_alpha``, a step's input
    arriving whole."""
    alpha = np.asarray(alpha, dtype=np.float64)
    settled = (1 - chip_alpha) / (chip_alpha * np.maximum(1 - alpha, 1e-12))
    return np.where(alpha < 1, settled, 1.0 / chip_alpha)


@dataclass
class QuantizedLayer:
    """One population in Xylo integers; ``weights``: (source, integer (target, source) weights)."""

    name: str
    size: int
    dash_syn: np.ndarray
    dash_mem: np.ndarray
    threshold: np.ndarray
    bias: np.ndarray
    weights: list[tuple[str, np.ndarray]]


@dataclass
class Quantized:
    graph: Graph
    layers: list[QuantizedLayer]
    shifts: tuple[int, int, int]
    bits: int
    report: dict


def check_structure(graph: Graph) -> None:
    """Refuse what Xylo cannot hold: convolutions, anything but input -> a chain of layers (each may
    be recurrent) -> a non-recurrent spiking output."""
    pops = graph.populations
    for conn in graph.connections:
        if conn.kind != "dense":
            raise UserError(f"connection {conn.name} is a convolution; Xylo has no convolutions (its hidden "
                            "neurons take dense weights): flatten to a dense layer or choose another target")
    if len(pops) < 2:
        raise UserError("Xylo needs at least two neuron layers (hidden and output); the graph has "
                        f"{len(pops)}")
    if graph.output != pops[-1].name or not pops[-1].spiking:
        raise UserError(f"Xylo's output neurons spike: the output population {graph.output} must be the last "
                        "and spiking (a membrane readout is not supported)")
    order = {INPUT: -1, **{p.name: i for i, p in enumerate(pops)}}
    for conn in graph.connections:
        if conn.recurrent and conn.target == graph.output:
            raise UserError(f"connection {conn.name}: Xylo's output neurons cannot be recurrent")
        if not conn.recurrent and order[conn.target] != order[conn.source] + 1:
            raise UserError(f"connection {conn.name} skips a layer; Xylo runs input -> hidden layers in a chain "
                            "-> output, each hop one step late")
    for i, pop in enumerate(pops):
        source = INPUT if i == 0 else pops[i - 1].name
        if not any(c.source == source for c in graph.incoming(pop.name)):
            raise UserError(f"population {pop.name} takes nothing from {source}; Xylo runs a chain of layers")


def _matrix_of(graph: Graph, source: str, target: str) -> int:
    """0: input weights, 1: recurrent (hidden) weights, 2: output weights."""
    return 0 if source == INPUT else 2 if target == graph.output else 1


def quantize(graph: Graph, chip, bits: int = 8, headroom: int = HEADROOM) -> Quantized:
    check_structure(graph)
    qmax = 2 ** (bits - 1) - 1
    cap = THRESHOLD_MAX // headroom
    shift_max, dash_max = chip.limit("weight_shift_max"), chip.limit("dash_max")
    per_event_input = 1.0 / graph.input_levels
    rows = []  # per population: its per-event float weights per matrix, decays, threshold and bias
    for pop in graph.populations:
        dash_syn = dash_of(pop.alpha, chip.limit("dash_syn_min"), dash_max)
        dash_mem = dash_of(pop.beta, 0, dash_max)
        gain = current_gain(pop.alpha, chip_decay(dash_syn))
        if np.any((pop.alpha >= 1) & (pop.current_bias != 0)):
            raise UserError(f"population {pop.name}: a current bias into a non-decaying current has no Xylo form")
        bias = pop.bias + np.where(pop.alpha < 1, pop.current_bias / np.maximum(1 - pop.alpha, 1e-12), 0.0)
        weights = [(c.source, c.weight * gain[:, None] * (per_event_input if c.source == INPUT else 1.0))
                   for c in graph.incoming(pop.name)]
        rows.append((pop, dash_syn, dash_mem, bias, weights))
    shifts = [shift_max] * 3
    for pop, _, _, bias, weights in rows:
        scale_limit = cap / np.maximum(np.maximum(pop.threshold, np.abs(bias)), 1e-12)
        for source, w in weights:
            m = _matrix_of(graph, source, pop.name)
            largest = np.abs(w).max(axis=1)
            used = largest > 0
            if used.any():
                # the largest shift at which every neuron's full-range weights keep its threshold in range
                fits = np.floor(np.log2(scale_limit[used] * largest[used] / qmax)).min()
                shifts[m] = int(np.clip(min(shifts[m], fits), 0, shift_max))
    layers, report = [], {"decay_error": {}, "deviations": []}
    for pop, dash_syn, dash_mem, bias, weights in rows:
        scale = cap / np.maximum(np.maximum(pop.threshold, np.abs(bias)), 1e-12)
        for source, w in weights:
            largest = np.abs(w).max(axis=1)
            full = qmax * 2.0 ** shifts[_matrix_of(graph, source, pop.name)] / np.where(largest > 0, largest, 1)
            scale = np.where(largest > 0, np.minimum(scale, full), scale)
        ints = [(source, np.clip(np.round(w * scale[:, None] / 2.0 ** shifts[_matrix_of(graph, source, pop.name)]),
                                 -qmax - 1, qmax).astype(np.int64)) for source, w in weights]
        layers.append(QuantizedLayer(pop.name, pop.size, dash_syn, dash_mem,
                                     np.clip(np.round(pop.threshold * scale), 1, THRESHOLD_MAX).astype(np.int64),
                                     np.clip(np.round(bias * scale), -THRESHOLD_MAX, THRESHOLD_MAX).astype(np.int64),
                                     ints))
        report["decay_error"][pop.name] = {
            "dash_syn": sorted({int(d) for d in dash_syn}), "dash_mem": sorted({int(d) for d in dash_mem}),
            "alpha_error": float(np.abs(chip_decay(dash_syn) - pop.alpha).max()),
            "beta_error": float(np.abs(chip_decay(dash_mem) - pop.beta).max())}
        if pop.reset == "zero":
            report["deviations"].append(f"{pop.name}: resets to zero; Xylo subtracts the threshold")
    return Quantized(graph, layers, tuple(shifts), bits, report)


def map_core(quantized: Quantized) -> XyloProgram:
    """The block-structured core: hidden populations on consecutive ids, the last on the outputs."""
    graph, layers = quantized.graph, quantized.layers
    hidden, output = layers[:-1], layers[-1]
    slots, start = [], 0
    for depth, layer in enumerate(hidden):
        slots.append(LayerSlot(layer.name, "hidden", start, layer.size, depth))
        start += layer.size
    slots.append(LayerSlot(output.name, OUTPUT, 0, output.size, len(hidden)))
    by_name = {s.name: s for s in slots}
    n_in = int(np.prod(graph.input_shape))
    w_in, w_rec = np.zeros((n_in, start), np.int64), np.zeros((start, start), np.int64)
    w_out = np.zeros((start, output.size), np.int64)
    for layer in layers:
        target = by_name[layer.name]
        for source, w in layer.weights:
            if source == INPUT:
                w_in[:, target.ids] = w.T
            elif target.kind == OUTPUT:
                w_out[by_name[source].ids, :] = w.T
            else:
                w_rec[by_name[source].ids, target.ids] = w.T

    def cat(attr):
        return np.concatenate([getattr(layer, attr) for layer in hidden])

    return XyloProgram(w_in=w_in, w_rec=w_rec, w_out=w_out, shift_in=quantized.shifts[0],
                       shift_rec=quantized.shifts[1], shift_out=quantized.shifts[2], dash_syn=cat("dash_syn"),
                       dash_mem=cat("dash_mem"), threshold=cat("threshold"), bias=cat("bias"),
                       dash_syn_out=output.dash_syn, dash_mem_out=output.dash_mem, threshold_out=output.threshold,
                       bias_out=output.bias, slots=slots, steps=graph.steps, input_shape=graph.input_shape,
                       input_levels=graph.input_levels, weight_bits=quantized.bits,
                       edges=[(c.source, c.target) for c in graph.connections], metadata=dict(quantized.report))


@dataclass(frozen=True)
class XyloQuantize(CompilerPass):
    chip: Any
    bits: int = 8
    headroom: int = HEADROOM
    name = "quantize"

    def __call__(self, graph: Graph, context: Context) -> Quantized:
        return quantize(graph, self.chip, self.bits, self.headroom)


@dataclass(frozen=True)
class XyloMap(CompilerPass):
    name = "map"

    def __call__(self, quantized: Quantized, context: Context) -> XyloProgram:
        return map_core(quantized)


@dataclass(frozen=True)
class XyloCheck(CompilerPass):
    """Every design rule at once: one line naming each broken limit and what would help."""

    chip: Any
    name = "drc"

    def __call__(self, program: XyloProgram, context: Context) -> XyloProgram:
        found = check_fits(program, self.chip)
        if found:
            others = "".join(f"; {v.label}: needs {v.value}, holds {v.allowed}: {v.hint}" for v in found[1:])
            raise UserError(f"the model does not fit {title(self.chip)}: {found[0]}{others}")
        return program


def passes(chip, options, calibration=None, rates=None) -> list[CompilerPass]:
    """quantize -> map -> drc for ``chip``. Xylo's quantizer scales per neuron from the weights alone,
    so ``calibration`` and ``rates`` are not read."""
    return [XyloQuantize(chip, options.quantize.bits), XyloMap(), XyloCheck(chip)]
