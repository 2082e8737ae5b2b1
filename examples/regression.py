"""SNN regression across encoders and decoders, on the float model and on Loihi 2 (8 bits).

Trains one snnTorch regressor per encoder x decoder on a task that ships with
the installed packages, compiles each for Loihi 2 at 8 bits, and reports the
test MSE on both targets (same encoded inputs, same fitted decoder), spikes
per inference and latency in steps, in the shape of the regression seed's
Table 2. Writes docs/regression_<task>.md.

    .venv/bin/python examples/regression.py [--task projectile] [--epochs 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from frontends.nir_export import to_nir
from frontends.regression import RegressionOptions, decoder_inputs, load_task, train_regressor
from targets import reference
from targets.chips import load_chip
from targets.loihi2 import run
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize

COMBINATIONS = [("direct", "rate"), ("direct", "membrane"), ("bernoulli", "rate"), ("bernoulli", "membrane"),
                ("ttfs", "first-spike"), ("ttfs", "membrane"), ("population", "population-vote"),
                ("population", "membrane")]


def evaluate(task, options: RegressionOptions) -> dict:
    model, encoder, decoder = train_regressor(task, options)
    coding = {"encoder": dataclasses.asdict(encoder), "decoder": {"kind": decoder.kind,
                                                                  "coefficients": decoder.coefficients.tolist()}}
    graph = graph_from_nir(to_nir(model, input_levels=encoder.output_levels(), coding=coding))
    program = quantize(graph, load_chip("loihi2"), QuantizeOptions(bits=8))
    x = encoder.encode(task.x_test)
    row = {"encoder": options.encoder, "decoder": options.decoder}
    for name, result in (("float", reference.run(graph, x, record=True)), ("loihi2", run(program, x, record=True))):
        trains = result.trains.get(graph.output)
        predicted = decoder.decode(**decoder_inputs(decoder.kind, result.output, trains))
        row[f"mse_{name}"] = float(np.mean((predicted - task.y_test) ** 2))
        row[f"spikes_{name}"] = float(sum(a.spike_counts.sum() for k, a in result.activity.items() if k != "input")
                                      / result.samples)
    row["latency_steps"] = options.steps + program.latency
    row["ratio"] = row["mse_loihi2"] / row["mse_float"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="projectile")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    task = load_task(args.task)
    rows = [evaluate(task, RegressionOptions(encoder=e, decoder=d, epochs=args.epochs, steps=args.steps))
            for e, d in COMBINATIONS]
    lines = [f"# SNN regression on `{args.task}` (standardised target; test MSE)", "",
             f"Produced by `.venv/bin/python examples/regression.py --task {args.task} --epochs {args.epochs} "
             f"--steps {args.steps}`.", "",
             "| encoder | decoder | MSE float | MSE loihi2 8-bit | loihi2/float | spikes per inference | latency (steps) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['encoder']} | {r['decoder']} | {r['mse_float']:.4f} | {r['mse_loihi2']:.4f} | {r['ratio']:.3f} | "
              f"{r['spikes_loihi2']:.1f} | {r['latency_steps']} |" for r in rows]
    Path("docs").mkdir(exist_ok=True)
    Path(f"docs/regression_{args.task}.md").write_text("\n".join(lines) + "\n")
    Path(f"docs/regression_{args.task}.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
