"""Reproduce the quantization seed's Fashion-MNIST study with snn-compile, and beat it.

Trains the convolutional LIF SNN with the seed's neuron settings (tau = 2,
i.e. beta = 0.5; T = 20 steps), then sweeps k-bit quantization (16, 8, 4,
plus 2) and structured pruning (0.1, 0.2, 0.3) with the seed's plain method
(baseline), our calibrated method (best) and quantization-aware fine-tuning
(finetuned). Writes docs/results/seed000_fmnist.md with the seed's published numbers
beside ours, and the sweep files next to the model.

    .venv/bin/python examples/reproduce_seed_fmnist.py [--epochs 10] [--out runs/seed000]

``--widths 64,128`` trains the wider network of docs/results/seed000_width.md (with
``--doc`` naming where its table goes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

# Published in the seed (../shared/seeds/000_*, Fashion-MNIST rows): accuracy after each setting.
SEED_FLOAT = 0.8582
SEED_ROWS = {("quantize", 16): 0.8551, ("quantize", 8): 0.8538, ("quantize", 4): 0.7995,
             ("prune", 0.1): 0.8574, ("prune", 0.2): 0.8518, ("prune", 0.3): 0.8406}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--channel-dropout", type=float, default=0.0,
                        help="train with channel dropout (default 0: the seed's plain training)")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-samples", type=int, default=10000)
    parser.add_argument("--calibration", type=int, default=8192,
                        help="training images for calibration (pruning's least-squares fits want many)")
    parser.add_argument("--widths", help="the convolutions' channels, e.g. 64,128 (default: the recipe's 32,64)")
    parser.add_argument("--prune-search", choices=("greedy", "none"), default="greedy",
                        help="the sweep's greedy unit search (its cost grows with the width)")
    parser.add_argument("--out", type=Path, default=Path("runs/seed000"))
    parser.add_argument("--doc", type=Path, default=Path("docs/results/seed000_fmnist.md"), help="where the table goes")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "csnn.pt"
    cli = [sys.executable, "-m", "snn_compile.cli"]
    if not model.exists():
        widths = ["--widths", args.widths] if args.widths else []
        subprocess.run(cli + ["train", "--dataset", "fmnist", "--arch", "csnn", "--steps", "20", "--epochs",
                              str(args.epochs), "--batch-size", "128", "--lr", "3e-3", "--channel-dropout",
                              str(args.channel_dropout), *widths, "-o", str(model)], check=True)
    subprocess.run(cli + ["sweep", str(model), "--bits", "16,8,4,2", "--prune", "0.1,0.2,0.3", "--grid", "axes",
                          "--finetune-epochs", str(args.finetune_epochs), "--finetune-samples",
                          str(args.finetune_samples), "--calibration", str(args.calibration),
                          "--prune-search", args.prune_search, "-o", str(args.out / "sweep"), "--force"], check=True)
    import json
    rows = json.loads((args.out / "sweep" / "sweep.json").read_text())
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(rows, args))
    print(f"wrote {args.doc}")
    return 0


def render(rows: list[dict], args) -> str:
    find = {(r["method"], r["bits"], r["prune"]): r for r in rows}
    float_acc = find[("baseline", 32, 0.0)]["accuracy"]
    network = f"{args.widths.replace(',', 'c5-')}c5 CSNN" if args.widths else "the default CSNN (32c5-64c5)"
    options = (f"--epochs {args.epochs} --channel-dropout {args.channel_dropout} "
               f"--finetune-epochs {args.finetune_epochs} --finetune-samples {args.finetune_samples} "
               f"--calibration {args.calibration}"
               + (f" --widths {args.widths}" if args.widths else "")
               + (f" --prune-search {args.prune_search}" if args.prune_search != "greedy" else "")
               + (f" --out {args.out} --doc {args.doc}" if args.doc != Path("docs/results/seed000_fmnist.md") else ""))
    lines = [f"# Seed 000 on Fashion-MNIST, {network}: the seed's numbers beside ours", "",
             f"Produced by `.venv/bin/python examples/reproduce_seed_fmnist.py {options}`; "
             "accuracy on the 10,000 test images.", "",
             "| setting | seed | seed drop | ours: baseline | ours: best | ours: finetuned | best drop | best: chosen |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| float | {SEED_FLOAT:.4f} | - | {float_acc:.4f} | {float_acc:.4f} | - | - | - |"]
    for (kind, value), seed in list(SEED_ROWS.items()) + [(("quantize", 2), None)]:
        key = (value, 0.0) if kind == "quantize" else (32, value)
        cells = [find.get((m,) + key, {}).get("accuracy") for m in ("baseline", "best", "finetuned")]
        shown = [f"{c:.4f}" if c is not None else "-" for c in cells]
        best_drop = 100 * (float_acc - cells[1]) if cells[1] is not None else float("nan")
        seed_cells = f"{seed:.4f} | {100 * (SEED_FLOAT - seed):.2f}" if seed is not None else "- | -"
        best = find.get(("best",) + key, {})
        chosen = best.get("quantization" if kind == "quantize" else "pruning", "-")
        lines.append(f"| {'k' if kind == 'quantize' else 'p'}={value} | {seed_cells} | "
                     + " | ".join(shown) + f" | {best_drop:.2f} | {chosen} |")
    lines += ["", "Drops are in percentage points from each study's own float model. The full table (precision,",
              "recall, F1, size, compression, spikes) is in the sweep directory next to the model."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
