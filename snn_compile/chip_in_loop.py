"""Chip-in-the-loop fine-tuning: the chip computes the forward pass, the float model the gradient.

Quantization-aware fine-tuning (``toolchain.finetune``) trains against a
float imitation of the chip; what it cannot see is everything else the
integer arithmetic does: thresholds rounded to 17 bits, decays to 12, biases
to a mantissa and exponent, truncating shifts in u and v. Here each batch
runs on the emulated chip itself (in process or on a board behind a socket,
anything with the chip's calls), with the weights as the chip holds them:

1. the current weights are snapped to their fixed grid, compiled by the
   quantize pass, and loaded onto the chip;
2. the chip runs the batch; every layer's spike trains are probed;
3. the float model recomputes each layer from the chip's spikes of the
   layer before, and its spikes are replaced by the chip's in value but not
   in gradient (straight-through): ``s = s_float + (s_chip - s_float).detach()``;
4. the loss is taken on the chip's output, and its gradient flows back
   through the float model's arctan surrogate to the float weights.

So every forward value is the chip's, and the gradient is the float model's
linearisation around the chip's own activity. Rounding of the weights is
straight-through as in ``toolchain.finetune``, whose trainable graph this
reuses.
"""

from __future__ import annotations

import numpy as np
import torch

from targets.loihi2.chip import run_samples
from toolchain.finetune import FinetuneOptions, TrainableGraph, train
from toolchain.ir import Graph
from toolchain.passes.quantize import QuantizeOptions, quantize
from toolchain.program import Program


class _ChipInLoopGraph(TrainableGraph):
    """The fine-tuner's float graph, each layer driven by the chip's spikes of the layers before it."""

    def compile(self, chip_spec) -> Program:
        """The program the chip runs now: the snapped weights on the chip's grid, exactly."""
        return quantize(self.to_graph(), chip_spec, QuantizeOptions(self.options.bits, "max", self.options.granularity))


def chip_in_the_loop(graph: Graph, chip_spec, board, images: np.ndarray, labels: np.ndarray,
                     options: FinetuneOptions) -> tuple[Graph, Program]:
    """Fine-tune ``graph`` with every forward pass on ``board`` (a ``Chip`` or a ``Board``).

    ``options`` are the fine-tuner's (the weight grid, epochs, rate, batch = lanes).
    Returns the tuned graph (weights on the chip's grid) and the program compiled from it."""
    torch.manual_seed(options.seed)
    model = _ChipInLoopGraph(graph, options)
    spiking = [p.name for p in graph.populations if p.spiking]

    def on_chip(trainable: _ChipInLoopGraph, batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            board.load(trainable.compile(chip_spec), lanes=options.batch_size)
        readout, traces = run_samples(board, batch.numpy(), probe=spiking)
        chip_spikes = {name: torch.as_tensor(traces[name]["spikes"], dtype=torch.float32) for name in spiking}
        return trainable(batch, chip_spikes, torch.as_tensor(readout, dtype=torch.float32))

    train(model, images, labels, options, f"chip-in-the-loop {options.bits}-bit", forward=on_chip)
    with torch.no_grad():
        return model.to_graph(), model.compile(chip_spec)
