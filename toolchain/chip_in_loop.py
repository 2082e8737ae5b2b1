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
from tqdm import tqdm

from targets.loihi2.chip import run_samples
from toolchain.finetune import FinetuneOptions, _TrainableGraph
from toolchain.ir import Graph
from toolchain.passes.quantize import QuantizeOptions, quantize
from toolchain.program import Program


class _ChipInLoopGraph(_TrainableGraph):
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
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    x, y = torch.as_tensor(images), torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(options.seed)
    batches = (len(x) + options.batch_size - 1) // options.batch_size
    spiking = [p.name for p in graph.populations if p.spiking]
    bar = tqdm(total=options.epochs * batches, desc=f"chip-in-the-loop {options.bits}-bit", unit="batch",
               disable=None if options.progress else True, leave=False)
    for _ in range(options.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), options.batch_size):
            idx = order[start:start + options.batch_size]
            with torch.no_grad():
                board.load(model.compile(chip_spec), lanes=options.batch_size)
            readout, traces = run_samples(board, x[idx].numpy(), probe=spiking)
            chip_spikes = {name: torch.as_tensor(traces[name]["spikes"], dtype=torch.float32) for name in spiking}
            out = model(x[idx], chip_spikes, torch.as_tensor(readout, dtype=torch.float32))
            loss = torch.nn.functional.cross_entropy(out, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update()
    bar.close()
    with torch.no_grad():
        return model.to_graph(), model.compile(chip_spec)
