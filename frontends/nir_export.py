"""Export our snnTorch models to NIR, in snnTorch's own conventions.

snnTorch 1.0's ``export_to_nir`` fails on scalar beta, drops the reset
mechanism, cannot export pooling reliably and stores no time step or step
count. The models here have a fixed, known structure, so we write the NIR
graph directly with the same conventions (``Leaky(beta)`` -> ``LIF`` with
dt = 1e-4, tau = dt / (1 - beta), R = tau / dt), fold BatchNorm into the
convolution, and record dt, steps, reset rule and input encoding in the
graph's metadata for the compiler.
"""

from __future__ import annotations

import json

import nir
import numpy as np
import torch
from torch import nn

from frontends.models import SpikingNetwork
from toolchain.ir import pair

DT = 1e-4


def to_nir(model: SpikingNetwork, input_levels: int, dt: float = DT, coding: dict | None = None) -> nir.NIRGraph:
    """``coding``: the host-side encoder and decoder, kept in the graph's metadata (as JSON)."""
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(model.input_shape)})}
    edges: list[tuple[str, str]] = []
    previous, shape = "input", tuple(model.input_shape)
    for b, block in enumerate(model.blocks):
        for name, node, shape in _synapse_nodes(f"b{b}", block.synapse, shape):
            nodes[name] = node
            edges.append((previous, name))
            previous = name
        name = f"b{b}_lif" if block.spiking else f"b{b}_li"
        nodes[name] = _lif_node(block, shape, dt)
        edges.append((previous, name))
        previous = name
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((previous, "output"))
    metadata = {"dt": dt, "steps": model.steps, "reset": "zero", "input_levels": input_levels,
                "producer": "snn-compile frontends.nir_export", "source_framework": "snntorch"}
    if coding:
        metadata["coding"] = json.dumps(coding)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _synapse_nodes(prefix: str, synapse: nn.Sequential, shape):
    """NIR nodes for one block's synapse; BatchNorm folds into the conv before it."""
    layers = list(synapse)
    i = 0
    while i < len(layers):
        layer = layers[i]
        name = f"{prefix}_{i}"
        if isinstance(layer, nn.Flatten):
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, nn.Linear):
            node = nir.Affine(weight=_array(layer.weight), bias=_array(layer.bias))
            shape = (layer.out_features,)
        elif isinstance(layer, nn.Conv2d):
            weight, bias = layer.weight, layer.bias
            if i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
                weight, bias = fold_batchnorm(layer, layers[i + 1])
                i += 1
            node = nir.Conv2d(input_shape=shape[1:], weight=_array(weight), stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                              bias=_array(bias))
            h = (shape[1] + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
            w = (shape[2] + 2 * layer.padding[1] - layer.kernel_size[1]) // layer.stride[1] + 1
            shape = (layer.out_channels, h, w)
        elif isinstance(layer, nn.AvgPool2d):
            k = pair(layer.kernel_size)
            s = pair(layer.stride or layer.kernel_size)
            node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(pair(layer.padding)))
            shape = (shape[0], shape[1] // s[0], shape[2] // s[1])
        else:
            raise ValueError(f"layer {type(layer).__name__} has no NIR export")
        yield name, node, shape
        i += 1


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference-time BatchNorm is a per-channel affine map: fold it into the conv."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return conv.weight * scale[:, None, None, None], (bias - bn.running_mean) * scale + bn.bias


def _lif_node(block, shape, dt: float) -> nir.NIRNode:
    if not block.spiking:
        tau = dt / (1.0 - block.beta) if block.beta < 1 else 1e9
        return nir.LI(tau=np.full(shape, tau), r=np.full(shape, tau / dt), v_leak=np.zeros(shape))
    neurons = block.neurons
    beta = float(neurons.beta.clamp(0, 1))
    threshold = np.full(shape, float(neurons.threshold), dtype=np.float32)
    if beta >= 1.0:
        return nir.IF(r=np.ones(shape, dtype=np.float32), v_threshold=threshold)
    tau = dt / (1.0 - beta)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / dt),
                   v_leak=np.zeros(shape, dtype=np.float32), v_threshold=threshold)

