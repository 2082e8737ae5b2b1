"""Synaptic accumulation shared by the float and the integer targets."""

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


def iterate_batches(total: int, batch_size: int, progress: str | None):
    """Batch slices, with a progress bar when a description is given."""
    starts = range(0, total, batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=progress, unit="batch", leave=False, disable=None)
    for start in starts:
        yield slice(start, min(total, start + batch_size))
