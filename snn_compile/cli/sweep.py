"""``snn-compile sweep MODEL``: accuracy, size and cost across weight bits x pruning ratios (x core budgets)."""

from __future__ import annotations

import argparse
from pathlib import Path

from snn_compile.cli.common import (DATA_HELP, FORCE_HELP, FRAMEWORK_HELP, RESET_HELP, Parser, check_steps,
                                    model_with_data, number_list, one_line, output_path, positive,
                                    require_run_memory)
from targets.registry import get_target, TARGETS
from toolchain.errors import UserError
from toolchain.files import StagingDir


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="snn-compile sweep", description="Compress MODEL at every weight width and "
                                "pruning ratio, with the seed's plain recipe (baseline) and with calibrated "
                                "options chosen on a validation split of the training data (best). Writes "
                                "sweep.csv, sweep.json, sweep.md, sweep.html and sweep.png.")
    p.add_argument("model", help="snn-compile checkpoint (.pt) or NIR graph (.nir)")
    p.add_argument("--bits", default="16,8,4", help="comma-separated weight widths, 1..16 (<= 8 runs on the "
                   "Loihi 2 emulator, wider on the digital target; default 16,8,4)")
    p.add_argument("--prune", default="0.1,0.2,0.3", help="comma-separated structured pruning ratios in [0, 1) "
                   "(default 0.1,0.2,0.3)")
    p.add_argument("--max-cores", help="comma-separated Loihi core budgets, e.g. 8,16,32: per method and chip "
                   "width, a row pruned to fit each (as compile --max-cores N --prune-to-fit prunes: structured, "
                   "each cut chosen by what the readout loses on the calibration images per core saved)")
    p.add_argument("--methods", default="baseline,best", help="baseline, best or both (default both)")
    p.add_argument("--target", default="loihi2", help=f"where rows run: {', '.join(TARGETS)} (default loihi2; "
                   "widths it does not hold run on the first target that does)")
    p.add_argument("-o", "--output", type=output_path, help="output directory (default: next to MODEL, "
                   "MODEL-sweep); an existing one is replaced only with --force or --resume")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep: keep the rows in the "
                   "output directory and compute only the missing settings (the options must be the same)")
    p.add_argument("--dataset", help="dataset (default: the one the checkpoint names)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--data", type=Path, metavar="FILE.npz", help=DATA_HELP)
    p.add_argument("--samples", type=int, help="evaluate on the first N test samples (default: all)")
    p.add_argument("--calibration", type=int, default=512, help="training samples for calibration (default 512; "
                   "pruning's least-squares refit gains from more: the Fashion-MNIST study uses 8192)")
    p.add_argument("--workers", type=int, help="parallel processes (default: one per core); with --cluster, "
                   "at most N rows at a time (default: as many as the cluster has CPUs)")
    p.add_argument("--cluster", default="local", help="where rows run: local (default: processes on this "
                   "machine), auto (the Ray cluster this machine joined with `ray start`), HOST:PORT (a Ray "
                   "cluster's head) or ray://HOST:PORT (its client port); one Ray task per row, the model and "
                   "data shipped once (needs pip install 'snn-compile[cluster]')")
    p.add_argument("--finetune-epochs", type=int, default=0, help="also fine-tune each setting for N epochs "
                   "(quantization-aware, straight-through estimator) and report it as method 'finetuned'")
    p.add_argument("--finetune-samples", type=int, help="fine-tune on a random subset of N training samples "
                   "(default: all)")
    p.add_argument("--prune-search", choices=("greedy", "none"), default="greedy", help="greedy (default): also "
                   "choose the pruned units in rounds by how far the readout moves, one validation run per "
                   "remaining unit per round (it took the Fashion-MNIST CSNN study's sweep from 35 to 42 minutes); "
                   "none: one-shot rankings only")
    p.add_argument("--grid", choices=("cross", "axes"), default="cross", help="cross: every bits value at "
                   "every ratio (default); axes: bits unpruned and ratios with float weights, as the "
                   "quantization seed's study")
    p.add_argument("--steps", type=int, help="time steps, when a NIR file does not say")
    p.add_argument("--framework", help=FRAMEWORK_HELP)
    p.add_argument("--reset", choices=("zero", "subtract"), help=RESET_HELP)
    return p


def _sweep_options(args, model_bytes: bytes) -> dict:
    """What a sweep's rows depend on: ``--resume`` continues only a sweep with the same."""
    import hashlib

    from toolchain.files import read_input

    return {"model_sha256": hashlib.sha256(model_bytes).hexdigest(), "bits": args.bits, "prune": args.prune,
            "methods": args.methods, "dataset": args.dataset, "data_dir": args.data_dir, "samples": args.samples,
            "calibration": args.calibration, "finetune_epochs": args.finetune_epochs,
            "finetune_samples": args.finetune_samples, "prune_search": args.prune_search, "grid": args.grid,
            "steps": args.steps, "target": args.target, "max_cores": args.max_cores,
            "data_sha256": hashlib.sha256(read_input(args.data)).hexdigest() if args.data else None}


