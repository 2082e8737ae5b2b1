r"""Operation counts of the network as trained, as NeuroBench 2.3's ``SynapticOperations`` defines them.

``toolchain.operations`` counts the network as compiled: BatchNorm folded
into the convolution and pooling folded into a larger, strided kernel, so a
spike reaches fewer, pooled targets. NeuroBench instead hooks the torch
connection layers (Linear, Conv1d/2d/3d) of the model as trained and counts,
for every call of such a layer:

- the layer's input binarized (nonzero -> 1) through its weights binarized,
  biases dropped: the sum over output elements is the call's operations;
- **Effective_ACs** when every input value is 0, 1 or -1 (spikes), else
  **Effective_MACs** (graded values);
- **Dense**: the same with every input and every weight set to 1 (zero
  padding still counts nothing);
- each divided by the samples run.

The model is run as NeuroBench's data format presents it, one input frame
per step ``(samples, steps, ...)``: a static image is repeated, so the first
layer counts once per step, as the compiled counts do. Operations are
attributed to the layer the connection feeds (the block's neurons).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from frontends.models import SpikingNetwork

CONNECTION_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The stateless layers NeuroBench 2.3 hooks (``neurobench.blocks.layer.STATELESS_LAYERS``)."""


@dataclass(frozen=True)
class TrainedOperations:
    """Per-inference counts of one block of the model as trained (means over the samples run)."""

    layer: str
    effective_acs: float
    effective_macs: float
    dense: float

    def as_dict(self) -> dict:
        return asdict(self)


def layer_name(index: int, spiking: bool) -> str:
    """The name the NIR export gives block ``index``'s neurons, and so the compiled layer's name."""
    return f"b{index}_lif" if spiking else f"b{index}_li"


def count_trained_operations(model: SpikingNetwork, x: np.ndarray, levels: int,
                             batch_size: int = 256) -> list[TrainedOperations]:
    """Counts for ``model`` run on integer inputs ``x`` in [0, ``levels``]: (samples, *input_shape)
    frames held every step, or (samples, steps, *input_shape) trains."""
    counts = {b: [0.0, 0.0, 0.0] for b in range(len(model.blocks))}
    handles = [layer.register_forward_pre_hook(_counter(counts[b]))
               for b, block in enumerate(model.blocks) for layer in block.synapse.modules()
               if isinstance(layer, CONNECTION_LAYERS)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                batch = torch.as_tensor(x[start:start + batch_size], dtype=torch.float32) / levels
                if batch.dim() == len(model.input_shape) + 1:  # one frame, presented at every step
                    batch = batch.unsqueeze(1).expand(-1, model.steps, *batch.shape[1:])
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    samples = max(len(x), 1)
    return [TrainedOperations(layer_name(b, block.spiking), *(v / samples for v in counts[b]))
            for b, block in enumerate(model.blocks)]


def totals(operations: list[TrainedOperations]) -> dict:
    """Sums over layers, named as NeuroBench's ``SynapticOperations`` names them."""
    return {"Effective_ACs": float(sum(o.effective_acs for o in operations)),
            "Effective_MACs": float(sum(o.effective_macs for o in operations)),
            "Dense": float(sum(o.dense for o in operations))}


def _counter(into: list[float]):
    """A forward pre-hook adding one call's (ACs, MACs, dense) to ``into``; dense depends only on
    the input's shape, so it is computed once per shape."""
    dense_by_shape: dict[tuple, float] = {}

    def hook(layer, inputs):
        (values,) = inputs
        spiking = bool(torch.all((values == 0) | (values == 1) | (values == -1)))
        into[0 if spiking else 1] += _binary_ops(layer, (values != 0).float(), (layer.weight != 0).float())
        shape = tuple(values.shape)
        if shape not in dense_by_shape:
            dense_by_shape[shape] = _binary_ops(layer, torch.ones(shape), torch.ones_like(layer.weight))
        into[2] += dense_by_shape[shape]
    return hook


def _binary_ops(layer, inputs: torch.Tensor, weight: torch.Tensor) -> float:
    """Sum of ``layer`` applied without bias to 0/1 ``inputs`` with 0/1 ``weight``. Each output is
    at most the fan-in, exact in float32; the sum is taken in float64, exact too."""
    if isinstance(layer, nn.Linear):
        out = F.linear(inputs, weight)
    else:
        conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}[type(layer)]
        out = conv(inputs, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return float(out.double().sum())
