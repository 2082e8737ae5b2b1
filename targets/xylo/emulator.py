"""Bit-accurate Xylo Audio 2 emulator, batched over samples.

The equations are SynSense's xylosim (``xylosim.v2.XyloLayer``, what
Rockpool's ``XyloSim`` for SYNS61201 and SYNS63300 runs), read from its C++
source (``src/v2/cpp/XyloIAFNeuron.cpp`` in the 0.1.3 sdist) and checked
against it in the tests. Per step, for every hidden neuron:

- the input channels' events (at most 15 per channel), then the hidden
  neurons' previous-step events (up to 31 each), each times its weight
  shifted left by the matrix's shift, are added to ``Isyn`` one source after
  another in id order, saturating at 16 bit after each;
- ``Isyn -= decay(Isyn, dash_syn)``;
- ``Vmem = sat16(Vmem + sat16(sat16(Isyn - decay(Vmem, dash_mem)) + bias))``: the change is
  saturated before it is added (``XyloIAFNeuron::evolve`` in xylosim's source);
- while ``Vmem >= threshold`` (at most 31 times): one event, ``Vmem -= threshold``.

``decay(x, d)`` is ``x >> d`` (arithmetic), but at least 1 for a positive x:
a state always decays to zero. Output neurons do the same from the hidden
neurons' previous-step events, with one event at most per step.

A sample runs ``steps + latency`` chip steps (zero input after its own), from
zero state, so every layer sees the whole sample: layer k answers k steps
late. The answer is the output events in the output layer's window.
"""

from __future__ import annotations

import numpy as np

from targets.xylo.program import OUTPUT, XyloProgram
from toolchain.batching import iterate_batches
from toolchain.ir import INPUT
from toolchain.results import LayerActivity, RunResult

STATE_MIN, STATE_MAX = -(2**15), 2**15 - 1
INPUT_EVENTS_MAX = 15
HIDDEN_SPIKES_MAX = 31


def decay(x: np.ndarray, dash: np.ndarray) -> np.ndarray:
    """What one step's bit-shift decay takes from ``x``."""
    step = x >> dash
    return np.where((x > 0) & (step == 0), 1, step)