def _finished_rows(out_dir: Path, options: dict) -> list[dict]:
    """The rows an earlier run of the same sweep wrote to ``out_dir``, for ``--resume``."""
    import json

    from toolchain.files import read_marker

    record = read_marker(out_dir) or {}
    earlier = (record.get("sweep") or {}).get("options") if record.get("command") == "sweep" else None
    if not isinstance(earlier, dict):
        raise UserError(f"--resume: {out_dir} holds no sweep to resume; run the sweep without --resume")
    changed = next((key for key in options if earlier.get(key) != options[key]), None)
    if changed:
        raise UserError(f"--resume: the sweep in {out_dir} ran with {changed} {earlier.get(changed)!r}, not "
                        f"{options[changed]!r}; resume with the same options, or start over with --force")
    try:
        rows = json.loads((out_dir / "sweep.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--resume: cannot read {out_dir / 'sweep.json'} ({one_line(exc)})") from None
    if not (isinstance(rows, list) and all(isinstance(r, dict) and {"bits", "prune", "method"} <= r.keys()
                                           for r in rows)):
        raise UserError(f"--resume: {out_dir / 'sweep.json'} is not a sweep's rows; start over with --force")
    return rows


def run(args) -> int:
    from toolchain.files import read_input
    from snn_compile.report import sweep_table, write_sweep
    from snn_compile.sweep import (SweepFailed, SweepInterrupted, check_settings, finish_rows, run_sweep,
                                   split_data, sweep_executor, sweep_settings)

    bits = number_list(args.bits, int, "--bits")
    ratios = number_list(args.prune, float, "--prune")
    budgets = number_list(args.max_cores, int, "--max-cores") if args.max_cores is not None else []
    if args.max_cores is not None and not budgets:
        raise UserError("--max-cores needs at least one value, e.g. --max-cores 8,16,32")
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - {"baseline", "best"}:
        raise UserError(f"--methods {args.methods!r}: choose baseline, best or baseline,best")
    target = get_target(args.target)
    check_settings(bits, ratios)
    sweep_settings(bits, ratios, methods, args.grid, budgets, target.name)  # every budget checked before any work
    positive(samples=args.samples, calibration=args.calibration, workers=args.workers,
             finetune_samples=args.finetune_samples, steps=args.steps)
    check_steps(args.steps)
    executor = sweep_executor(args.cluster, args.workers)
    if args.finetune_epochs < 0:
        raise UserError(f"--finetune-epochs must be 0 or more, got {args.finetune_epochs}")
    model_path = Path(args.model)
    out_dir = args.output or model_path.with_name(f"{model_path.stem}-sweep")
    options = _sweep_options(args, read_input(model_path))
    output = StagingDir(out_dir, {"command": "sweep", "sweep": {"options": options, "complete": True}},
                        force=args.force or args.resume, inputs=(args.model,), partial=True)
    finished = _finished_rows(out_dir, options) if args.resume else []
    source, dataset = model_with_data(args, "sweep")
    data = split_data(dataset, calibration=args.calibration, test_samples=args.samples,
                      train_samples=args.finetune_samples)
    require_run_memory(source.graph, min(256, len(data.test_x)))

    def save(rows: list[dict], total: int, why: str) -> None:
        """The finished rows, as a partial sweep that ``--resume`` continues."""
        output.record["sweep"]["complete"] = False
        with output as directory:
            write_sweep(finish_rows(rows), directory, note=f"A partial sweep: {len(rows)} of {total} settings "
                        f"({why}). Rerun the same command with --resume to compute the other {total - len(rows)}.")
        output.force = True  # the directory holds this sweep now: each save replaces the last

    try:
        rows = run_sweep(source.graph, target, data, bits, ratios, methods, workers=args.workers,
                         finetune_epochs=args.finetune_epochs, grid=args.grid,
                         prune_search=args.prune_search == "greedy", finished=finished, executor=executor,
                         on_row=lambda rows, total: save(rows, total, "written as each setting finishes"),
                         max_cores=budgets)
    except SweepInterrupted as stop:
        if stop.rows:
            save(stop.rows, stop.total, "interrupted")
            print(f"wrote the {len(stop.rows)} finished settings of {stop.total} to {out_dir}/ (a partial sweep); "
                  f"rerun the same command with --resume to compute the other {stop.total - len(stop.rows)}",
                  flush=True)
        raise stop.cause from None
    except SweepFailed as failed:
        if failed.rows:
            save(failed.rows, failed.total, f"{len(failed.failures)} failed")
        kept = f"wrote the other {len(failed.rows)} to {out_dir}/; " if failed.rows else ""
        raise UserError(f"{failed}; {kept}rerun the same command with --resume to retry them") from None
    output.record["sweep"]["complete"] = True
    with output as directory:
        write_sweep(rows, directory)
    print(sweep_table(rows))
    print(f"\nwrote {out_dir}/ (sweep.csv, sweep.json, sweep.md, sweep.html, sweep.png)")
    return 0
