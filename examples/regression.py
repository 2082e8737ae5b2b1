"""SNN regression across encoders and decoders, on the float model and on Loihi 2 (8 bits).

Trains one snnTorch regressor per encoder x decoder on a task that ships with
the installed packages, compiles each for Loihi 2 at 8 bits, and reports the
test MSE on both targets (same encoded inputs, same fitted decoder), spikes
per inference and latency in steps, in the shape of the regression seed's
Table 2. Writes docs/results/regression_<task>.md.

    .venv/bin/python examples/regression.py [--task projectile] [--epochs 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from frontends.checkpoint import save_checkpoint
from frontends.regression import RegressionOptions, decoder_inputs, load_task, train_regressor
from snn_compile.compile import compile_model, load_model
from snn_compile.evaluate import cost_report
from targets.registry import get_target

COMBINATIONS = [("direct", "rate"), ("direct", "membrane"), ("bernoulli", "rate"), ("bernoulli", "membrane"),
                ("ttfs", "first-spike"), ("ttfs", "membrane"), ("population", "population-vote"),
                ("population", "membrane")]


def evaluate(task, options: RegressionOptions) -> dict:
    """Train, save a self-describing checkpoint (encoder and decoder included), compile it like
    ``snn-compile`` does, and measure MSE, spikes, latency and energy on both targets."""
    model, encoder, decoder = train_regressor(task, options)
    coding = {"encoder": dataclasses.asdict(encoder), "decoder": {"kind": decoder.kind,
                                                                  "coefficients": decoder.coefficients.tolist()}}
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(model, Path(tmp) / "regressor.pt", dataset=None, levels=encoder.output_levels(),
                               coding=coding)
        graph = load_model(path).graph
    compiled = compile_model(graph, get_target("loihi2"))
    program = compiled.program
    assert json.loads(program.metadata["source"]["coding"]) == coding  # the program carries its coding
    x = encoder.encode(task.x_test)
    row = {"encoder": options.encoder, "decoder": options.decoder}
    for name, result in (("float", get_target("reference").run(graph, x, record=True)),
                         ("loihi2", compiled.target.run(program, x, record=True))):
        trains = result.trains.get(graph.output)
        predicted = decoder.decode(**decoder_inputs(decoder.kind, result.output, trains))
        row[f"mse_{name}"] = float(np.mean((predicted - task.y_test) ** 2))
        row[f"spikes_{name}"] = float(sum(a.spike_counts.sum() for k, a in result.activity.items() if k != "input")
                                      / result.samples)
        if name == "loihi2":
            costs = cost_report(compiled, result, 8)
    row["latency_steps"] = options.steps + program.latency
    row["ratio"] = row["mse_loihi2"] / row["mse_float"]
    row["energy_45nm_nj"] = costs["digital45nm"]["energy_pj"] / 1e3
    row["ann_45nm_nj"] = costs["digital45nm"]["ann_energy_pj"] / 1e3
    row["loihi_nj"] = costs["loihi"]["energy_pj"] / 1e3
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
             "Energy per inference from the loihi2 run's activity: 45 nm (0.9 pJ x AC + 4.6 pJ x MAC), the same",
             "network as a non-spiking ANN at 45 nm, and the Loihi estimate (Loihi 1 per-op figures).", "",
             "| encoder | decoder | MSE float | MSE loihi2 8-bit | loihi2/float | spikes per inference | "
             "latency (steps) | 45 nm SNN nJ | 45 nm ANN nJ | SNN/ANN | Loihi nJ |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['encoder']} | {r['decoder']} | {r['mse_float']:.4f} | {r['mse_loihi2']:.4f} | {r['ratio']:.3f} | "
              f"{r['spikes_loihi2']:.1f} | {r['latency_steps']} | {r['energy_45nm_nj']:.3g} | "
              f"{r['ann_45nm_nj']:.3g} | {r['energy_45nm_nj'] / r['ann_45nm_nj']:.3g} | {r['loihi_nj']:.3g} |"
              for r in rows]
    Path("docs").mkdir(exist_ok=True)
    Path(f"docs/results/regression_{args.task}.md").write_text("\n".join(lines) + "\n")
    Path(f"docs/results/regression_{args.task}.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
