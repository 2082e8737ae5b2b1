"""Run a compiled model on the float reference and on its target; build the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from targets.registry import get_target
from toolchain.errors import UserError
from toolchain.ir import Graph
from toolchain.operations import count_operations, totals
from toolchain.report import (classification_metrics, model_size_bits, model_size_bits_float, program_summary,
                              regression_metrics, spikes_per_sample, write_reports)


RUN_ONLY_TARGETS = ("lava",)
"""Targets that add nothing but a run: without data they would report nothing they ran."""
RUN_BYTES_PER_VALUE = 20
"""Memory a run takes per sample, step and neuron (inputs included): the emulator holds a batch's
inputs, currents and spikes for every step at once (measured: 15 to 17 bytes)."""


def run_memory_bytes(graph: Graph, batch_size: int) -> int:
    """About how much memory running a batch of ``batch_size`` samples through ``graph`` takes."""
    values = int(np.prod(graph.input_shape)) + sum(p.size for p in graph.populations)
    return RUN_BYTES_PER_VALUE * batch_size * graph.steps * values


def run_target(name: str, program, graph: Graph, inputs: np.ndarray, batch_size: int):
    """Run ``inputs`` on target ``name``: the integer ``program`` or, for graph targets, ``graph``."""
    target = get_target(name)
    model = graph if target.runs == "graph" else program
    return target.runner()(model, inputs, batch_size=batch_size, progress=f"{name}")


def cost_report(network, result, chip, bits: int, dt: float, energy_model: str = "ops",
                memory: bool = False) -> dict:
    """Operations per layer from ``result``'s activity, the 45 nm energy, and the Loihi
    estimate when ``network`` is a mapped program."""
    from targets import digital45nm

    operations = count_operations(network, result.activity, result.samples, network.steps)
    report = {"operations": [o.as_dict() for o in operations], "operation_totals": totals(operations),
              "digital45nm": digital45nm.energy(operations, bits, network.steps, dt, energy_model, memory)}
    if getattr(network, "mapping", None) is not None:
        from targets.loihi2.costs import loihi_costs
        report["loihi"] = loihi_costs(network, result.activity, result.samples, chip)
    return report


def evaluate_and_report(source, program, target_name: str, dataset, samples: int | None, batch_size: int,
                        out_dir: Path, chip=None, bits: int = 8, target_graph: Graph | None = None,
                        passes: list[str] | None = None, energy_model: str = "ops", memory: bool = False) -> dict:
    """Run the test split on the float reference and on the target; report accuracy, activity,
    operations, energy, latency and the mapping.

    ``program`` may be None when the target runs a graph only (digital
    weights wider than the chip's 8 bits); ``target_graph`` is what a graph
    target runs (default: the float graph). ``passes``: what ran, in order
    (default: what the program records). Sizes and the float accuracy are
    the source model's: what pruning and quantization cost is measured
    against the network as trained.
    """
    if dataset is None and target_name in RUN_ONLY_TARGETS:
        raise UserError(f"--target {target_name} runs the program on test data and none is named: pass --dataset "
                        "or --data FILE.npz (to compile without running, use --target loihi2)")
    graph = source.graph
    target_graph = target_graph or graph
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
        "bits": bits,
        "warnings": warnings,
    }
    report["passes"] = passes if passes is not None else (program.metadata.get("passes", []) if program else [])
    if program is not None:
        report.update({
            "program": {"chip": program.chip, "steps": program.steps, "latency_steps": program.latency,
                        "input_shape": list(program.input_shape), "input_levels": program.input_levels,
                        "readout": program.readout, "layers": program_summary(program)},
            "size": model_size_bits(graph, program),
            "mapping": program.mapping.summary(chip) if program.mapping is not None else None})
    else:
        float_bits = model_size_bits_float(graph, None)
        size = model_size_bits_float(target_graph, bits)
        report["size"] = {"float_bits": float_bits, "quantized_bits": size, "compression": float_bits / size}
    if dataset is not None:
        count = len(dataset.x_test) if samples is None else min(samples, len(dataset.x_test))
        x, y = dataset.x_test[:count], dataset.y_test[:count]
        held = int(np.prod(x.shape[1:])) // int(np.prod(graph.input_shape))  # frames: 1; spike trains: steps
        x = x.reshape((count,) + ((held,) if held > 1 else ()) + tuple(graph.input_shape))
        results = {"float": run_target("reference", program, graph, x, batch_size)}
        if target_name != "reference":
            results[target_name] = run_target(target_name, program, target_graph, x, batch_size)
        if getattr(dataset, "task", "classification") == "regression":
            report["regression"] = {name: regression_metrics(y, r.output) for name, r in results.items()}
        else:
            predictions = {name: r.predictions() for name, r in results.items()}
            report["accuracy"] = {name: classification_metrics(y, p) for name, p in predictions.items()}
            names = list(predictions)
            report["agreement"] = {f"{a}/{b}": float(np.mean(predictions[a] == predictions[b]))
                                   for i, a in enumerate(names) for b in names[i + 1:]}
        layer_names = [pop.name for pop in graph.populations]
        report["spikes_per_sample"] = {name: spikes_per_sample(r, layer_names) for name, r in results.items()}
        target_result = results[target_name if target_name != "reference" else "float"]
        runs_graph = get_target(target_name).runs == "graph"
        report["costs"] = cost_report(target_graph if runs_graph else program, target_result, chip, bits, graph.dt,
                                      energy_model, memory)
        report["spikes_per_step"] = {layer: (target_result.activity[layer].spikes_per_step
                                             / target_result.samples).tolist() for layer in layer_names}
    write_reports(report, out_dir)
    return report
