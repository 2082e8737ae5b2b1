"""``snn-compile``: compile a model for a chip, run it, report cost and accuracy.

Errors a user can cause end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from toolchain.errors import UserError
from toolchain.nir_import import ImportOptions

from targets.registry import TARGETS
COMMANDS = ("compile", "train", "sweep")

DESCRIPTION = """\
Compile a spiking neural network for a neuromorphic chip, run it bit-accurately, and report
accuracy, spikes and model size.

commands:
  snn-compile MODEL [options]         compile MODEL (a checkpoint .pt or a NIR graph .nir) and
                                      evaluate it (same as `snn-compile compile MODEL`)
  snn-compile train [options]         train a spiking network in snnTorch and save a checkpoint
  snn-compile sweep MODEL [options]   accuracy, size and cost across weight bits x pruning ratios

Run `snn-compile COMMAND --help` for the options of each command.

examples:
  snn-compile train --dataset digits --arch mlp -o model.pt
  snn-compile model.pt --target loihi2 --bits 8
  snn-compile graph.nir --target loihi2 --steps 16 --input-shape 1,8,8 --dataset digits
  snn-compile sweep model.pt --bits 16,8,4 --prune 0.1,0.2,0.3
"""


def _compile_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snn-compile [compile]", description="Compile MODEL for a chip, run it "
                                "on the test split of its dataset, and write program.h5, model.nir, "
                                "report.json and report.md.")
    p.add_argument("model", help="snn-compile checkpoint (.pt) or NIR graph (.nir)")
    p.add_argument("--target", default="loihi2", help=f"where the program runs: {', '.join(TARGETS)} "
                   "(default loihi2: the bit-accurate Loihi 2 emulator)")
    p.add_argument("--bits", type=int, default=8, help="synapse weight bits, 1..8 on Loihi 2 (default 8)")
    p.add_argument("--weight-scale", choices=("mse", "max"), default="mse",
                   help="weight step: minimise rounding error (mse, default) or map the largest weight "
                   "to the largest level (max)")
    p.add_argument("-o", "--output", type=Path, help="output directory (default: next to MODEL, "
                   "named MODEL-TARGET-BITSb)")
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one the checkpoint names; "
                   "digits, fmnist or mnist)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--samples", type=int, help="evaluate on the first N test samples (default: all)")
    p.add_argument("--batch-size", type=int, default=256, help="samples run at once (default 256)")
    p.add_argument("--steps", type=int, help="time steps, when a NIR file does not say")
    p.add_argument("--dt", type=float, help="time step in seconds for discretising NIR, when the file "
                   "does not say (default 1e-4, snnTorch's convention)")
    p.add_argument("--input-shape", help="input shape C,H,W or N, when a NIR file does not say")
    p.add_argument("--input-levels", type=int, help="input values are integers 0..LEVELS (default: "
                   "from the graph, else 255)")
    p.add_argument("--print-passes", action="store_true", help="print the pass pipeline and exit")
    return p


def _train_parser() -> argparse.ArgumentParser:
    from frontends.models import ARCHITECTURES

    p = argparse.ArgumentParser(prog="snn-compile train", description="Train a spiking network with "
                                "surrogate gradients (snnTorch) and save a self-describing checkpoint.")
    p.add_argument("--dataset", default="digits", help="digits (embedded), fmnist or mnist (default digits)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--arch", choices=ARCHITECTURES, default="mlp", help="network architecture (default mlp)")
    p.add_argument("--steps", type=int, default=16, help="time steps per sample (default 16)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-o", "--output", type=Path, default=Path("model.pt"), help="checkpoint path (default model.pt)")
    return p


def _sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snn-compile sweep", description="Compress MODEL at every weight width and "
                                "pruning ratio, with the seed's plain recipe (baseline) and with calibrated "
                                "options chosen on a validation split of the training data (best). Writes "
                                "sweep.csv, sweep.json, sweep.md and sweep.png.")
    p.add_argument("model", help="snn-compile checkpoint (.pt) or NIR graph (.nir)")
    p.add_argument("--bits", default="16,8,4", help="comma-separated weight widths, 1..16 (<= 8 runs on the "
                   "Loihi 2 emulator, wider on the digital target; default 16,8,4)")
    p.add_argument("--prune", default="0.1,0.2,0.3", help="comma-separated structured pruning ratios in [0, 1) "
                   "(default 0.1,0.2,0.3)")
    p.add_argument("--methods", default="baseline,best", help="baseline, best or both (default both)")
    p.add_argument("-o", "--output", type=Path, help="output directory (default: next to MODEL, MODEL-sweep)")
    p.add_argument("--dataset", help="dataset (default: the one the checkpoint names)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--samples", type=int, help="evaluate on the first N test samples (default: all)")
    p.add_argument("--calibration", type=int, default=512, help="training samples for calibration (default 512)")
    p.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="also fine-tune each setting for N epochs "
                   "(quantization-aware, straight-through estimator) and report it as method 'finetuned'")
    p.add_argument("--steps", type=int, help="time steps, when a NIR file does not say")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(DESCRIPTION)
        return 0
    command = argv.pop(0) if argv[0] in COMMANDS else "compile"
    try:
        if command == "train":
            return cmd_train(_train_parser().parse_args(argv))
        if command == "sweep":
            return cmd_sweep(_sweep_parser().parse_args(argv))
        return cmd_compile(_compile_parser().parse_args(argv))
    except UserError as exc:
        print(f"snn-compile: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snn-compile: interrupted", file=sys.stderr)
        return 130


def cmd_train(args) -> int:
    from frontends.checkpoint import save_checkpoint
    from frontends.datasets import load_dataset
    from frontends.training import TrainOptions, train

    dataset = load_dataset(args.dataset, args.data_dir)
    _positive(steps=args.steps, epochs=args.epochs, batch_size=args.batch_size)
    print(f"training {args.arch} on {dataset.name}: {len(dataset.x_train)} samples, {args.steps} steps, "
          f"{args.epochs} epochs, seed {args.seed}")
    model, metrics = train(dataset, TrainOptions(arch=args.arch, steps=args.steps, epochs=args.epochs,
                                                 batch_size=args.batch_size, learning_rate=args.lr,
                                                 seed=args.seed))
    save_checkpoint(model, args.output, dataset=dataset.name, levels=dataset.levels, metrics=metrics)
    print(f"float test accuracy {metrics['test_accuracy']:.4f}; saved {args.output}")
    return 0


def _number_list(text: str, kind, option: str) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} {text!r}: expected comma-separated numbers") from None


def cmd_sweep(args) -> int:
    from frontends.datasets import load_dataset
    from targets.chips import load_chip
    from toolchain.driver import load_model
    from toolchain.report import sweep_table, write_sweep
    from toolchain.sweep import check_settings, run_sweep, split_data

    bits = _number_list(args.bits, int, "--bits")
    ratios = _number_list(args.prune, float, "--prune")
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - {"baseline", "best"}:
        raise UserError(f"--methods {args.methods!r}: choose baseline, best or baseline,best")
    check_settings(bits, ratios)
    _positive(samples=args.samples, calibration=args.calibration, workers=args.workers)
    source = load_model(args.model, ImportOptions(steps=args.steps))
    dataset_name = args.dataset or source.dataset
    if not dataset_name:
        raise UserError("a NIR model needs --dataset to sweep on")
    data = split_data(load_dataset(dataset_name, args.data_dir), calibration=args.calibration,
                      test_samples=args.samples)
    if args.finetune_epochs < 0:
        raise UserError(f"--finetune-epochs must be 0 or more, got {args.finetune_epochs}")
    rows = run_sweep(source.graph, load_chip("loihi2"), data, bits, ratios, methods, workers=args.workers,
                     finetune_epochs=args.finetune_epochs)
    out_dir = args.output or source.path.with_name(f"{source.path.stem}-sweep")
    with _staging(out_dir) as staging:
        write_sweep(rows, staging)
    print(sweep_table(rows))
    print(f"\nwrote {out_dir}/ (sweep.csv, sweep.json, sweep.md, sweep.png)")
    return 0


def _positive(**values):
    for name, value in values.items():
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _parse_shape(text: str | None):
    if not text:
        return None
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError:
        raise UserError(f"--input-shape {text!r}: expected comma-separated integers like 1,28,28") from None


def cmd_compile(args) -> int:
    from targets.chips import load_chip
    from toolchain.driver import build_pipeline, compile_graph, load_model

    if args.target not in TARGETS:
        raise UserError(f"unknown target {args.target!r}; choose one of: {', '.join(TARGETS)}")
    _positive(samples=args.samples, batch_size=args.batch_size, steps=args.steps)
    chip = load_chip("loihi2")
    passes = build_pipeline(chip, args.bits, args.weight_scale)
    if args.print_passes:
        print("\n".join(p.describe() for p in passes))
        return 0
    source = load_model(args.model, ImportOptions(steps=args.steps, dt=args.dt,
                                                  input_shape=_parse_shape(args.input_shape),
                                                  input_levels=args.input_levels))
    dataset_name = args.dataset or source.dataset
    dataset = None
    if dataset_name:
        from frontends.datasets import load_dataset
        dataset = load_dataset(dataset_name, args.data_dir)
        if tuple(dataset.input_shape) != tuple(source.graph.input_shape) and \
                int(np.prod(dataset.input_shape)) != int(np.prod(source.graph.input_shape)):
            raise UserError(f"dataset {dataset.name} has inputs {dataset.input_shape} but the model expects "
                            f"{source.graph.input_shape}")
    out_dir = args.output or source.path.with_name(f"{source.path.stem}-{args.target}-{args.bits}b")
    program = compile_graph(source.graph, passes)

    from toolchain.evaluate import evaluate_and_report
    with _staging(out_dir) as staging:
        program.save(staging / "program.h5")
        import nir
        nir.write(str(staging / "model.nir"), source.nir_graph)
        report = evaluate_and_report(source, program, args.target, dataset, args.samples, args.batch_size,
                                     staging)
    from toolchain.report import terminal
    print(terminal(report))
    print(f"\nwrote {out_dir}/ (program.h5, model.nir, report.json, report.md)")
    return 0


class _staging:
    """Write outputs into a temporary sibling directory, then move it into place."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def __enter__(self) -> Path:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", dir=self.out_dir.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        self.tmp.rename(self.out_dir)
        return False


if __name__ == "__main__":
    sys.exit(main())
