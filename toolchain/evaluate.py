"""Run a compiled model on the float reference and on its target; build the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from targets.registry import get_target
from toolchain.report import (classification_metrics, model_size_bits, program_summary, spikes_per_sample,
                              write_reports)


def run_target(name: str, source, program, inputs: np.ndarray, batch_size: int):
    target = get_target(name)
    model = source.graph if target.runs == "graph" else program
    return target.runner()(model, inputs, batch_size=batch_size, progress=f"{name}")


def evaluate_and_report(source, program, target_name: str, dataset, samples: int | None, batch_size: int,
                        out_dir: Path) -> dict:
    graph = source.graph
    meta = graph.metadata
    warnings = []
    if meta.get("reset") == "subtract":
        warnings.append("the model resets by subtraction; Loihi's LIF resets to zero, so spike trains differ")
    if meta.get("dt_source") == "default":
        warnings.append(f"dt not stated by the graph or --dt; used {graph.dt:g} s (snnTorch's convention)")
    report = {
        "source": {"path": str(source.path), "format": source.info.get("format"), "dataset": dataset and dataset.name,
                   "dt": graph.dt, "dt_source": meta.get("dt_source"), "reset": meta.get("reset"),
                   **{k: v for k, v in source.info.items() if k != "format"}},
        "target": target_name,
        "passes": program.metadata.get("passes", []),
        "program": {"chip": program.chip, "steps": program.steps, "latency_steps": program.latency,
                    "input_shape": list(program.input_shape), "input_levels": program.input_levels,
                    "readout": program.readout, "layers": program_summary(program)},
        "size": model_size_bits(graph, program),
        "warnings": warnings,
    }
    if dataset is not None:
        count = len(dataset.x_test) if samples is None else min(samples, len(dataset.x_test))
        x, y = dataset.x_test[:count].reshape((count,) + tuple(program.input_shape)), dataset.y_test[:count]
        results = {"float": run_target("reference", source, program, x, batch_size)}
        if target_name != "reference":
            results[target_name] = run_target(target_name, source, program, x, batch_size)
        predictions = {name: r.predictions() for name, r in results.items()}
        report["accuracy"] = {name: classification_metrics(y, p) for name, p in predictions.items()}
        names = list(predictions)
        report["agreement"] = {f"{a}/{b}": float(np.mean(predictions[a] == predictions[b]))
                               for i, a in enumerate(names) for b in names[i + 1:]}
        layer_names = [layer.name for layer in program.layers]
        report["spikes_per_sample"] = {name: spikes_per_sample(r, layer_names) for name, r in results.items()}
    write_reports(report, out_dir)
    return report
