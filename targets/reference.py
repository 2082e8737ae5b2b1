"""Float reference target: the network as trained, in float32, zero delay.

Runs the compiler's float ``Graph`` (before quantization) through
``toolchain.interpret``, the same equations the front end trained and the
fine-tuners use, so it is the baseline every integer target is compared with.
"""

from __future__ import annotations

import numpy as np
import torch

from toolchain.batching import iterate_batches
from toolchain.interpret import interpret, spike_counts
from toolchain.ir import Graph
from toolchain.results import LayerActivity, RunResult


def run(graph: Graph, inputs: np.ndarray, batch_size: int = 256, progress: str | None = None,
        record: bool = False) -> RunResult:
    """``inputs``: integers in [0, input_levels], like the chip's; divided by
    input_levels they are the float input the model was trained on."""
    inputs = np.asarray(inputs)
    parts = [_run_batch(graph, inputs[batch], record)
             for batch in iterate_batches(len(inputs), batch_size, progress)]
    return RunResult.concatenate(parts)


def _run_batch(graph: Graph, x: np.ndarray, record: bool) -> RunResult:
    with torch.no_grad():
        trace = interpret(graph, torch.as_tensor(x), record=record)
    activity = {name: LayerActivity(*spike_counts(train)) for name, train in trace.spikes.items()}
    trains = {name: trace.spikes[name].numpy().astype(np.uint8) for name in trace.v} if record else {}
    vs = {name: v.numpy() for name, v in trace.v.items()}
    return RunResult(output=trace.output.numpy().astype(np.float64), activity=activity, samples=len(x),
                     steps=graph.steps, trains=trains, v=vs)
