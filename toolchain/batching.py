"""Batches of samples, with a progress bar for long runs."""

from __future__ import annotations


def iterate_batches(total: int, batch_size: int, progress: str | None):
    """Batch slices, with a progress bar when a description is given."""
    starts = range(0, total, batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=progress, unit="batch", leave=False, disable=None)
    for start in starts:
        yield slice(start, min(total, start + batch_size))
