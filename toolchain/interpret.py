"""The float graph's equations, written once (see ``toolchain.ir.Population``).

The reference target, calibration and both fine-tuners run a ``Graph``
through ``interpret``; they differ only in the weights they pass (the
graph's own, or fake-quantized trainable ones), the spike function
(Heaviside, or a surrogate with a gradient) and whether a chip's spikes
replace the float ones (straight-through, for chip-in-the-loop training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from toolchain.ir import INPUT, Graph
from toolchain.synaptic import accumulate

SpikeFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def heaviside(v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """A spike where the membrane exceeds the threshold."""
    return (v > threshold).to(v.dtype)


@dataclass
class Trace:
    """What one batch did: spikes (samples, steps, neurons) per spiking population and the input
    as given, membrane traces if recorded, and the readout of the output population."""

    spikes: dict[str, torch.Tensor]
    v: dict[str, torch.Tensor]
    output: torch.Tensor


def _f32(a) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float32)


def input_trains(graph: Graph, x: torch.Tensor) -> torch.Tensor:
    """Integer inputs in [0, input_levels] as float trains (samples, steps, inputs): a static
    image repeats at every step, a spike train is taken as it is."""
    b, steps, n_in = len(x), graph.steps, int(np.prod(graph.input_shape))
    x = x.to(torch.float32).reshape(b, -1) / graph.input_levels
    if x.shape[1] == n_in:
        return x.unsqueeze(1).expand(b, steps, n_in)
    return x.reshape(b, steps, n_in)


def interpret(graph: Graph, x: torch.Tensor, *, weights: Sequence[torch.Tensor] | None = None,
              biases: Sequence[torch.Tensor] | None = None,
              current_biases: Sequence[torch.Tensor] | None = None,
              spike: SpikeFunction = heaviside, replace_spikes: dict[str, torch.Tensor] | None = None,
              record: bool = False) -> Trace:
    """Run ``graph`` on one batch of integer inputs, zero delay.

    ``weights`` (one per connection, in ``graph.connections`` order), ``biases`` and
    ``current_biases`` (one per population) default to the graph's own. A population named in
    ``replace_spikes`` fires the given spikes forward and keeps the float gradient.
    """
    b, steps = len(x), graph.steps
    weights = weights if weights is not None else [_f32(c.weight) for c in graph.connections]
    biases = biases if biases is not None else [_f32(p.bias) for p in graph.populations]
    current_biases = current_biases if current_biases is not None else [_f32(p.current_bias)
                                                                       for p in graph.populations]
    replace_spikes = replace_spikes or {}
    trains = {INPUT: input_trains(graph, x)}
    v_traces, output = {}, None
    for p_index, pop in enumerate(graph.populations):
        alpha, beta, theta = _f32(pop.alpha), _f32(pop.beta), _f32(pop.threshold)
        drive, recurrent = torch.zeros(b * steps, pop.size), []
        for c_index, conn in enumerate(graph.connections):
            if conn.target != pop.name:
                continue
            if conn.recurrent:
                recurrent.append((conn, weights[c_index]))
            else:
                source = trains[conn.source].reshape(b * steps, -1)
                drive = drive + accumulate(conn.kind, weights[c_index], source, graph.shape_of(conn.source),
                                           conn.stride, conn.padding)
        drive = drive.reshape(b, steps, pop.size)
        chip = replace_spikes.get(pop.name)
        i = v = torch.zeros(b, pop.size)
        spikes, vs = [], []
        for t in range(steps):
            current = drive[:, t]
            for conn, w in recurrent:
                if spikes:
                    current = current + accumulate(conn.kind, w, spikes[-1], pop.shape, conn.stride,
                                                   conn.padding)
            i = alpha * i + current + current_biases[p_index]
            v = beta * v + i + biases[p_index]
            if pop.spiking:
                s = spike(v, theta)
                if chip is not None:
                    s = s + (chip[:, t] - s).detach()
                v = v - s.detach() * (v if pop.reset == "zero" else theta)
                spikes.append(s)
            if record:
                vs.append(v)
        trains[pop.name] = torch.stack(spikes, dim=1) if pop.spiking else torch.zeros(b, steps, pop.size)
        if record:
            v_traces[pop.name] = torch.stack(vs, dim=1)
        if pop.name == graph.output:
            output = trains[pop.name].sum(1) if pop.spiking else v
    return Trace(trains, v_traces, output)


def spike_counts(train: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A train's nonzero entries per neuron and per step (int64), as targets report activity."""
    nonzero = (train != 0).detach()
    return (nonzero.sum((0, 1)).numpy().astype(np.int64), nonzero.sum((0, 2)).numpy().astype(np.int64))
