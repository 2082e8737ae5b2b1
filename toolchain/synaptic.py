"""Synaptic accumulation: the one linear operation every target and the fine-tuner share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def accumulate(kind: str, weight: torch.Tensor, x: torch.Tensor, in_shape, stride=(1, 1),
               padding=(0, 0)) -> torch.Tensor:
    """Weighted input sums for a batch of flattened activity ``x`` (rows, in size)."""
    if kind == "dense":
        return x @ weight.T
    out = F.conv2d(x.reshape((-1,) + tuple(in_shape)), weight, stride=tuple(stride), padding=tuple(padding))
    return out.reshape(x.shape[0], -1)


def patches(kind: str, x: torch.Tensor, in_shape, kernel=(1, 1), stride=(1, 1), padding=(0, 0)) -> torch.Tensor:
    """What one output neuron's weights multiply, one row per (input row, output position):
    unfolded patches for a convolution (channel-major, like the weight), ``x`` itself for dense."""
    if kind == "dense":
        return x
    unfolded = F.unfold(x.reshape((-1,) + tuple(in_shape)), tuple(kernel), stride=tuple(stride),
                        padding=tuple(padding))
    return unfolded.transpose(1, 2).reshape(-1, unfolded.shape[1])
