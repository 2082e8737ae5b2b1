"""What splitting an evaluation across workers costs and gains: the wall time of `snn-compile compare`'s
runs (reference, loihi2, digital45nm) over a test set in one process and split across 1 and 2 local
worker processes (medians, with the ratio), and the bytes shipped: the model once per worker, each
batch's samples out and its RunResult back, pickled as the executors send them.

Runs on Fashion-MNIST's 10,000 test images when its IDX files are in /usr/share/datasets/fashion-mnist
(a model trained there for --epochs), else on the digits test split (540 images).

    .venv/bin/python bench/bench_split_run.py [--arch mlp] [--epochs 1] [--repeats 3] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from pathlib import Path

from frontends.datasets import load_dataset
from frontends.nir_export import to_nir
from frontends.training import TrainOptions, train
from snn_compile.compare import compare
from snn_compile.compile import CompileOptions, compile_for_targets, model_inputs
from snn_compile.split_run import _narrowed, _run_batch, split_executor
from targets.registry import get_target
from toolchain.batching import iterate_batches
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions

FMNIST = Path("/usr/share/datasets/fashion-mnist")
TARGETS = ("reference", "loihi2", "digital45nm")


def pickled(value) -> int:
    return len(pickle.dumps(value, protocol=5))


def timed(compiled, x, y, batch_size: int, workers: int | None, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        executor = split_executor("local", workers)
        start = time.perf_counter()
        if executor is None:
            compare(compiled, x, y, batch_size)
        else:
            with executor:
                compare(compiled, x, y, batch_size, executor=executor)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mlp", choices=("mlp", "csnn"))
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the model (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median; default 3)")
    parser.add_argument("--batch-size", type=int, default=256, help="samples per batch and task (default 256)")
    args = parser.parse_args()
    dataset = load_dataset("fmnist", str(FMNIST)) if FMNIST.is_dir() else load_dataset("digits")
    model, _ = train(dataset, TrainOptions(arch=args.arch, epochs=args.epochs, seed=0, progress=False))
    graph = graph_from_nir(to_nir(model, input_levels=dataset.levels))
    targets = [get_target(name) for name in TARGETS]
    compiled = compile_for_targets(graph, targets, CompileOptions(QuantizeOptions(8)))
    x, y = model_inputs(dataset.x_test, graph), dataset.y_test
    batches = list(iterate_batches(len(x), args.batch_size, None))
    print(f"{dataset.name} {args.arch}: {len(x)} test samples, {len(batches)} batches of {args.batch_size}, "
          f"targets {', '.join(TARGETS)}\n")

    print(f"{'target':12} {'model, per worker':>17} {'samples out':>12} {'results back':>13}")
    for name, c in compiled.items():
        shared = (c.target, c.model, args.batch_size, {}, x.dtype)
        back = sum(pickled(_run_batch(shared, _narrowed(x[rows]))) for rows in batches)
        out = sum(pickled(_narrowed(x[rows])) for rows in batches)
        print(f"{name:12} {pickled(shared):17,} {out:12,} {back:13,}")
    print("(bytes, pickled; the local pool's workers inherit the model when they fork, Ray ships it once per "
          "machine)\n")

    single = timed(compiled, x, y, args.batch_size, None, args.repeats)
    print(f"{'run':22} {'seconds':>8} {'one process / this':>19}")
    print(f"{'one process':22} {single:8.2f} {1.0:19.2f}")
    for workers in (1, 2):
        seconds = timed(compiled, x, y, args.batch_size, workers, args.repeats)
        print(f"{f'{workers} local worker(s)':22} {seconds:8.2f} {single / seconds:19.2f}")
    print(f"(medians of {args.repeats})")


if __name__ == "__main__":
    main()
