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

import numpy as np
import torch
from tqdm import tqdm

from toolchain.synaptic import accumulate
from toolchain.ir import INPUT, Graph
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


class _TrainableGraph(torch.nn.Module):
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
        ``toolchain.chip_in_loop`` trains this way."""
        chip_spikes = chip_spikes or {}
        g, steps, b = self.graph, self.graph.steps, len(x_int)
        x = (x_int.float() / g.input_levels).reshape(b, -1)
        acts = {INPUT: x.unsqueeze(1).expand(b, steps, x.shape[1]).reshape(b * steps, -1)}
        out = None
        for p_index, pop in enumerate(g.populations):
            f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
            alpha, beta, theta = f32(pop.alpha), f32(pop.beta), f32(pop.threshold)
            drive, recurrent = 0, []
            for c_index, conn in enumerate(g.connections):
                if conn.target != pop.name:
                    continue
                w = self.snapped(c_index)
                if conn.recurrent:
                    recurrent.append((conn, w))
                else:
                    drive = drive + accumulate(conn.kind, w, acts[conn.source], g.shape_of(conn.source),
                                               conn.stride, conn.padding)
            drive = drive.reshape(b, steps, pop.size)
            chip = chip_spikes.get(pop.name)
            i = v = torch.zeros(b, pop.size)
            spikes = []
            for t in range(steps):
                current = drive[:, t]
                for conn, w in recurrent:
                    if spikes:
                        current = current + accumulate(conn.kind, w, spikes[-1], pop.shape, conn.stride,
                                                       conn.padding)
                i = alpha * i + current + self.current_biases[p_index]
                v = beta * v + i + self.biases[p_index]
                if pop.spiking:
                    s = _Spike.apply(v - theta)
                    if chip is not None:
                        s = s + (chip[:, t] - s).detach()
                    v = v - s.detach() * (v if pop.reset == "zero" else theta)
                    spikes.append(s)
            if pop.spiking:
                acts[pop.name] = torch.stack(spikes, dim=1).reshape(b * steps, pop.size)
            if pop.name == g.output:
                out = acts[pop.name].reshape(b, steps, -1).sum(1) if pop.spiking else v
        return out if chip_readout is None else out + (chip_readout - out).detach()

    def to_graph(self) -> Graph:
        connections = [replace(c, weight=self.snapped(i).detach().double().numpy())
                       for i, c in enumerate(self.graph.connections)]
        populations = [replace(p, bias=bias.detach().double().numpy(),
                               current_bias=current_bias.detach().double().numpy())
                       for p, bias, current_bias in zip(self.graph.populations, self.biases, self.current_biases)]
        g = self.graph
        return Graph(g.input_shape, populations, connections, g.output, g.steps, g.dt, g.input_levels,
                     dict(g.metadata))


def finetune(graph: Graph, images: np.ndarray, labels: np.ndarray, options: FinetuneOptions) -> Graph:
    """Fine-tune ``graph`` with its weights fake-quantized to ``options.bits``."""
    torch.manual_seed(options.seed)
    model = _TrainableGraph(graph, options)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    x, y = torch.as_tensor(images), torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(options.seed)
    batches = (len(x) + options.batch_size - 1) // options.batch_size
    bar = tqdm(total=options.epochs * batches, desc=f"fine-tuning {options.bits}-bit", unit="batch",
               disable=None if options.progress else True, leave=False)
    for _ in range(options.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), options.batch_size):
            idx = order[start:start + options.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update()
    bar.close()
    return model.to_graph()
