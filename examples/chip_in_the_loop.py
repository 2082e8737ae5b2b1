"""Chip-in-the-loop fine-tuning on Fashion-MNIST: how much of the low-bit PTQ loss it wins back.

Trains the MLP (784-128-10, 16 steps) with `snn-compile train` unless the
checkpoint exists, then for each weight width compares, on the full test
split with Loihi 2's integer arithmetic:

- PTQ: the model compiled as `snn-compile MODEL --bits N` does (mse steps, per tensor);
- QAT: quantization-aware fine-tuning against the float imitation (toolchain.finetune);
- chip in the loop: the same number of epochs, every forward pass on the emulated chip
  (in process, or on a board started with `snn-compile serve` when --board is given).

"recovered" is (tuned - PTQ) / (float - PTQ): the share of the PTQ loss won back; since
fine-tuning also trains longer, the float model fine-tuned the same way is reported too.

    .venv/bin/python examples/chip_in_the_loop.py --out runs/chip_in_the_loop --write docs/results/chip_in_the_loop.md
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from frontends.datasets import load_dataset
from targets import reference
from targets.chips import load_chip
from targets.hil.client import Board
from targets.loihi2 import run
from targets.loihi2.chip import Chip
from snn_compile.chip_in_loop import chip_in_the_loop
from snn_compile.compile import load_model
from toolchain.finetune import FinetuneOptions, finetune
from toolchain.passes.quantize import QuantizeOptions, quantize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/chip_in_the_loop"), help="where the model lives")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--bits", default="4,2")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (QAT and chip in the loop)")
    parser.add_argument("--train-samples", type=int, default=20000, help="training samples for fine-tuning")
    parser.add_argument("--board", help="HOST:PORT or unix:PATH of a board (`snn-compile serve`); default in process")
    parser.add_argument("--write", type=Path, help="write the table as markdown here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the steps are small)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / "fmnist-mlp.pt"
    train_command = [sys.executable, "-m", "snn_compile.cli", "train", "--dataset", "fmnist", "--arch", "mlp",
                     "--epochs", str(args.train_epochs), "--batch-size", "128", "-o", str(model_path)]
    if not model_path.exists():
        subprocess.run(train_command, check=True)
    graph = load_model(model_path).graph
    data = load_dataset("fmnist")
    chip_spec = load_chip("loihi2")
    subset = np.random.default_rng(0).permutation(len(data.x_train))[:args.train_samples]
    x_train, y_train = data.x_train[subset], data.y_train[subset]

    def accuracy(result) -> float:
        return float(np.mean(result.predictions() == data.y_test))

    float_accuracy = accuracy(reference.run(graph, data.x_test))
    # fine-tuning also trains longer: the same fine-tuning on a 16-bit grid (float in effect) says how much
    float_tuned = finetune(graph, x_train, y_train, FinetuneOptions(16, epochs=args.epochs, granularity="channel"))
    float_tuned_accuracy = accuracy(reference.run(float_tuned, data.x_test))
    rows = []
    for bits in (int(b) for b in args.bits.split(",")):
        ptq = accuracy(run(quantize(graph, chip_spec, QuantizeOptions(bits)), data.x_test))
        options = FinetuneOptions(bits, epochs=args.epochs, granularity="channel")
        started = time.perf_counter()
        qat_graph = finetune(graph, x_train, y_train, options)
        qat = accuracy(run(quantize(qat_graph, chip_spec, QuantizeOptions(bits, "max", "channel")), data.x_test))
        qat_seconds = time.perf_counter() - started
        board = Board(args.board) if args.board else Chip()
        started = time.perf_counter()
        _, program = chip_in_the_loop(graph, chip_spec, board, x_train, y_train, options)
        loop_seconds = time.perf_counter() - started
        in_loop = accuracy(run(program, data.x_test))
        loss = float_accuracy - ptq
        rows.append({"bits": bits, "ptq": ptq, "qat": qat, "loop": in_loop,
                     "qat_recovered": (qat - ptq) / loss if loss > 0 else float("nan"),
                     "loop_recovered": (in_loop - ptq) / loss if loss > 0 else float("nan"),
                     "loop_recovered_tuned": (in_loop - ptq) / (float_tuned_accuracy - ptq),
                     "qat_seconds": qat_seconds, "loop_seconds": loop_seconds})
        print(f"{bits}-bit: PTQ {ptq:.4f}  QAT {qat:.4f}  chip in the loop {in_loop:.4f}  (float {float_accuracy:.4f})",
              flush=True)

    table = _table(float_accuracy, float_tuned_accuracy, rows)
    print(table)
    if args.write:
        command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "examples/chip_in_the_loop.py", *sys.argv[1:]])
        train = "snn-compile " + shlex.join(train_command[3:])
        args.write.write_text(_document(table, command, train, args, len(data.x_test)))
        print(f"wrote {args.write}")
    return 0


def _table(float_accuracy: float, float_tuned_accuracy: float, rows: list[dict]) -> str:
    lines = ["| bits | float | float, fine-tuned alike | PTQ | QAT (float imitation) | chip in the loop | "
             "recovered: QAT | recovered: chip in the loop | recovered vs float fine-tuned alike | "
             "time QAT / chip in the loop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['bits']} | {float_accuracy:.4f} | {float_tuned_accuracy:.4f} | {r['ptq']:.4f} | "
                     f"{r['qat']:.4f} | {r['loop']:.4f} | {r['qat_recovered']:.0%} | {r['loop_recovered']:.0%} | "
                     f"{r['loop_recovered_tuned']:.0%} | {r['qat_seconds']:.0f} s / {r['loop_seconds']:.0f} s |")
    return "\n".join(lines)


def _document(table: str, command: str, train_command: str, args, test_samples: int) -> str:
    return f"""# Chip-in-the-loop fine-tuning on Fashion-MNIST

Produced by

    {command}

which trains the model with `{train_command}` when it is missing.
Model: MLP 784-128-10, Leaky (beta 0.9), 16 steps. Fine-tuning: {args.epochs} epoch(s) on
{args.train_samples} training samples (seeded subset), Adam, per-channel weight grid; accuracy on all
{test_samples} test images with Loihi 2's integer arithmetic (the batch emulator, bit-identical to the
stepping chip the fine-tuning ran on).

- **PTQ**: the model compiled as `snn-compile MODEL --bits N` compiles it (MSE weight steps, per tensor).
- **QAT**: quantization-aware fine-tuning against the float imitation of the chip (`toolchain.finetune`).
- **chip in the loop**: every forward pass on the emulated chip (`snn_compile.chip_in_loop`), the weights
  requantized and reloaded each batch, gradients through the float model (straight-through).
- **recovered**: (tuned - PTQ) / (float - PTQ), the share of the PTQ accuracy loss won back.
  Above 100% means the fine-tuned chip beats the float model it started from: fine-tuning also
  trains longer. **float, fine-tuned alike** is the float model after the same fine-tuning on a
  16-bit grid (float in effect), and the last recovery column measures against it instead:
  (chip in the loop - PTQ) / (float fine-tuned alike - PTQ).

{table}
"""


if __name__ == "__main__":
    sys.exit(main())
