"""Float reference target: the network as trained, in float32, zero delay.

Runs the compiler's float ``Graph`` (before quantization) with the same
equations the front end trained (see ``toolchain.ir.Population``), so it is
the baseline every integer target is compared with.
"""

from __future__ import annotations

import numpy as np
import torch

from targets.results import LayerActivity, RunResult
from targets.batching import iterate_batches
from toolchain.synaptic import accumulate
from toolchain.ir import INPUT, Graph


def run(graph: Graph, inputs: np.ndarray, batch_size: int = 256, progress: str | None = None,
        record: bool = False) -> RunResult:
    """``inputs``: integers in [0, input_levels], like the chip's; divided by
    input_levels they are the float input the model was trained on."""
    inputs = np.asarray(inputs)
    parts = [_run_batch(graph, inputs[batch], record)
             for batch in iterate_batches(len(inputs), batch_size, progress)]
    return RunResult.concatenate(parts)


def _run_batch(graph: Graph, x: np.ndarray, record: bool) -> RunResult:
    steps, b = graph.steps, len(x)
    x = torch.as_tensor(x, dtype=torch.float32) / graph.input_levels
    if x.dim() == 1 + len(graph.input_shape):
        x = x.unsqueeze(1).expand(b, steps, *graph.input_shape)
    n_in = int(np.prod(graph.input_shape))
    acts = {INPUT: x.reshape(b * steps, n_in)}
    nonzero = (acts[INPUT] != 0).reshape(b, steps, n_in)
    activity = {INPUT: LayerActivity(nonzero.sum((0, 1)).numpy().astype(np.int64),
                                     nonzero.sum((0, 2)).numpy().astype(np.int64))}
    trains, vs, readout = {}, {}, None
    for pop in graph.populations:
        n = pop.size
        f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        alpha, beta, theta, bias = f32(pop.alpha), f32(pop.beta), f32(pop.threshold), f32(pop.bias)
        current_bias = f32(pop.current_bias)
        drive = torch.zeros(b * steps, n)
        recurrent = []
        for conn in graph.incoming(pop.name):
            w = f32(conn.weight)
            if conn.recurrent:
                recurrent.append((conn, w))
            else:
                drive += accumulate(conn.kind, w, acts[conn.source], graph.shape_of(conn.source),
                                    conn.stride, conn.padding)
        drive = drive.reshape(b, steps, n)
        i = torch.zeros(b, n)
        v = torch.zeros(b, n)
        spikes = torch.zeros(b, steps, n)
        v_trace = torch.zeros(b, steps, n) if record else None
        for t in range(steps):
            current = drive[:, t]
            for conn, w in recurrent:
                if t > 0:
                    current = current + accumulate(conn.kind, w, spikes[:, t - 1], pop.shape,
                                                   conn.stride, conn.padding)
            i = alpha * i + current + current_bias
            v = beta * v + i + bias
            if pop.spiking:
                fired = v > theta
                spikes[:, t] = fired.float()
                v = torch.where(fired, torch.zeros_like(v) if pop.reset == "zero" else v - theta, v)
            if record:
                v_trace[:, t] = v
        acts[pop.name] = spikes.reshape(b * steps, n)
        activity[pop.name] = LayerActivity(spikes.sum((0, 1)).numpy().astype(np.int64),
                                           spikes.sum((0, 2)).numpy().astype(np.int64))
        if record:
            trains[pop.name], vs[pop.name] = spikes.numpy().astype(np.uint8), v_trace.numpy()
        if pop.name == graph.output:
            readout = (spikes.sum(1) if pop.spiking else v).numpy().astype(np.float64)
    return RunResult(output=readout, activity=activity, samples=b, steps=steps, trains=trains, v=vs)