def integrate(vmem: np.ndarray, dash: np.ndarray, isyn: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The membrane after one step: xylosim saturates the change (decay plus ``Isyn``, then plus the
    bias) at 16 bit before adding it, so a saturated ``Isyn`` onto a decaying negative membrane
    gains less than the plain sum."""
    change = np.clip(np.clip(isyn - decay(vmem, dash), STATE_MIN, STATE_MAX) + bias, STATE_MIN, STATE_MAX)
    return np.clip(vmem + change, STATE_MIN, STATE_MAX)


class _Matrix:
    """One weight matrix (pre, post), shifted, with its positive and negative parts for the
    saturation check."""

    def __init__(self, weights: np.ndarray, shift: int):
        self.w = weights.astype(np.int64) << shift
        self.pos = np.maximum(self.w, 0).astype(np.float64)
        self.neg = np.minimum(self.w, 0).astype(np.float64)


def _accumulate(state: np.ndarray, sources: list[tuple[np.ndarray, _Matrix]]) -> np.ndarray:
    """``state`` plus every source's events times weights, saturating after each source in order.

    Where no partial sum can leave 16 bit (the state plus all positive, or all negative,
    contributions stays inside) one sum is exact; the other rows add source by source.
    """
    up = state + sum((events @ m.pos).astype(np.int64) for events, m in sources)
    down = state + sum((events @ m.neg).astype(np.int64) for events, m in sources)
    total = up + down - state
    clips = (up > STATE_MAX) | (down < STATE_MIN)
    rows = np.flatnonzero(clips.any(axis=1))
    if rows.size:
        exact = state[rows].copy()
        for events, m in sources:
            events = events[rows].astype(np.int64)
            for source in np.flatnonzero(events.any(axis=0)):
                exact = np.clip(exact + events[:, source, None] * m.w[source], STATE_MIN, STATE_MAX)
        total[rows] = exact
    return total


def simulate(program: XyloProgram, events: np.ndarray, record: bool = True) -> dict[str, np.ndarray]:
    """Run ``events`` (samples, chip steps, input channels) through the core from zero state.

    Returns (samples, chip steps, neurons) int arrays: ``spikes`` and ``spikes_out`` always,
    ``isyn``, ``vmem``, ``isyn_out``, ``vmem_out`` when ``record``.
    """
    p = program
    events = np.minimum(np.asarray(events, dtype=np.int64), INPUT_EVENTS_MAX).astype(np.float64)
    b, steps, _ = events.shape
    w_in, w_rec, w_out = _Matrix(p.w_in, p.shift_in), _Matrix(p.w_rec, p.shift_rec), _Matrix(p.w_out, p.shift_out)
    isyn, vmem = np.zeros((b, p.n_hidden), np.int64), np.zeros((b, p.n_hidden), np.int64)
    isyn_o, vmem_o = np.zeros((b, p.n_out), np.int64), np.zeros((b, p.n_out), np.int64)
    spikes = np.zeros((b, p.n_hidden), np.float64)
    traces = {k: [] for k in (("spikes", "spikes_out", "isyn", "vmem", "isyn_out", "vmem_out") if record
                              else ("spikes", "spikes_out"))}
    for t in range(steps):
        isyn = _accumulate(isyn, [(events[:, t], w_in), (spikes, w_rec)])
        isyn_o = _accumulate(isyn_o, [(spikes, w_out)])
        isyn = isyn - decay(isyn, p.dash_syn)
        isyn_o = isyn_o - decay(isyn_o, p.dash_syn_out)
        vmem = integrate(vmem, p.dash_mem, isyn, p.bias)
        vmem_o = integrate(vmem_o, p.dash_mem_out, isyn_o, p.bias_out)
        fired = np.where(vmem >= p.threshold, np.minimum(vmem // p.threshold, HIDDEN_SPIKES_MAX), 0)
        vmem = vmem - fired * p.threshold
        fired_o = (vmem_o >= p.threshold_out).astype(np.int64)
        vmem_o = vmem_o - fired_o * p.threshold_out
        spikes = fired.astype(np.float64)
        for name, value in (("spikes", fired), ("spikes_out", fired_o), ("isyn", isyn), ("vmem", vmem),
                            ("isyn_out", isyn_o), ("vmem_out", vmem_o)):
            if name in traces:
                traces[name].append(value)
    return {k: np.stack(v, axis=1) if v else np.zeros((b, 0, 0), np.int64) for k, v in traces.items()}


def input_events(program: XyloProgram, inputs: np.ndarray) -> np.ndarray:
    """The host's events (samples, steps + latency, channels): an input value k (a multiple of
    1/input_levels) is k events on its channel every step of a static frame, or at its step of a
    spike train; zeros while the deeper layers finish."""
    x = np.asarray(inputs).reshape(len(inputs), -1).astype(np.int64)
    n_in = program.n_in
    trains = np.repeat(x[:, None, :], program.steps, axis=1) if x.shape[1] == n_in \
        else x.reshape(len(x), program.steps, n_in)
    tail = np.zeros((len(x), program.latency, n_in), np.int64)
    return np.concatenate([trains, tail], axis=1)


def run(program: XyloProgram, inputs: np.ndarray, batch_size: int = 256, progress=None,
        record: bool = False) -> RunResult:
    """Run ``inputs`` (samples, *input_shape) or (samples, steps, *input_shape) on the core."""
    inputs = np.asarray(inputs)
    parts = []
    for rows in iterate_batches(len(inputs), batch_size, progress):
        parts.append(_run_batch(program, inputs[rows], record))
    return RunResult.concatenate(parts)


def _window(program: XyloProgram, trace: np.ndarray, depth: int) -> np.ndarray:
    return trace[:, depth:depth + program.steps]


def _run_batch(program: XyloProgram, batch: np.ndarray, record: bool) -> RunResult:
    events = input_events(program, batch)
    traces = simulate(program, events, record)
    steps = program.steps
    shown = events[:, :steps]
    activity = {INPUT: LayerActivity((shown != 0).sum((0, 1)), (shown != 0).sum((0, 2)))}
    trains, v, u = {}, {}, {}
    output = None
    for slot in program.slots:
        out = slot.kind == OUTPUT
        ids = slice(None) if out else slot.ids
        train = _window(program, traces["spikes_out" if out else "spikes"][:, :, ids], slot.depth)
        activity[slot.name] = LayerActivity((train != 0).sum((0, 1)), (train != 0).sum((0, 2)))
        if out:
            output = train.sum(axis=1).astype(np.float64)
        if record:
            trains[slot.name] = train
            u[slot.name] = _window(program, traces["isyn_out" if out else "isyn"][:, :, ids], slot.depth)
            v[slot.name] = _window(program, traces["vmem_out" if out else "vmem"][:, :, ids], slot.depth)
    return RunResult(output=output, activity=activity, samples=len(batch), steps=steps, trains=trains, u=u, v=v)
