"""Run a compiled model on the float reference and on its target; build the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from snn_compile.compile import Compiled, model_inputs
from snn_compile.split_run import run_target
from targets.chips import load_chip
from targets.registry import get_target
from toolchain.errors import UserError
from toolchain.ir import Graph
from toolchain.operations import count_operations, totals
from snn_compile.report import (chip_map, classification_metrics, confusion_matrix, float_vs_chip, model_size_bits,
                                model_size_bits_float, pipeline_stages, program_summary, regression_metrics,
                                regression_points, spikes_per_sample, write_reports)


RUN_BYTES_PER_VALUE = 20
"""Memory a run takes per sample, step and neuron (inputs included): the emulator holds a batch's
inputs, currents and spikes for every step at once (measured: 15 to 17 bytes)."""


def run_memory_bytes(graph: Graph, batch_size: int) -> int:
    """About how much memory running a batch of ``batch_size`` samples through ``graph`` takes."""
    values = int(np.prod(graph.input_shape)) + sum(p.size for p in graph.populations)
    return RUN_BYTES_PER_VALUE * batch_size * graph.steps * values


def cost_report(compiled: Compiled, result, bits: int, energy_model: str = "ops", memory: bool = False) -> dict:
    """Operations per layer from ``result``'s activity and every cost model the target names
    (the 45 nm digital model; the chip's own estimate for a mapped program)."""
    from targets import digital45nm

    network = compiled.model
    dt = compiled.graph.dt
    operations = count_operations(network, result.activity, result.samples, network.steps)
    report = {"operations": [o.as_dict() for o in operations], "operation_totals": totals(operations),
              "digital45nm": digital45nm.energy(operations, bits, network.steps, dt, energy_model, memory)}
    program, chip_costs = compiled.program, compiled.target.chip_costs()
    mapped = program is not None and (compiled.target.lowering or program.mapping is not None)
    if chip_costs is not None and mapped:  # a Loihi program is priced once it is placed on cores
        key, estimate = chip_costs
        report[key] = estimate(program, result.activity, result.samples, load_chip(compiled.target.chip))
    return report


def as_trained_operations(source, x: np.ndarray, batch_size: int) -> dict:
    """NeuroBench's synaptic operations of the model as trained (``frontends.trained_operations``),
    beside the compiled counts. Only a snnTorch checkpoint holds the torch layers they are defined on."""
    if source.trained is None:
        return {"unavailable": f"a {source.info.get('format')} file holds the network as exported, not the torch "
                               "model as trained that NeuroBench's counts hook"}
    from frontends import trained_operations

    operations = trained_operations.count_trained_operations(source.trained, x, source.graph.input_levels,
                                                             batch_size)
    return {"layers": [o.as_dict() for o in operations], "totals": trained_operations.totals(operations)}


def describe(source, compiled: Compiled, bits: int, dataset=None) -> dict:
    """What was compiled: the source and how it is run, the passes, the program, its size and mapping."""
    program, graph = compiled.program, source.graph
    chip = load_chip(compiled.target.chip) if compiled.target.chip else None
    meta = graph.metadata
    warnings = []
    if meta.get("dt_source") == "default":
        warnings.append(f"dt not stated by the graph or --dt; used {graph.dt:g} s (snnTorch's convention)")
    report = {
        "source": {"path": str(source.path), "format": source.info.get("format"), "dataset": dataset and dataset.name,
                   "dt": graph.dt, "dt_source": meta.get("dt_source"), "reset": meta.get("reset"),
                   "reset_source": meta.get("reset_source"), "framework": meta.get("framework"),
                   **{k: v for k, v in source.info.items() if k != "format"}},
        "target": compiled.target.name,
        "bits": bits,
        "warnings": warnings,
        "passes": compiled.passes,
    }
    if "prune-to-fit" in compiled.notes:
        report["prune_to_fit"] = compiled.notes["prune-to-fit"]
    report["pipeline"] = pipeline_stages(graph, compiled, bits)
    if program is not None:
        report.update({
            "program": {"chip": program.chip, "steps": program.steps, "latency_steps": program.latency,
                        "input_shape": list(program.input_shape), "input_levels": program.input_levels,
                        "readout": program.readout, "layers": program_summary(program)},
            "size": model_size_bits(graph, program),
            "mapping": program.mapping.summary(chip, program) if program.mapping is not None else None})
    else:
        float_bits = model_size_bits_float(graph, None)
        size = model_size_bits_float(compiled.target_graph or compiled.graph, bits)
        report["size"] = {"float_bits": float_bits, "quantized_bits": size, "compression": float_bits / size}
    return report


def _measure(source, compiled: Compiled, dataset, samples: int | None, batch_size: int, bits: int,
             energy_model: str, memory: bool, device: str | None = None, executor=None) -> dict:
    """Run the test split on the float model as trained and on the target: accuracy (or regression
    error), agreement, spikes, costs, float vs chip per layer and the chip map. ``executor``: where
    the runs' batches go (``split_run``; None: this process)."""
    target_name, program, graph = compiled.target.name, compiled.program, source.graph
    chip = load_chip(compiled.target.chip) if compiled.target.chip else None
    report = {}
    count = len(dataset.x_test) if samples is None else min(samples, len(dataset.x_test))
    x, y = dataset.x_test[:count], dataset.y_test[:count]
    x = model_inputs(x, graph)
    results = {"float": run_target(get_target("reference"), graph, x, executor, batch_size, "reference")}
    if target_name != "reference":
        results[target_name] = run_target(compiled.target, compiled.model, x, executor, batch_size, target_name,
                                          device=device)
    if getattr(dataset, "task", "classification") == "regression":
        report["regression"] = {name: regression_metrics(y, r.output) for name, r in results.items()}
        report["regression_points"] = regression_points(y, {name: r.output for name, r in results.items()})
    else:
        predictions = {name: r.predictions() for name, r in results.items()}
        report["accuracy"] = {name: classification_metrics(y, p) for name, p in predictions.items()}
        classes = max(results["float"].output.shape[1], int(np.max(y)) + 1)
        report["confusion"] = {name: confusion_matrix(y, p, classes) for name, p in predictions.items()}
        names = list(predictions)
        report["agreement"] = {f"{a}/{b}": float(np.mean(predictions[a] == predictions[b]))
                               for i, a in enumerate(names) for b in names[i + 1:]}
    layer_names = [pop.name for pop in graph.populations]
    report["spikes_per_sample"] = {name: spikes_per_sample(r, layer_names) for name, r in results.items()}
    target_result = results[target_name if target_name != "reference" else "float"]
    report["costs"] = cost_report(compiled, target_result, bits, energy_model, memory)
    report["costs"]["as_trained"] = as_trained_operations(source, x, batch_size)
    if target_name != "reference":  # against the float model of what was compiled (pruned, if it was)
        compiled_float = results["float"] if compiled.graph is graph else run_target(
            get_target("reference"), compiled.graph, x, executor, batch_size, "reference (compiled graph)")
        report["float_vs_chip"] = float_vs_chip(compiled_float, target_result, layer_names)
    if program is not None and program.mapping is not None:
        report["chip_map"] = chip_map(program, chip, target_result.activity, target_result.samples)
    report["spikes_per_step"] = {layer: (target_result.activity[layer].spikes_per_step
                                         / target_result.samples).tolist() for layer in layer_names}
    return report


def evaluate_and_report(source, compiled: Compiled, dataset, samples: int | None, batch_size: int,
                        out_dir: Path, bits: int = 8, energy_model: str = "ops", memory: bool = False,
                        device: str | None = None, executor=None) -> dict:
    """Run the test split on the float reference and on the target; report accuracy, activity,
    operations, energy, latency and the mapping.

    Sizes and the float accuracy are the source model's: what pruning and
    quantization cost is measured against the network as trained.
    """
    if dataset is None and not compiled.target.in_process:
        raise UserError(f"--target {compiled.target.name} runs the program on test data and none is named: pass "
                        "--dataset or --data FILE.npz (to compile without running, use --target loihi2)")
    report = describe(source, compiled, bits, dataset)
    if dataset is not None:
        report.update(_measure(source, compiled, dataset, samples, batch_size, bits, energy_model, memory, device,
                               executor))
    write_reports(report, out_dir)
    return report
