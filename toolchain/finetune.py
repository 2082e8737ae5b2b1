"""Quantization-aware fine-tuning of a compiled graph (straight-through estimator).

Fine-tuning happens on the compiler's float graph, after fusion and pruning,
because that is what the chip holds: pooling is already folded into the
convolution kernels, so the weights trained here are exactly the ones the
quantize pass snaps to the chip's grid. The forward pass uses the weights
rounded to ``bits`` on a fixed symmetric grid (per tensor or per channel,
steps chosen once by the MSE rule of the quantize pass) and the same neuron
equations as the reference target; gradients pass the rounding unchanged
(straight-through) and the spike through an arctan surrogate, as snnTorch
does. Pruned (zero) synapses stay zero. The result holds the snapped weights,
so quantizing it with ``weight_scale="max"`` reproduces the grid exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from toolchain.interpret import interpret
from toolchain.ir import Graph
from toolchain.passes.quantize import choose_weight_step


@dataclass(frozen=True)
class FinetuneOptions:
    bits: int
    epochs: int = 2
    learning_rate: float = 5e-4
    batch_size: int = 128
    granularity: str = "tensor"
    seed: int = 0
    progress: bool = True


class _Spike(torch.autograd.Function):
    """Heaviside forward, arctan surrogate backward (snnTorch's default)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (1 + (np.pi * x) ** 2)


def _surrogate_spike(v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return _Spike.apply(v - threshold)


def _grid_steps(weight: np.ndarray, qmax: int, per_channel: bool) -> torch.Tensor:
    rows = weight.reshape(weight.shape[0], -1)
    if per_channel:
        steps = [choose_weight_step(row, qmax, "mse") for row in rows]
    else:
        steps = [choose_weight_step(rows, qmax, "mse")] * rows.shape[0]
    return torch.as_tensor(steps, dtype=torch.float32)[:, None]


def _fake_quantize(w: torch.Tensor, step: torch.Tensor, qmax: int) -> torch.Tensor:
    rows = w.reshape(w.shape[0], -1)
    snapped = torch.clamp(torch.round(rows / step), -qmax, qmax) * step
    return (rows + (snapped - rows).detach()).reshape(w.shape)


class TrainableGraph(torch.nn.Module):
    """A graph with trainable weights (fake-quantized to ``options.bits``) and biases, run by
    ``toolchain.interpret`` with a surrogate spike."""

    def __init__(self, graph: Graph, options: FinetuneOptions):
        super().__init__()
        self.graph, self.options = graph, options
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.as_tensor(c.weight, dtype=torch.float32)) for c in graph.connections])
        self.masks = [torch.as_tensor(c.weight != 0, dtype=torch.float32) for c in graph.connections]
        self.qmax = max(2 ** (options.bits - 1) - 1, 1)
        self.steps = [_grid_steps(c.weight, self.qmax, options.granularity == "channel") for c in graph.connections]
        self.biases = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.as_tensor(p.bias, dtype=torch.float32)) for p in graph.populations])
        # without a current state (alpha = 0) a current bias is a membrane bias: train only the latter
        self.current_biases = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.as_tensor(p.current_bias, dtype=torch.float32),
                                requires_grad=bool(np.any(p.alpha > 0))) for p in graph.populations])

    def snapped(self, index: int) -> torch.Tensor:
        return _fake_quantize(self.weights[index] * self.masks[index], self.steps[index], self.qmax)

    def forward(self, x_int: torch.Tensor, chip_spikes: dict[str, torch.Tensor] | None = None,
                chip_readout: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the float imitation of the chip.

        With ``chip_spikes`` (per layer, (samples, steps, neurons) as a chip fired
        them) and ``chip_readout`` (the chip's answer), every spike and the output
        take the chip's value and keep the float model's gradient (straight-through);
        chip-in-the-loop training does this."""
        weights = [self.snapped(i) for i in range(len(self.graph.connections))]
        trace = interpret(self.graph, x_int, weights=weights, biases=list(self.biases),
                          current_biases=list(self.current_biases), spike=_surrogate_spike,
                          replace_spikes=chip_spikes)
        out = trace.output
        return out if chip_readout is None else out + (chip_readout - out).detach()

    def to_graph(self) -> Graph:
        connections = [replace(c, weight=self.snapped(i).detach().double().numpy())
                       for i, c in enumerate(self.graph.connections)]
        populations = [replace(p, bias=bias.detach().double().numpy(),
                               current_bias=current_bias.detach().double().numpy())
                       for p, bias, current_bias in zip(self.graph.populations, self.biases, self.current_biases)]
        return self.graph.replace(populations=populations, connections=connections)


def finetune(graph: Graph, images: np.ndarray, labels: np.ndarray, options: FinetuneOptions) -> Graph:
    """Fine-tune ``graph`` with its weights fake-quantized to ``options.bits``."""
    torch.manual_seed(options.seed)
    model = TrainableGraph(graph, options)
    train(model, images, labels, options, f"fine-tuning {options.bits}-bit")
    return model.to_graph()


def train(model: TrainableGraph, images: np.ndarray, labels: np.ndarray, options: FinetuneOptions, description: str,
          forward: Callable[[TrainableGraph, torch.Tensor], torch.Tensor] | None = None) -> None:
    """The fine-tuners' loop: Adam on cross-entropy over shuffled batches, seeded. ``forward(model, x)``
    gives the logits of a batch (default: the model's own float forward pass)."""
    forward = forward or (lambda trainable, batch: trainable(batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    x, y = torch.as_tensor(images), torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(options.seed)
    batches = (len(x) + options.batch_size - 1) // options.batch_size
    bar = tqdm(total=options.epochs * batches, desc=description, unit="batch",
               disable=None if options.progress else True, leave=False)
    for _ in range(options.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), options.batch_size):
            idx = order[start:start + options.batch_size]
            loss = torch.nn.functional.cross_entropy(forward(model, x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update()
    bar.close()
