"""Quantize pass: float ``Graph`` -> integer ``Program`` in Loihi 2's native widths.

For each neuron group (neurons sharing decay and threshold) one scale S maps
float membrane units to integer ones: ``v_int = S * v_float``. Weights land
on Loihi's 8-bit synapse grid with a per-group exponent, thresholds become
17-bit ``vth`` with ``vth * 2^6 = S * theta``, decays 12-bit ``du``/``dv``,
biases a 13-bit mantissa with a 3-bit exponent, current biases an 8-bit
always-on synapse with its exponent. S is the largest power-of-two multiple
of the weight step that keeps ``vth`` within 17 bits, so the integer network
reproduces the float one as closely as the widths allow.

A convolution shares its kernel across a channel, so neuron groups that
split channels (a threshold or decay that varies within a channel) share
one scale with every group they share a channel with: they keep the same
integer kernel and differ in ``vth``, ``du``, ``dv``.

Weights use a symmetric grid ``q * 2^(9 - bits)``, ``|q| <= 2^(bits-1) - 1``:
Lava's clipping and truncation (for any sign mode it picks) leave such
weights unchanged, so what we compute is what the chip holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from toolchain.errors import UserError
from toolchain.ir import INPUT, Connection, Graph, Population
from toolchain.program import (BIAS_EXP_MAX, BIAS_MANT_MAX, CURRENT_BIAS_EXP_MAX, CURRENT_BIAS_MANT_MAX, DECAY_MAX,
                               DECAY_UNITY, STATE_MAX, VTH_MAX, Layer, Program, Synapses)

BIAS_MAX = BIAS_MANT_MAX * 2**BIAS_EXP_MAX
CURRENT_BIAS_MAX = (CURRENT_BIAS_MANT_MAX - 1) * 2**CURRENT_BIAS_EXP_MAX * 64
"""Largest current bias in u units (the axon's input is shifted by 6 into u)."""
DIGITAL_MAX_BITS = 16
"""Widest weights the generic digital target (``fake_quantize``) takes."""
WeightScale = Literal["mse", "max", "percentile", "output-mse"]
Granularity = Literal["tensor", "channel"]
WEIGHT_SCALES, GRANULARITIES = get_args(WeightScale), get_args(Granularity)


@dataclass(frozen=True)
class QuantizeOptions:
    """``bits``: synapse weight width. ``weight_scale``: how the weight step is
    chosen: "max" (the largest weight maps to the largest level, the plain
    static PTQ baseline), "percentile" (the 99.9th percentile of |w| does),
    "mse" (the clipping that minimises the weights' squared rounding error) or
    "output-mse" (the same error weighted by each input's mean square
    activity on calibration data: the error the layer's output sees).
    ``granularity``: one scale per layer ("tensor") or per output channel
    ("channel": each channel becomes its own neuron group with its own vth).
    ``bias_correction``: add the mean output error the rounding causes on
    calibration data back into the bias."""

    bits: int = 8
    weight_scale: WeightScale = "mse"
    granularity: Granularity = "tensor"
    bias_correction: bool = False

    def __post_init__(self):
        if self.weight_scale not in WEIGHT_SCALES:
            raise UserError(f"unknown weight scale {self.weight_scale!r}; use {', '.join(WEIGHT_SCALES)}")
        if self.granularity not in GRANULARITIES:
            raise UserError(f"unknown granularity {self.granularity!r}; use {', '.join(GRANULARITIES)}")


def needs_rates(options: QuantizeOptions) -> bool:
    """Whether ``options`` read the activity of a calibration run."""
    return options.weight_scale == "output-mse" or options.bias_correction


def check_bits(bits: int, chip) -> None:
    top = chip.limit("weight_bits_max")
    if not isinstance(bits, int) or not 1 <= bits <= top:
        raise UserError(f"--bits {bits} is out of range: {chip.name} synapses hold 1..{top} bit weights")


def check_digital_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= DIGITAL_MAX_BITS:
        raise UserError(f"--bits {bits} is out of range: the digital target takes 1..{DIGITAL_MAX_BITS} bit weights")


def quantize(graph: Graph, chip, options: QuantizeOptions, rates: dict[str, np.ndarray] | None = None) -> Program:
    """Lower the float graph to an integer program for ``chip``. ``rates``: mean
    activity per source neuron per step on calibration data (population name
    or "input" -> array), needed by "output-mse" and bias correction."""
    check_bits(options.bits, chip)
    if needs_rates(options) and rates is None:
        raise UserError("output-mse scaling and bias correction need calibration data")
    graph = correct_bias(graph, options, rates) if options.bias_correction else graph
    exp_range = (chip.limit("weight_exp_min"), chip.limit("weight_exp_max"))
    layers, synapses = [], []
    for pop in graph.populations:
        incoming = graph.incoming(pop.name)
        layer, blocks = _quantize_population(graph, pop, incoming, options, exp_range, rates)
        layers.append(layer)
        synapses.extend(blocks)
    return Program(chip=chip.name, input_shape=graph.input_shape, input_levels=graph.input_levels,
                   steps=graph.steps, layers=layers, synapses=synapses, output=graph.output,
                   readout="spike_count" if graph.population(graph.output).spiking else "membrane",
                   metadata={"dt": graph.dt, "source": dict(graph.metadata),
                             "quantize": {"bits": options.bits, "weight_scale": options.weight_scale,
                                          "granularity": options.granularity,
                                          "bias_correction": options.bias_correction}})


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
                         options: QuantizeOptions, exp_range, rates) -> tuple[Layer, list[Synapses]]:
    step, qmax = weight_grid(options.bits)
    n = pop.size
    du = np.clip(np.round(DECAY_UNITY * (1 - pop.alpha)) - 1, 0, DECAY_MAX).astype(int)
    dv = np.clip(np.round(DECAY_UNITY * (1 - pop.beta)), 0, DECAY_MAX).astype(int)
    vth = np.zeros(n, dtype=int)
    v_scale = np.zeros(n)
    exps = {id(c): np.zeros(n, dtype=int) for c in incoming}
    ints = {id(c): np.zeros(c.weight.shape, dtype=np.int64) for c in incoming}
    drive = _drive_bound(graph, pop, incoming)
    theta = pop.threshold if pop.spiking else np.full(n, drive.max() / max(1 - pop.beta.max(), 1e-3))

    keys = np.stack([pop.alpha, pop.beta, theta], axis=1)
    if options.granularity == "channel":
        keys = np.column_stack([keys, np.arange(n) // (n // pop.shape[0]) if len(pop.shape) == 3 else np.arange(n)])
    _, group_of = np.unique(keys, axis=0, return_inverse=True)
    current_bias_mant, current_bias_exp = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    for rows in _scale_blocks(pop, group_of.reshape(-1), any(c.kind == "conv" for c in incoming)):
        main, *others = incoming
        w_main = _rows(main, rows, pop.shape) * (1 / graph.input_levels if main.source == INPUT else 1)
        delta = choose_weight_step(w_main, qmax, options.weight_scale,
                                   _importance(main, rates, graph) if options.weight_scale == "output-mse" else None)
        if options.bits == 1 and np.any(w_main > 0) and np.any(w_main < 0):
            raise UserError(f"layer {pop.name}: 1-bit Loihi weights are single-sign and this layer has "
                            "both signs; use --bits 2 or more")
        theta_top = float(theta[rows].max())
        scale_limit = min(VTH_MAX * 64 / theta_top, STATE_MAX / max(drive[rows].max(), 1e-12),
                          BIAS_MAX / max(np.abs(pop.bias[rows]).max(), 1e-12),
                          CURRENT_BIAS_MAX / max(np.abs(pop.current_bias[rows]).max(), 1e-12))
        # largest exponent whose scale S = step * 2^(exp+6) / delta respects every width
        exp = int(np.clip(math.floor(math.log2(scale_limit * delta / (step * 64))), *exp_range))
        scale = step * 2.0 ** (exp + 6) / delta
        vth_rows = np.round(theta[rows] * scale / 64).astype(np.int64)
        if vth_rows.max() > VTH_MAX:
            raise UserError(f"layer {pop.name}: threshold {theta_top:g} is too large for its weights "
                            f"(needs vth {vth_rows.max()} > {VTH_MAX}); rescale the layer")
        if pop.spiking and len(np.unique(group_of.reshape(-1)[rows])) > 1 and np.any(vth_rows < 1):
            raise UserError(f"layer {pop.name}: thresholds within a channel span more than Loihi's 17-bit vth "
                            "resolves; give the channel's neurons closer thresholds")
        vth[rows] = np.maximum(vth_rows, 0) if pop.spiking else VTH_MAX
        v_scale[rows] = scale
        current_bias_mant[rows], current_bias_exp[rows] = _split_current_bias(pop.current_bias[rows] * scale / 64,
                                                                              pop.name)
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
                  bias_exp=bias_exp, v_scale=v_scale, spiking=pop.spiking, model=pop.model, reset=pop.reset,
                  current_bias_mant=current_bias_mant, current_bias_exp=current_bias_exp)
    blocks = [Synapses(source=c.source, target=c.target, weights=ints[id(c)], weight_exp=exps[id(c)],
                       weight_bits=options.bits, kind=c.kind, stride=c.stride, padding=c.padding,
                       message_bits=_message_bits(graph) if c.source == INPUT else 0)
              for c in incoming]
    return layer, blocks


def _message_bits(graph: Graph) -> int:
    return 0 if graph.input_levels == 1 else int(math.ceil(math.log2(graph.input_levels + 1)))


def choose_weight_step(w: np.ndarray, qmax: int, method: str, importance: np.ndarray | None = None) -> float:
    """Float weight per integer level for the symmetric grid ``|q| <= qmax``.

    ``importance`` (broadcastable to ``w``) weights each weight's squared
    rounding error, e.g. by its input's mean square activity.
    """
    peak = float(np.abs(w).max())
    if peak == 0:
        return 1.0
    if method == "max":
        return peak / qmax
    if method == "percentile":
        return max(float(np.percentile(np.abs(w), 99.9)), peak / 2**15) / qmax
    weight = 1.0 if importance is None else importance
    best, best_err = peak / qmax, np.inf
    for ratio in np.linspace(0.2, 1.0, 41):
        delta = peak * ratio / qmax
        err = float(np.sum(weight * (np.clip(np.round(w / delta), -qmax, qmax) * delta - w) ** 2))
        if err < best_err:
            best, best_err = delta, err
    return best


def fake_quantize(graph: Graph, options: QuantizeOptions, rates=None) -> Graph:
    """The graph with weights snapped to a symmetric ``bits``-bit grid, still in float:
    what a generic digital accelerator with k-bit weights computes (any k in 1..16)."""
    check_digital_bits(options.bits)
    if needs_rates(options) and rates is None:
        raise UserError("output-mse scaling and bias correction need calibration data")
    graph = correct_bias(graph, options, rates) if options.bias_correction else graph
    qmax = max(2 ** (options.bits - 1) - 1, 1)
    connections = []
    for conn in graph.connections:
        w = conn.weight
        rows = w.reshape(w.shape[0], -1)
        importance = None
        if options.weight_scale == "output-mse":
            importance = np.broadcast_to(_importance(conn, rates, graph), w.shape).reshape(rows.shape)
        if options.granularity == "channel":
            deltas = np.array([choose_weight_step(row, qmax, options.weight_scale,
                                                  None if importance is None else importance[i])
                               for i, row in enumerate(rows)])
        else:
            deltas = np.full(rows.shape[0], choose_weight_step(rows, qmax, options.weight_scale, importance))
        snapped = np.clip(np.round(rows / deltas[:, None]), -qmax, qmax) * deltas[:, None]
        connections.append(replace(conn, weight=snapped.reshape(w.shape)))
    return graph.replace(connections=connections)


def _importance(conn: Connection, rates, graph: Graph) -> np.ndarray:
    """Mean square activity of each weight's input, shaped to broadcast against the weight."""
    rate = np.asarray(rates[conn.source], dtype=np.float64)
    if conn.source == INPUT:
        rate = rate / graph.input_levels
    if conn.kind == "dense":
        return rate[None, :] ** 2 + 1e-12
    channels = conn.weight.shape[1]
    return (rate.reshape(channels, -1).mean(axis=1) ** 2 + 1e-12)[None, :, None, None]


def correct_bias(graph: Graph, options: QuantizeOptions, rates) -> Graph:
    """Fold the mean output error of rounding (at calibration activity) into the biases."""
    snapped = fake_quantize(graph, replace(options, bias_correction=False), rates)
    populations = []
    for pop in graph.populations:
        shift = np.zeros(pop.size)
        for before, after in zip(graph.incoming(pop.name), snapped.incoming(pop.name)):
            rate = np.asarray(rates[before.source], dtype=np.float64)
            if before.source == INPUT:
                rate = rate / graph.input_levels
            error = before.weight - after.weight
            if before.kind == "dense":
                shift += error @ rate
            else:
                channel_rate = rate.reshape(error.shape[1], -1).mean(axis=1)
                shift += np.repeat(np.einsum("ocuv,c->o", error, channel_rate), pop.size // error.shape[0])
        into_current = pop.alpha > 0  # the rounding error enters the current, which a CubaLIF filters
        populations.append(replace(pop, bias=pop.bias + np.where(into_current, 0.0, shift),
                                   current_bias=pop.current_bias + np.where(into_current, shift, 0.0)))
    return graph.replace(populations=populations)


def _drive_bound(graph: Graph, pop: Population, incoming: list[Connection]) -> np.ndarray:
    """Worst-case |current| per neuron in float units (all inputs at their maximum, the current
    bias included): keeps the integer current u inside its 24 bits."""
    drive = np.zeros(pop.size)
    for conn in incoming:
        w = np.abs(conn.weight)
        if conn.kind == "dense":
            drive += w.sum(axis=1)
        else:
            per_channel = w.reshape(w.shape[0], -1).sum(axis=1)
            drive += np.repeat(per_channel, pop.size // w.shape[0])
    return (drive + np.abs(pop.current_bias)) / np.maximum(1 - pop.alpha, 1e-3) + np.abs(pop.bias)


def _scale_blocks(pop: Population, group_of: np.ndarray, convolved: bool) -> list[np.ndarray]:
    """Neurons that must share one scale (weight step and exponent): each group alone, or, after a
    convolution, every group together with the groups it shares a channel with."""
    group_ids = np.unique(group_of)
    if not convolved:
        return [np.flatnonzero(group_of == g) for g in group_ids]
    channel = np.arange(pop.size) // (pop.size // pop.shape[0])
    n_groups = len(group_ids)
    links = coo_matrix((np.ones(pop.size), (group_of, n_groups + channel)),
                       shape=(n_groups + pop.shape[0],) * 2)
    _, component = connected_components(links, directed=False)
    block_of = component[group_of]
    return [np.flatnonzero(block_of == b) for b in np.unique(block_of)]


def _split_current_bias(values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A block's current bias in input units -> 8-bit mantissas and the smallest shared exponent
    that holds the largest. Where signs mix, Lava keeps only even 8-bit weights (its mixed sign
    mode drops the low bit), so the mantissas are even there."""
    grid = 2 if np.any(values > 0) and np.any(values < 0) else 1
    top = CURRENT_BIAS_MANT_MAX - grid + 1
    peak = float(np.abs(values).max()) if values.size else 0.0
    exp = 0 if peak <= top else math.ceil(math.log2(peak / top))
    if exp > CURRENT_BIAS_EXP_MAX:
        raise UserError(f"layer {name}: current bias too large for an 8-bit synapse with exponent "
                        f"{CURRENT_BIAS_EXP_MAX}; rescale the layer")
    mant = grid * np.round(values / (grid * 2**exp)).astype(np.int64)
    return mant, np.full(values.shape, exp if np.any(mant) else 0)


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
