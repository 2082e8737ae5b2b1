"""Fashion-MNIST, 784-128-10 ReLU ANN -> IF SNN: plain rate conversion vs QFFS, swept over T.

Trains the clothing-recognition seed's ANN once, then for each number of steps T:
  * plain rate conversion, weights normalised by the largest ("max") or the
    99.9th-percentile activation on calibration images, reset by subtraction;
  * QFFS: the ANN fine-tuned with QuantReLU(L = T) for reset by subtraction
    (membrane starting at threshold/2), converted;
  * QFFS-zero: fine-tuned with the staircase a zero-reset neuron computes
    (Loihi 2's LIF), converted with reset to zero; `snn-compile convert`'s default;
each run on the float reference and compiled for Loihi 2 at 8 bits. Prints the
tables and writes them, with the command that produced them and the issue's
targets checked against the measured numbers, to docs/results/conversion_fmnist.md.

    .venv/bin/python examples/convert_fmnist.py
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from frontends.ann_training import AnnTrainOptions, build_mlp, predict_ann, qffs_finetune, train_ann
from frontends.conversion import convert
from frontends.datasets import load_dataset
from targets import reference
from targets.chips import load_chip
from targets.loihi2 import run as run_loihi2
from toolchain.files import atomic_path
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize

QFFS_VARIANTS = (("QFFS", "subtract"), ("QFFS-zero", "zero"))
ACCURACY_COLUMNS = ["max: ref", "p99.9: ref", "p99.9: loihi2", "QFFS ANN", "QFFS: ref", "QFFS: loihi2",
                    "QFFS-zero ANN", "QFFS-zero: ref", "QFFS-zero: loihi2"]
AGREEMENT_COLUMNS = ["p99.9: ref", "p99.9: loihi2", "QFFS: ref", "QFFS: loihi2", "QFFS-zero: ref",
                     "QFFS-zero: loihi2"]
TARGETS = (("T <= 16", lambda t: t <= 16, 1.0), ("T = 64", lambda t: t == 64, 0.5))
"""The issue's targets: (scope, which T, largest allowed shortfall below the ANN in points)."""


def percent(a, b) -> float:
    return 100.0 * float(np.mean(a == b))


def snn_predictions(nir_graph, images, chip, bits):
    """(float reference, Loihi 2 emulator) predictions of one converted graph."""
    graph = graph_from_nir(nir_graph)
    ref = reference.run(graph, images).predictions()
    chip_pred = run_loihi2(quantize(graph, chip, QuantizeOptions(bits=bits)), images).predictions()
    return ref, chip_pred


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def sweep(args, data, x_test, y_test, calibration, ann, ann_pred):
    """accuracy[T][column], agreement[T][column], both in percent."""
    chip = load_chip("loihi2")
    finetune = AnnTrainOptions(epochs=args.finetune_epochs, learning_rate=args.finetune_lr, seed=args.seed)
    accuracy, agreement = {}, {}
    for steps in args.steps:
        acc, agree = {}, {}
        for method, label in (("max", "max"), ("percentile", "p99.9")):
            nir_graph = convert(ann, calibration, method=method, steps=steps, input_levels=data.levels)
            ref_pred, chip_pred = snn_predictions(nir_graph, x_test, chip, args.bits)
            acc[f"{label}: ref"], acc[f"{label}: loihi2"] = percent(ref_pred, y_test), percent(chip_pred, y_test)
            agree[f"{label}: ref"], agree[f"{label}: loihi2"] = percent(ref_pred, ann_pred), percent(chip_pred, ann_pred)
        for label, reset in QFFS_VARIANTS:
            model, _ = qffs_finetune(ann, data, steps, calibration, reset, finetune)
            q_pred = predict_ann(model, x_test, data.levels)
            ref_pred, chip_pred = snn_predictions(
                convert(model, method="qffs", input_shape=data.input_shape, input_levels=data.levels),
                x_test, chip, args.bits)
            acc[f"{label} ANN"] = percent(q_pred, y_test)
            acc[f"{label}: ref"], acc[f"{label}: loihi2"] = percent(ref_pred, y_test), percent(chip_pred, y_test)
            agree[f"{label}: ref"], agree[f"{label}: loihi2"] = percent(ref_pred, q_pred), percent(chip_pred, q_pred)
        accuracy[steps], agreement[steps] = acc, agree
        print(f"T={steps}: " + ", ".join(f"{c} {acc[c]:.2f}" for c in ACCURACY_COLUMNS), flush=True)
    return accuracy, agreement


