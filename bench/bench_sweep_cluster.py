"""What a distributed sweep ships and how it scales: for the digits MLP and CSNN, the bytes that go
to the workers once (model, data splits, the uncompressed calibration) and per row (the setting
out, the row back), pickled as the executors send them; then the wall time of a small digits MLP
sweep (--bits 8,4 --prune 0.2, greedy pruning search) on 1 and 2 local worker processes, and on a
local Ray with 1 and 2 CPUs when Ray is installed, with the ratios.

    .venv/bin/python bench/bench_sweep_cluster.py [--epochs 15] [--repeats 1]
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time

from frontends.datasets import load_dataset
from frontends.nir_export import to_nir
from frontends.training import TrainOptions, train
from snn_compile.sweep import _evaluate_row, _shared_values, run_sweep, split_data, sweep_executor, sweep_settings
from targets.registry import get_target
from toolchain.nir_import import graph_from_nir

DEFAULT_GRID = dict(bits=[16, 8, 4], ratios=[0.1, 0.2, 0.3], methods=("baseline", "best"))
TIMED_GRID = dict(bits=[8, 4], ratios=[0.2], methods=("baseline", "best"))


def pickled(value) -> int:
    return len(pickle.dumps(value, protocol=5))


def shipped(graph, data) -> dict:
    """Bytes of what every row shares and of one row's traffic, for the default sweep grid without
    and with fine-tuning (which ships the training split too)."""
    target = get_target("loihi2")
    plain = sweep_settings(DEFAULT_GRID["bits"], DEFAULT_GRID["ratios"], DEFAULT_GRID["methods"])
    tuned = sweep_settings(DEFAULT_GRID["bits"], DEFAULT_GRID["ratios"], DEFAULT_GRID["methods"] + ("finetuned",))
    once = _shared_values(graph, target, data, plain, 0, True)
    row = _evaluate_row(once, (8, 0.0, "baseline"))
    graph, _, shipped_data, _, _, calibration = once
    return {"model": pickled(graph), "data": pickled(shipped_data), "calibration": pickled(calibration),
            "once": pickled(once), "once_tuned": pickled(_shared_values(graph, target, data, tuned, 1, True)),
            "setting": pickled((8, 0.2, "best")), "row": pickled(row)}


def timed(graph, data, executor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_sweep(graph, get_target("loihi2"), data, executor=executor, progress=False, **TIMED_GRID)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of each model (default 15)")
    parser.add_argument("--repeats", type=int, default=1, help="timed sweeps per executor (median; default 1)")
    args = parser.parse_args()
    digits = load_dataset("digits")
    data = split_data(digits)
    graphs = {}
    print(f"{'model':6} {'graph':>9} {'data':>9} {'calib.':>9} {'once':>9} {'+finetune':>10} {'setting':>8} "
          f"{'row':>6}")
    for arch in ("mlp", "csnn"):
        model, _ = train(digits, TrainOptions(arch=arch, epochs=args.epochs, seed=0, progress=False))
        graphs[arch] = graph_from_nir(to_nir(model, input_levels=digits.levels))
        s = shipped(graphs[arch], data)
        print(f"{arch:6} {s['model']:9,} {s['data']:9,} {s['calibration']:9,} {s['once']:9,} {s['once_tuned']:10,} "
              f"{s['setting']:8,} {s['row']:6,}")
    print("(bytes, pickled, for --bits 16,8,4 --prune 0.1,0.2,0.3: 'once' is what each worker machine receives, "
          "'+finetune' the same with --finetune-epochs; 'setting' out and 'row' back, per row)\n")

    small = split_data(digits, calibration=128, validation=128)
    results = {}
    for workers in (1, 2):
        results[f"local {workers}"] = timed(graphs["mlp"], small, sweep_executor("local", workers), args.repeats)
    try:
        import ray
    except ImportError:
        ray = None
    if ray is not None:
        for cpus in (1, 2):
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
            try:
                results[f"ray {cpus}"] = timed(graphs["mlp"], small, sweep_executor("auto"), args.repeats)
            finally:
                ray.shutdown()
    rows = len(sweep_settings(TIMED_GRID["bits"], TIMED_GRID["ratios"], TIMED_GRID["methods"]))
    print(f"digits MLP sweep, {rows} rows, {len(small.test_x)} test samples (median of {args.repeats}):")
    print(f"{'executor':10} {'seconds':>8} {'1 / this':>9}")
    for name, seconds in results.items():
        base = results[name.split()[0] + " 1"]
        print(f"{name:10} {seconds:8.1f} {base / seconds:9.2f}")


if __name__ == "__main__":
    main()
