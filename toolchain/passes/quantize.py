"""Quantize pass: float ``Graph`` -> integer ``Program`` in Loihi 2's native widths.

For each neuron group (neurons sharing decay and threshold) one scale S maps
float membrane units to integer ones: ``v_int = S * v_float``. Weights land
on Loihi's 8-bit synapse grid with a per-group exponent, thresholds become
17-bit ``vth`` with ``vth * 2^6 = S * theta``, decays 12-bit ``du``/``dv``,
biases a 13-bit mantissa with a 3-bit exponent. S is the largest power-of-two
multiple of the weight step that keeps ``vth`` within 17 bits, so the
integer network reproduces the float one as closely as the widths allow.

Weights use a symmetric grid ``q * 2^(9 - bits)``, ``|q| <= 2^(bits-1) - 1``:
Lava's clipping and truncation (for any sign mode it picks) leave such
weights unchanged, so what we compute is what the chip holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from toolchain.errors import UserError
from toolchain.ir import INPUT, Connection, Graph, Population
from toolchain.program import Layer, Program, Synapses

DECAY_UNITY = 4096
VTH_MAX = 2**17 - 1
BIAS_MANT_MAX = 4095
BIAS_EXP_MAX = 7
BIAS_MAX = BIAS_MANT_MAX * 2**BIAS_EXP_MAX
STATE_MAX = 2**23 - 1


@dataclass(frozen=True)
class QuantizeOptions:
    """``bits``: synapse weight width; ``weight_scale``: how the weight step is
    chosen, "max" (largest weight maps to the largest level) or "mse" (the
    clipping that minimises the weights' squared rounding error)."""

    bits: int = 8
    weight_scale: Literal["max", "mse"] = "mse"


def check_bits(bits: int, chip) -> None:
    top = chip.limit("weight_bits_max")
    if not isinstance(bits, int) or not 1 <= bits <= top:
        raise UserError(f"--bits {bits} is out of range: {chip.name} synapses hold 1..{top} bit weights")


def quantize(graph: Graph, chip, options: QuantizeOptions) -> Program:
    """Lower the float graph to an integer program for ``chip``."""
    check_bits(options.bits, chip)
    exp_range = (chip.limit("weight_exp_min"), chip.limit("weight_exp_max"))
    layers, synapses = [], []
    for pop in graph.populations:
        incoming = graph.incoming(pop.name)
        layer, blocks = _quantize_population(graph, pop, incoming, options, exp_range)
        layers.append(layer)
        synapses.extend(blocks)
    return Program(chip=chip.name, input_shape=graph.input_shape, input_levels=graph.input_levels,
                   steps=graph.steps, layers=layers, synapses=synapses, output=graph.output,
                   readout="spike_count" if graph.population(graph.output).spiking else "membrane",
                   metadata={"dt": graph.dt, "source": dict(graph.metadata),
                             "quantize": {"bits": options.bits, "weight_scale": options.weight_scale}})


def weight_grid(bits: int) -> tuple[int, int]:
    """(integer step, largest level) of the symmetric weight grid for ``bits``."""
    if bits == 1:
        return 128, 1  # single-sign: Lava keeps one magnitude bit, {0, 128}
    return 2 ** (9 - bits), 2 ** (bits - 1) - 1


def _rows(conn: Connection, rows: np.ndarray, shape) -> np.ndarray:
    """The weights feeding the given target neurons (conv: their output channels)."""
    if conn.kind == "dense":
        return conn.weight[rows]
    channels = np.unique(np.unravel_index(rows, shape)[0])
    return conn.weight[channels]


def _quantize_population(graph: Graph, pop: Population, incoming: list[Connection],
                         options: QuantizeOptions, exp_range) -> tuple[Layer, list[Synapses]]:
    step, qmax = weight_grid(options.bits)
    n = pop.size
    du = np.clip(np.round(DECAY_UNITY * (1 - pop.alpha)) - 1, 0, 4095).astype(int)
    dv = np.clip(np.round(DECAY_UNITY * (1 - pop.beta)), 0, 4095).astype(int)
    vth = np.zeros(n, dtype=int)
    v_scale = np.zeros(n)
    exps = {id(c): np.zeros(n, dtype=int) for c in incoming}
    ints = {id(c): np.zeros(c.weight.shape, dtype=np.int64) for c in incoming}
    drive = _drive_bound(graph, pop, incoming)
    theta = pop.threshold if pop.spiking else np.full(n, drive.max() / max(1 - pop.beta.max(), 1e-3))

    keys = np.stack([pop.alpha, pop.beta, theta], axis=1)
    _, group_of = np.unique(keys, axis=0, return_inverse=True)
    for g in np.unique(group_of):
        rows = np.flatnonzero(group_of.reshape(-1) == g)
        if any(c.kind == "conv" for c in incoming):
            _require_whole_channels(pop, rows)
        main, *others = incoming
        w_main = _rows(main, rows, pop.shape) * (1 / graph.input_levels if main.source == INPUT else 1)
        delta = _weight_step(w_main, qmax, options)
        if options.bits == 1 and np.any(w_main > 0) and np.any(w_main < 0):
            raise UserError(f"layer {pop.name}: 1-bit Loihi weights are single-sign and this layer has "
                            "both signs; use --bits 2 or more")
        theta_g = float(theta[rows[0]])
        scale_limit = min(VTH_MAX * 64 / theta_g, STATE_MAX / max(drive[rows].max(), 1e-12),
                          BIAS_MAX / max(np.abs(pop.bias[rows]).max(), 1e-12))
        # largest exponent whose scale S = step * 2^(exp+6) / delta respects every width
        exp = int(np.clip(math.floor(math.log2(scale_limit * delta / (step * 64))), *exp_range))
        scale = step * 2.0 ** (exp + 6) / delta
        vth_g = round(theta_g * scale / 64)
        if vth_g > VTH_MAX:
            raise UserError(f"layer {pop.name}: threshold {theta_g:g} is too large for its weights "
                            f"(needs vth {vth_g} > {VTH_MAX}); rescale the layer")
        vth[rows] = max(vth_g, 0) if pop.spiking else VTH_MAX
        v_scale[rows] = scale
        for conn in incoming:
            w = _rows(conn, rows, pop.shape) * (1 / graph.input_levels if conn.source == INPUT else 1)
            if conn is main:
                conn_exp = exp
            else:  # smallest exponent whose grid still reaches this connection's largest weight
                peak = float(np.abs(w).max()) * scale / (step * 64 * max(qmax, 1))
                conn_exp = int(np.clip(math.ceil(math.log2(peak)) if peak > 0 else exp_range[0], *exp_range))
            q = np.clip(np.round(w * scale / (step * 2.0 ** (conn_exp + 6))),
                        0 if options.bits == 1 else -qmax, qmax)
            if options.bits == 1 and np.all(w <= 0):
                q = -np.clip(np.round(-w * scale / (step * 2.0 ** (conn_exp + 6))), 0, 1)
            _store_rows(conn, ints[id(conn)], rows, pop.shape, (q * step).astype(np.int64))
            exps[id(conn)][rows] = conn_exp

    bias_mant, bias_exp = _split_bias(pop.bias * v_scale, pop.name)
    layer = Layer(name=pop.name, shape=pop.shape, du=du, dv=dv, vth=vth, bias_mant=bias_mant,
                  bias_exp=bias_exp, v_scale=v_scale, spiking=pop.spiking, model=pop.model)
    blocks = [Synapses(source=c.source, target=c.target, weights=ints[id(c)], weight_exp=exps[id(c)],
                       weight_bits=options.bits, kind=c.kind, stride=c.stride, padding=c.padding,
                       message_bits=_message_bits(graph) if c.source == INPUT else 0)
              for c in incoming]
    return layer, blocks


def _message_bits(graph: Graph) -> int:
    return 0 if graph.input_levels == 1 else int(math.ceil(math.log2(graph.input_levels + 1)))


def _weight_step(w: np.ndarray, qmax: int, options: QuantizeOptions) -> float:
    peak = float(np.abs(w).max())
    if peak == 0:
        return 1.0
    if options.weight_scale == "max":
        return peak / qmax
    best, best_err = peak / qmax, np.inf
    for ratio in np.linspace(0.2, 1.0, 41):
        delta = peak * ratio / qmax
        err = float(np.sum((np.clip(np.round(w / delta), -qmax, qmax) * delta - w) ** 2))
        if err < best_err:
            best, best_err = delta, err
    return best


def _drive_bound(graph: Graph, pop: Population, incoming: list[Connection]) -> np.ndarray:
    """Worst-case |current| per neuron in float units (all inputs at their maximum):
    keeps the integer current u inside its 24 bits."""
    drive = np.zeros(pop.size)
    for conn in incoming:
        w = np.abs(conn.weight)
        if conn.kind == "dense":
            drive += w.sum(axis=1)
        else:
            per_channel = w.reshape(w.shape[0], -1).sum(axis=1)
            drive += np.repeat(per_channel, pop.size // w.shape[0])
    return drive / np.maximum(1 - pop.alpha, 1e-3) + np.abs(pop.bias)


def _require_whole_channels(pop: Population, rows: np.ndarray) -> None:
    per_channel = pop.size // pop.shape[0]
    channels = rows // per_channel
    if np.any(np.bincount(channels, minlength=pop.shape[0])[np.unique(channels)] != per_channel):
        raise UserError(f"layer {pop.name}: neuron parameters vary within a channel after a "
                        "convolution; they must be constant per channel")


def _store_rows(conn: Connection, target: np.ndarray, rows, shape, values) -> None:
    if conn.kind == "dense":
        target[rows] = values
    else:
        target[np.unique(np.unravel_index(rows, shape)[0])] = values


def _split_bias(bias: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer bias -> 13-bit mantissa and the smallest 3-bit exponent that fits it."""
    mant = np.round(bias).astype(np.int64)
    exp = np.zeros_like(mant)
    for e in range(BIAS_EXP_MAX + 1):
        fits = np.abs(np.round(bias / 2**e)) <= BIAS_MANT_MAX
        pick = fits & (exp == 0) & (np.abs(mant) > BIAS_MANT_MAX)
        mant = np.where(pick, np.round(bias / 2**e), mant).astype(np.int64)
        exp = np.where(pick, e, exp)
    if np.any(np.abs(mant) > BIAS_MANT_MAX):
        raise UserError(f"layer {name}: bias too large for Loihi's 13-bit mantissa and 3-bit exponent")
    return mant, exp
