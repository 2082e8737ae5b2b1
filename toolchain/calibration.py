"""Calibration runs: what the float model does on a few training images.

Passes that adapt to the data (output-error weight steps, bias correction,
activity and redundancy ranking, pruning compensation) read these statistics;
the compile command and the sweep gather them the same way.
"""

from __future__ import annotations

import numpy as np

import torch

from toolchain.interpret import interpret
from toolchain.ir import INPUT, Graph
from toolchain.passes.prune import Calibration, GramAccumulator, prunable


def calibrate(graph: Graph, images: np.ndarray, gram: bool = False, batch_size: int = 128) -> Calibration:
    """Mean activity per neuron per step (input: mean integer value) from the float model and,
    if asked, the Gram matrix of every connection leaving a prunable population (batch by
    batch: the trains of a whole calibration set do not fit in memory)."""
    if len(images) == 0:
        raise ValueError("calibration needs at least one image")
    sources = set(prunable(graph)) if gram else set()
    accumulators = {(c.source, c.target): GramAccumulator(graph, c) for c in graph.connections if c.source in sources}
    counts = []
    for start in range(0, len(images), batch_size):
        with torch.no_grad():
            trains = interpret(graph, torch.as_tensor(images[start:start + batch_size])).spikes
        counts.append({k: train.sum((0, 1)).numpy().astype(np.int64) for k, train in trains.items()})
        for (source, _), accumulator in accumulators.items():
            accumulator.add(trains[source].numpy())
    rates = {k: sum(part[k] for part in counts) / (len(images) * graph.steps) for k in counts[0]}
    rates[INPUT] = images.reshape(len(images), -1, int(np.prod(graph.input_shape))).mean(axis=(0, 1))
    return Calibration(rates, {k: a.gram for k, a in accumulators.items()} if gram else None)