def target_lines(accuracy, baseline: float) -> list[str]:
    """One line per QFFS column: its largest shortfall below ``baseline`` within each target's scope."""
    lines = []
    for label, _ in QFFS_VARIANTS:
        for where in ("ref", "loihi2"):
            column, parts = f"{label}: {where}", []
            for scope, in_scope, allowed in TARGETS:
                ts = [t for t in accuracy if in_scope(t)]
                if ts:
                    worst = max(ts, key=lambda t: baseline - accuracy[t][column])
                    gap = baseline - accuracy[worst][column]
                    parts.append(f"{scope}: largest shortfall {gap:.2f} points (T = {worst}), allowed {allowed:g}: "
                                 + ("met" if gap <= allowed else "NOT met"))
            lines.append(f"- {column}: " + "; ".join(parts))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="ANN training epochs (default 15)")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="QFFS fine-tuning epochs per T (default 10)")
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="QFFS fine-tuning peak learning rate")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--bits", type=int, default=8, help="Loihi 2 weight bits (default 8)")
    parser.add_argument("--calibration", type=int, default=5000, help="training images for the statistics")
    parser.add_argument("--samples", type=int, default=None, help="test images (default: all 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/conversion_fmnist.md"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.time()
    data = load_dataset("fmnist")
    x_test, y_test = data.x_test[:args.samples], data.y_test[:args.samples]
    rng = np.random.default_rng(args.seed)
    calibration = data.x_train[rng.choice(len(data.x_train), args.calibration, replace=False)] / data.levels

    ann = build_mlp(data.input_shape, data.classes, hidden=(128,), seed=args.seed)
    train_ann(ann, data, AnnTrainOptions(epochs=args.epochs, seed=args.seed), desc="ANN 784-128-10")
    ann_pred = predict_ann(ann, x_test, data.levels)
    ann_acc = percent(ann_pred, y_test)
    print(f"ANN (float ReLU) test accuracy: {ann_acc:.2f}%")
    longer = copy.deepcopy(ann)
    train_ann(longer, data, AnnTrainOptions(epochs=args.finetune_epochs, learning_rate=args.finetune_lr,
                                            seed=args.seed), desc="ANN, fine-tuned like QFFS")
    longer_acc = percent(predict_ann(longer, x_test, data.levels), y_test)
    print(f"ANN fine-tuned {args.finetune_epochs} more epochs (float ReLU): {longer_acc:.2f}%")

    accuracy, agreement = sweep(args, data, x_test, y_test, calibration, ann, ann_pred)
    accuracy_table = markdown_table(["T"] + ACCURACY_COLUMNS, [[str(t)] + [f"{accuracy[t][c]:.2f}" for c in
                                                                          ACCURACY_COLUMNS] for t in accuracy])
    agreement_table = markdown_table(["T"] + AGREEMENT_COLUMNS, [[str(t)] + [f"{agreement[t][c]:.2f}" for c in
                                                                            AGREEMENT_COLUMNS] for t in agreement])
    targets = {"the ANN": target_lines(accuracy, ann_acc),
               "the ANN fine-tuned alike": target_lines(accuracy, longer_acc)}
    print(f"\nTest accuracy (%), {len(y_test)} images; ANN (float ReLU) {ann_acc:.2f}%\n{accuracy_table}")
    print(f"\nPredictions equal to the network's own ANN (%)\n{agreement_table}")
    for baseline, lines in targets.items():
        print(f"\nTargets against {baseline}\n" + "\n".join(lines))
    command = " ".join([".venv/bin/python examples/convert_fmnist.py"] +
                       [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
    write_report(args.out, command, (ann_acc, longer_acc), len(y_test), args, accuracy_table, agreement_table,
                 targets, time.time() - started)
    print(f"\nwrote {args.out}")
    return 0


def write_report(path: Path, command: str, baselines: tuple[float, float], samples: int, args,
                 accuracy_table: str, agreement_table: str, targets: dict, seconds: float) -> None:
    ann_acc, longer_acc = baselines
    text = f"""# ANN-to-SNN conversion on Fashion-MNIST (784-128-10)

Produced by

    {command}

in {seconds / 60:.1f} min ({torch.get_num_threads()} torch threads). ANN: the clothing-recognition
seed's 784-128-10 ReLU MLP, Adam with a one-cycle schedule, {args.epochs} epochs, batch 64, seed
{args.seed}. QFFS columns: that ANN with its ReLUs replaced by `QuantReLU(L = T)`, clips calibrated
to the least squared quantization error on {args.calibration} training images, fine-tuned
{args.finetune_epochs} epochs (peak learning rate {args.finetune_lr:g}); "QFFS ANN" is that quantized
network itself. Input is direct (the image is the input current every step); the readout integrates,
its final potential is T times the logits. "ref" is the float reference (`targets.reference`),
"loihi2" the bit-accurate emulator after `quantize(..., QuantizeOptions(bits={args.bits}))`. Loihi 2's
LIF resets to zero whatever the graph says, so the max, p99.9 and QFFS graphs (reset by subtraction)
run there with a reset they were not built for; QFFS-zero is built for it. See
[conversion.md](conversion.md) for which method is exact where.

## Test accuracy (%), {samples} test images

ANN (float ReLU): {ann_acc:.2f}%. The same ANN trained {args.finetune_epochs} more epochs like the
QFFS networks, without quantization: {longer_acc:.2f}% (the fine-tuning also continues training, so
this is the fair baseline for the QFFS columns).

{accuracy_table}

## Predictions equal to the network's own ANN (%)

p99.9 is compared with the float ANN, QFFS and QFFS-zero with their quantized ANN.

{agreement_table}

## The issue's targets, checked against these numbers

QFFS within 1 point of its ANN at T <= 16 and within 0.5 points at T = 64 (shortfall: ANN accuracy
minus SNN accuracy; negative when the SNN is better). Against the ANN ({ann_acc:.2f}%):

{chr(10).join(targets["the ANN"])}

Against the ANN fine-tuned alike ({longer_acc:.2f}%):

{chr(10).join(targets["the ANN fine-tuned alike"])}
"""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
