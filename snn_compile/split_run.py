"""A target's run over many samples, split across the workers of an executor, with the numbers of
one run in this process.

The samples go out in the batches one run would make (``batch_size`` each, from the first sample),
one batch per task, so every batch is computed on exactly the inputs it would be computed on here;
the model goes to each worker once, and the batches' results are merged in sample order: outputs
and recordings concatenated, activity counts summed (``RunResult.concatenate``, which a run here
uses to merge its own batches).
"""

from __future__ import annotations

from contextlib import closing

import numpy as np

from snn_compile.executors import Retry, cluster_executor
from targets.registry import Target
from toolchain.batching import iterate_batches
from toolchain.errors import UserError
from toolchain.results import RunResult


def run_target(target: Target, model, x: np.ndarray, executor=None, batch_size: int = 256,
               progress: str | None = None, **options) -> RunResult:
    """``target.run(model, x, batch_size=, progress=, **options)``; with ``executor`` (entered
    by the caller), its batches run as tasks on the executor's workers."""
    if executor is None:
        return target.run(model, x, batch_size=batch_size, progress=progress, **options)
    if options.get("device") == "auto":  # the workers' CPUs: a GPU is for one process's whole run
        options["device"] = "cpu"
    batches = [_narrowed(x[rows]) for rows in iterate_batches(len(x), batch_size, None)]
    parts: list[RunResult | None] = [None] * len(batches)
    from tqdm import tqdm
    bar = tqdm(total=len(batches), desc=f"{progress} on {executor.describe()}" if progress else None,
               unit="batch", leave=False, disable=None if progress else True)
    shared = (target, model, batch_size, options, x.dtype)
    with bar, closing(executor.run(_run_batch, shared, batches)) as outcomes:
        for outcome in outcomes:
            first = outcome.index * batch_size
            where = f"{target.name}, samples {first}..{first + len(outcome.item) - 1}"
            if isinstance(outcome, Retry):
                if progress:
                    bar.write(f"{where}: {outcome.error}; running them again")
                continue
            if outcome.error is not None:
                raise UserError(f"{where}: {outcome.error}, on both attempts")
            parts[outcome.index] = outcome.result
            bar.update()
    return RunResult.concatenate(parts)


def _narrowed(batch: np.ndarray) -> np.ndarray:
    """Integer samples in the narrowest integer type that holds their values, for the trip to the
    worker (Fashion-MNIST's int64 pixels: 8x fewer bytes); the worker restores the caller's type."""
    if batch.dtype.kind not in "iu" or batch.size == 0:
        return batch
    return batch.astype(np.promote_types(np.min_scalar_type(batch.min()), np.min_scalar_type(batch.max())))


def _run_batch(shared: tuple, inputs: np.ndarray) -> RunResult:
    """A worker's task: one batch, in the caller's type, through the model every task shares."""
    target, model, batch_size, options, dtype = shared
    return target.run(model, inputs.astype(dtype, copy=False), batch_size=batch_size, **options)


def split_executor(cluster: str, workers: int | None, device: str | None = None):
    """The executor ``--cluster`` and ``--workers`` name for a split run, or None (no split: neither
    given); refused, before any work, with ``--device cuda`` (the workers run on their CPUs)."""
    if cluster == "local" and workers is None:
        return None
    if device == "cuda":
        raise UserError("--device cuda runs every sample on this machine's GPU and --workers / --cluster split "
                        "them across CPU workers: choose one")
    return cluster_executor(cluster, workers)
