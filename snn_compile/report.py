"""Reports: what a compile cost and how much accuracy survived, for people and machines.

Every number here is computed from a program, a graph or a run result; the
report writes it to the terminal, report.json, report.md and report.html
(drawn by ``snn_compile.html_report``; the sweep's page by
``snn_compile.sweep_report``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from snn_compile import html_report, sweep_report
from snn_compile.html_parts import AS_TRAINED_NOTE, as_trained_table, number as _fmt
from toolchain.ir import Graph
from toolchain.program import BIAS_MANT_BITS, DECAY_BITS, VTH_BITS, Program
from toolchain.traffic import core_loads, message_flows, node_coordinates, spike_counts

FLOAT_BITS = 32
NEURON_PARAM_BITS = {"bias": BIAS_MANT_BITS + 3, "group": 2 * DECAY_BITS + VTH_BITS}  # per neuron; per group
LIMITED_BY = {"layer end": "nothing (fits a core)", "conv_tile_neurons_below": "conv tile size",
              "neurons_per_core": "neurons", "synapse_memory_bits_per_core": "synapse memory",
              "fan_in_axons_per_core": "fan-in axons", "fan_out_axons_per_core": "fan-out axons"}
"""What set a layer's core count, in the report's words (``toolchain.mapping.REASONS``)."""


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Accuracy and weighted precision/recall/F1, as the quantization seed reports them."""
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average="weighted",
                                                               zero_division=0)
    return {"accuracy": float(np.mean(labels == predictions)), "precision": float(precision),
            "recall": float(recall), "f1": float(f1), "samples": int(len(labels))}


def regression_metrics(targets: np.ndarray, readout: np.ndarray) -> dict:
    """Error of the read-out (spike counts, or an LI layer's membrane) against float targets."""
    error = np.asarray(readout, dtype=np.float64).reshape(targets.shape) - targets
    return {"mse": float(np.mean(error ** 2)), "mae": float(np.mean(np.abs(error))), "samples": int(len(targets))}


def synapse_count(weights: np.ndarray, kind: str, target_size: int) -> int:
    """Connections a weight tensor makes: nonzero entries, times output positions for a conv."""
    nonzero = int(np.count_nonzero(weights))
    if kind == "dense":
        return nonzero
    per_channel = target_size // weights.shape[0]
    return nonzero * per_channel


def program_summary(program: Program) -> list[dict]:
    rows = []
    for layer in program.layers:
        incoming = program.incoming(layer.name)
        rows.append({
            "layer": layer.name, "model": layer.model, "shape": list(layer.shape), "neurons": layer.size,
            "groups": len(layer.groups()), "spiking": layer.spiking,
            "synapses": sum(synapse_count(s.weights, s.kind, layer.size) for s in incoming),
            "weights": int(sum(s.weights.size for s in incoming)),
            "inputs": [f"{s.source} ({s.kind}{', recurrent' if s.recurrent else ''})" for s in incoming],
            "weight_exp": sorted({int(e) for s in incoming for e in np.unique(s.weight_exp)}),
            "vth": sorted({int(v) for v in np.unique(layer.vth)})[:4],
        })
    return rows


def model_size_bits(graph: Graph, program: Program) -> dict:
    """Storage before (float32 weights and per-neuron parameters) and after quantization."""
    float_weights = sum(c.weight.size for c in graph.connections)
    float_neurons = sum(p.size for p in graph.populations)
    before = FLOAT_BITS * (float_weights + 4 * float_neurons)  # alpha, beta, threshold, bias
    after = sum(s.weights.size * s.weight_bits for s in program.synapses)
    after += sum(layer.size * NEURON_PARAM_BITS["bias"] + len(layer.groups()) * NEURON_PARAM_BITS["group"]
                 for layer in program.layers)
    return {"float_bits": int(before), "quantized_bits": int(after), "compression": before / max(after, 1)}


def model_size_bits_float(graph: Graph, bits: int | None) -> int:
    """Storage of a graph with ``bits``-bit weights (None: float32) and float neuron parameters."""
    weights = sum(c.weight.size for c in graph.connections)
    neurons = sum(p.size for p in graph.populations)
    return (bits or FLOAT_BITS) * weights + FLOAT_BITS * 4 * neurons


def spikes_per_sample(result, names) -> dict:
    return {name: float(result.activity[name].spike_counts.sum() / result.samples) for name in names}


DIVERGENCE_AGREEMENT = 0.9
"""A layer whose spike agreement with the float model falls below this is where the chip's
arithmetic first changes the network's activity (``float_vs_chip``)."""
SCATTER_NEURONS = 400
"""Neurons per layer whose float and chip spike counts the report keeps for its scatter plots."""
REGRESSION_POINTS = 1000
"""Predicted-vs-true pairs the report keeps for its regression plot."""


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> list[list[int]]:
    """Counts of (true label, predicted label); rows are the true labels."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix.tolist()


def _evenly(count: int, keep: int) -> np.ndarray:
    return np.unique(np.linspace(0, count - 1, min(count, keep)).round().astype(np.int64)) if count else \
        np.zeros(0, dtype=np.int64)


def regression_points(targets: np.ndarray, readouts: dict[str, np.ndarray]) -> dict:
    """Up to ``REGRESSION_POINTS`` (true, predicted) pairs per backend, the same pairs for each."""
    true = np.asarray(targets, dtype=np.float64).reshape(-1)
    keep = _evenly(true.size, REGRESSION_POINTS)
    return {"true": true[keep].tolist(),
            "predicted": {name: np.asarray(r, dtype=np.float64).reshape(-1)[keep].tolist()
                          for name, r in readouts.items()}}


def float_vs_chip(reference, target, layers: list[str]) -> dict:
    """Per layer, how the target's spikes per neuron compare with the float model's on the same samples
    (``reference``: the float run of the graph that was compiled, so pruning is not counted as a change).

    ``agreement`` is 1 - sum|f - c| / sum(f + c) over the layer's neurons, f and
    c their spikes per sample on the float model and the target: 1 when every
    neuron fires as often, 0 when the two never fire the same neurons. The
    first layer below ``DIVERGENCE_AGREEMENT`` is reported as where they part.
    """
    rows, first = [], None
    for layer in layers:
        f = np.asarray(reference.activity[layer].spike_counts, dtype=np.float64).reshape(-1) / reference.samples
        c = np.asarray(target.activity[layer].spike_counts, dtype=np.float64).reshape(-1) / target.samples
        total = float(f.sum() + c.sum())
        agreement = 1.0 - float(np.abs(f - c).sum()) / total if total else 1.0
        correlation = float(np.corrcoef(f, c)[0, 1]) if f.size > 1 and f.std() > 0 and c.std() > 0 else None
        keep = _evenly(f.size, SCATTER_NEURONS)
        rows.append({"layer": layer, "neurons": int(f.size), "float_spikes_per_neuron": float(f.mean()),
                     "chip_spikes_per_neuron": float(c.mean()), "agreement": agreement, "correlation": correlation,
                     "silent_float": int(np.count_nonzero(f == 0)), "silent_chip": int(np.count_nonzero(c == 0)),
                     "sample": {"neuron": keep.tolist(), "float": f[keep].tolist(), "chip": c[keep].tolist()}})
        if first is None and agreement < DIVERGENCE_AGREEMENT:
            first = layer
    return {"threshold": DIVERGENCE_AGREEMENT, "first_divergence": first, "layers": rows}


def chip_map(program: Program, chip, activity, samples: int) -> dict:
    """Every core of the program's mapping (layer, neurons, position, utilisation, work per inference)
    and the spike messages per inference between every wired pair of cores, from a run's activity."""
    mapping = program.mapping
    use = mapping.utilisation(chip)
    loads = core_loads(mapping, program, activity)
    cores = [{"core": i, "layer": c.layer, "neurons": [c.start, c.stop], "chip": c.chip, "x": c.x, "y": c.y,
              "utilisation": {field: float(use[field][i]) for field in use},
              "synaptic_ops": float(loads.synaptic_ops[i] / samples), "spikes": float(loads.spikes[i] / samples)}
             for i, c in enumerate(mapping.cores)]
    host = len(cores)
    gx, gy, _ = node_coordinates(mapping.mesh, np.array([c.chip for c in mapping.cores]),
                                 np.array([c.x for c in mapping.cores]), np.array([c.y for c in mapping.cores]))
    pairs: dict[tuple[int, int], float] = {}
    for flow in message_flows(program, mapping.cores, spike_counts(program, activity)).values():
        for a, b, m in zip(flow.source.tolist(), flow.target.tolist(), flow.messages.tolist()):
            pairs[a, b] = pairs.get((a, b), 0.0) + m / samples
    links = [{"source": "host" if a == host else a, "target": b, "messages": m,
              "hops": int(abs(gx[a] - gx[b]) + abs(gy[a] - gy[b]))} for (a, b), m in sorted(pairs.items())]
    return {"mesh": [mapping.mesh.columns, mapping.mesh.rows], "chip_columns": mapping.mesh.chip_columns,
            "chips": mapping.chips_used, "cores": cores, "links": links}


def _graph_counts(graph: Graph, bits: list[int]) -> dict:
    sizes = {p.name: p.size for p in graph.populations}
    return {"neurons": int(sum(sizes.values())), "weight_bits": bits,
            "synapses": int(sum(synapse_count(c.weight, c.kind, sizes[c.target]) for c in graph.connections))}


def _program_counts(program: Program) -> dict:
    return {"neurons": int(sum(layer.size for layer in program.layers)),
            "weight_bits": sorted({int(s.weight_bits) for s in program.synapses}),
            "synapses": int(sum(synapse_count(s.weights, s.kind, program.layer(s.target).size)
                                for s in program.synapses))}


def pipeline_stages(source_graph: Graph, compiled, bits: int) -> list[dict]:
    """Each pass that ran, its options, and the neurons, synapses and weight bits before and after it
    (partition and place change none of these: they say what they made)."""
    graph_passes = ("prune",)
    trained = _graph_counts(source_graph, [FLOAT_BITS])
    pruned = _graph_counts(compiled.graph, [FLOAT_BITS])
    if compiled.program is not None:
        lowered = _program_counts(compiled.program)
    elif compiled.target_graph is not None:
        lowered = _graph_counts(compiled.target_graph, [bits])
    else:
        lowered = pruned
    mapping = compiled.program.mapping if compiled.program is not None else None
    rows = []
    for described in compiled.passes:
        name, _, options = described.partition("(")
        row = {"pass": name, "options": options[:-1]}
        if name in graph_passes:
            row.update(before=trained, after=pruned)
        elif name in ("quantize", "fake-quantize"):
            row.update(before=pruned, after=lowered)
        elif name == "partition" and mapping is not None:
            row["made"] = f"{len(mapping.cores)} cores on {mapping.chips_used} chip(s)"
        elif name == "place" and mapping is not None:
            row["made"] = (f"placement {mapping.placement}; {mapping.traffic.mean_hops:.2f} hops per message "
                           f"({mapping.traffic.rates} rates)")
        rows.append(row)
    return rows


def write_reports(report: dict, out_dir: Path) -> None:
    """report.json for machines; report.md and report.html (self-contained, offline) for people."""
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=_jsonable))
    (out_dir / "report.md").write_text(markdown(report))
    (out_dir / "report.html").write_text(html_report.page(report))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _table(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda items: "  ".join(s.ljust(w) for s, w in zip(items, widths))  # noqa: E731
    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells]


def text_sections(report: dict) -> list[tuple[str, list[str]]]:
    """The report as titled plain-text tables; terminal and markdown share them."""
    sections = []
    src = report["source"]
    program = report.get("program")
    model_lines = [
        f"source: {src['path']} ({src['format']})",
        f"dataset: {src.get('dataset') or '-'}   dt: {src['dt']:g} ({src['dt_source']})   reset: {src['reset']}"
        + (f" ({src['reset_source']})" if src.get("reset_source") else "")
        + (f"   conventions: {src['framework']}" if src.get("framework") else ""),
        f"target: {report['target']}   weight bits: {report['bits']}   passes: " + " -> ".join(report["passes"])]
    if program:
        model_lines.append(f"steps: {program['steps']}   latency: {program['latency_steps']} steps of synaptic "
                           "delay (every connection adds one step)")
    sections.append(("Model", model_lines + [f"warning: {w}" for w in report.get("warnings", [])]))
    if program:
        rows = [[r["layer"], r["model"], "x".join(map(str, r["shape"])), r["neurons"], r["groups"], r["synapses"],
                 ",".join(map(str, r["weight_exp"]))] for r in program["layers"]]
        sections.append(("Program", _table(["layer", "model", "shape", "neurons", "groups", "synapses", "w_exp"],
                                           rows)))
    size = report["size"]
    sections.append(("Model size", [
        f"float: {size['float_bits']} bits   quantized: {size['quantized_bits']} bits   "
        f"compression: {size['compression']:.2f}x"]))
    if report.get("mapping"):
        sections.append(("Mapping", mapping_lines(report["mapping"])))
    if report.get("prune_to_fit"):
        fit = report["prune_to_fit"]
        cut = ", ".join(f"{name} {p['removed']} of {p['units']}" for name, p in fit["pruned"].items()) or "nothing"
        loss = f" (readout deviation {fit['readout_deviation']:.4g})" if "readout_deviation" in fit else ""
        sections.append(("Pruned to fit", [f"{fit['cores_before']} -> {fit['cores_after']} cores, {fit['chips_before']}"
                                           f" -> {fit['chips_after']} chips; units removed: {cut}; each cut chosen "
                                           f"by {fit['chosen_by']}{loss}"]))
    if "accuracy" in report:
        rows = [[name, m["accuracy"], m["precision"], m["recall"], m["f1"], m["samples"]]
                for name, m in report["accuracy"].items()]
        lines = _table(["backend", "accuracy", "precision", "recall", "f1", "samples"], rows)
        for pair, value in report.get("agreement", {}).items():
            lines.append(f"prediction agreement {pair}: {value:.4f}")
        sections.append(("Accuracy (weighted precision/recall/F1)", lines))
    if "regression" in report:
        rows = [[name, m["mse"], m["mae"], m["samples"]] for name, m in report["regression"].items()]
        sections.append(("Regression (read-out vs targets)", _table(["backend", "mse", "mae", "samples"], rows)))
    if "spikes_per_sample" in report:
        backends = list(report["spikes_per_sample"])
        layers = list(next(iter(report["spikes_per_sample"].values())))
        rows = [[layer] + [report["spikes_per_sample"][b][layer] for b in backends] for layer in layers]
        sections.append(("Spikes per sample", _table(["layer"] + backends, rows)))
    if "costs" in report:
        sections += cost_sections(report["costs"])
    return sections


def mapping_lines(mapping: dict) -> list[str]:
    traffic = mapping["traffic"]
    rows = [[r["layer"], r["cores"], r["neurons_max"], r["synapse_memory_bits_max"], r["fan_in_axons_max"],
             r["fan_out_axons_max"], LIMITED_BY.get(r.get("limited_by"), r.get("limited_by", "-"))]
            for r in mapping["layers"]]
    return [f"{mapping['cores']} cores on {mapping['chips']} chip(s) ({mapping['boards']} board(s)), "
            f"mesh {mapping['mesh'][0]}x{mapping['mesh'][1]} per chip, placement {mapping['placement']}",
            f"spike messages per {traffic['rates']} run: {traffic['within_cores']:.4g} within cores, "
            f"{traffic['between_cores']:.4g} between cores, {traffic['between_chips']:.4g} between chips; "
            f"hops mean {traffic['mean_hops']:.2f}, max {traffic['max_hops']}",
            "per-core utilisation, worst core of each layer (fraction of the limit):"] + _table(
        ["layer", "cores", "neurons", "synapse mem", "fan-in", "fan-out", "limited by"], rows)


def cost_sections(costs: dict) -> list[tuple[str, list[str]]]:
    """Per-layer operations and energy, totals, and per-inference figures."""
    ops = costs["operations"]
    digital = costs["digital45nm"]
    loihi = costs.get("loihi")
    loihi_by_layer = {r["layer"]: r for r in loihi["layers"]} if loihi else {}
    energy_by_layer = {r["layer"]: r for r in digital["layers"]}
    headers = ["layer", "ACs", "MACs", "spikes", "neuron updates", "45nm pJ", "share"]
    if loihi:
        headers += ["loihi pJ", "share "]
    rows = []
    for o in ops:
        e = energy_by_layer[o["layer"]]
        row = [o["layer"], o["acs"], o["macs"], o["spikes"], o["neuron_updates"], e["energy_pj"], f"{e['share']:.1%}"]
        if loihi:
            row += [loihi_by_layer[o["layer"]]["energy_pj"], f"{loihi_by_layer[o['layer']]['share']:.1%}"]
        rows.append(row)
    t = costs["operation_totals"]
    total = ["total", t["acs"], t["macs"], t["spikes"], t["neuron_updates"], digital["energy_pj"], "100%"]
    if loihi:
        total += [loihi["energy_pj"], "100%"]
    model = {"ops": "0.9 pJ x AC + 4.6 pJ x MAC", "spike": "E_spike x spikes + P_leak x T"}[digital["model"]]
    lines = _table(headers, rows + [total]) + [
        f"dense (no sparsity): {t['dense_acs']:.4g} ACs + {t['dense_macs']:.4g} MACs; "
        f"effective/dense {(t['acs'] + t['macs']) / max(t['dense_acs'] + t['dense_macs'], 1):.3f}",
        f"45 nm SNN ({model}{', with SRAM weight reads' if digital['memory'] else ''}): "
        f"{digital['energy_pj'] / 1e3:.4g} nJ per inference",
        f"45 nm ANN of the same network ({t['ann_macs']:.4g} MACs x 4.6 pJ): {digital['ann_energy_pj'] / 1e3:.4g} nJ; "
        f"SNN/ANN energy ratio {digital['snn_to_ann']:.3f} ({_times(digital['snn_to_ann'])})"]
    sections = [("Operations and energy per inference", lines)]
    if "as_trained" in costs:
        sections.append(("Operations of the network as trained (NeuroBench's definitions)", as_trained_lines(costs)))
    if loihi:
        sections.append(("Loihi 2 latency and energy per inference", [
            f"{loihi['note']}",
            f"energy {loihi['energy_pj'] / 1e3:.4g} nJ   step {loihi['step_ns']:.4g} ns (busiest core "
            f"{loihi['busiest_core_ns']:.4g} + route {loihi['route_ns']:.4g} + barrier {loihi['barrier_ns']:.4g})",
            f"latency {loihi['latency_s'] * 1e6:.4g} us   throughput {loihi['throughput_per_s']:.4g} inferences/s   "
            f"energy-delay product {loihi['edp_js']:.4g} J s"]))
    xylo = costs.get("xylo")
    if xylo:
        energy = (f"energy {xylo['energy_per_inference_j'] * 1e9:.4g} nJ per inference: the published "
                  f"{xylo['published_power_w'] * 1e6:.4g} uW dynamic power over the inference's real-time duration "
                  f"({xylo['energy_source']}); not from this run's activity" if "energy_per_inference_j" in xylo
                  else "energy: no published figure for this chip")
        sections.append(("Xylo latency and energy per inference", [
            f"{xylo['cycles_per_step']:.4g} cycles per step (worst case {xylo['worst_case_cycles_per_step']:.4g}) at "
            f"{xylo['clock_hz'] / 1e6:g} MHz: latency {xylo['latency_s'] * 1e6:.4g} us over {xylo['chip_steps']} "
            f"steps; real time at dt: {'yes' if xylo['realtime_at_dt'] else 'no'}", energy]))
    return sections


def as_trained_lines(costs: dict) -> list[str]:
    table = as_trained_table(costs)
    if table is None:
        return [f"not available: {costs['as_trained']['unavailable']}"]
    headers, rows, total = table
    return _table(headers, rows + [total]) + [AS_TRAINED_NOTE]


def terminal(report: dict) -> str:
    out = []
    for title, lines in text_sections(report):
        out += ["", f"== {title} =="] + lines
    return "\n".join(out).lstrip("\n")


def markdown(report: dict) -> str:
    out = ["# snn-compile report", ""]
    for title, lines in text_sections(report):
        out += [f"## {title}", "", "```", *lines, "```", ""]
    return "\n".join(out)


def _times(ratio: float) -> str:
    if ratio == 0:
        return "the SNN did nothing"
    return f"{1 / ratio:.1f}x less" if ratio < 1 else f"{ratio:.1f}x more"


SWEEP_COLUMNS = ["method", "bits", "prune", "max_cores", "accuracy", "drop_points", "precision", "recall", "f1", "size_bits",
                 "compression", "spikes_per_sample", "quantization", "pruning"]


def sweep_table(rows: list[dict]) -> str:
    columns = [c for c in SWEEP_COLUMNS if any(c in r for r in rows)]
    columns += [c for c in dict.fromkeys(k for r in rows for k in r) if c.startswith(("energy", "ann_", "loihi"))]
    return "\n".join(_table(columns, [[r.get(c, "") for c in columns] for r in rows]))


def write_sweep(rows: list[dict], out_dir: Path, note: str | None = None) -> None:
    """sweep.json, sweep.csv, sweep.md, sweep.html (the Pareto fronts and the table) and the
    seed-style plots; ``note`` heads sweep.md and sweep.html (what a partial sweep lacks)."""
    import csv

    (out_dir / "sweep.json").write_text(json.dumps(rows, indent=2, default=_jsonable))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    heading = f"# Compression sweep\n\n{note}\n\n" if note else "# Compression sweep\n\n"
    (out_dir / "sweep.md").write_text(heading + "```\n" + sweep_table(rows) + "\n```\n")
    (out_dir / "sweep.html").write_text(sweep_report.page(rows, note))
    _sweep_plots(rows, out_dir)


def _sweep_plots(rows: list[dict], out_dir: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if not r.get("max_cores")]  # core-budget rows: sweep.html's accuracy-vs-cores front
    methods = sorted({r["method"] for r in rows if r["bits"] != 32 or r["prune"] > 0})
    panels = [("bits", "accuracy", lambda r: r["prune"] == 0 and r["bits"] != 32, "accuracy vs weight bits"),
              ("bits", "size_bits", lambda r: r["prune"] == 0 and r["bits"] != 32, "model size vs weight bits"),
              ("prune", "accuracy", lambda r: r["bits"] == 32, "accuracy vs pruning ratio (float weights)")]
    energy_key = next((k for k in rows[0] if k.startswith("energy")), None)  # the 45 nm energy, every row has it
    if energy_key:
        panels.append(("prune", energy_key, lambda r: r["bits"] == 32, "energy vs pruning ratio"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6))
    for ax, (x, y, keep, title) in zip(axes, panels):
        for method in methods:
            own = [(r[x], r[y]) for r in rows if keep(r) and r["method"] == method]
            if own:  # a method with no rows on this axis gets no line (the float point alone)
                start = [(r[x], r[y]) for r in rows if keep(r) and r["prune"] == 0 and r["bits"] == 32]
                ax.plot(*zip(*sorted(own + start)), marker="o", label=method)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "sweep.png", dpi=120, metadata={"Software": None})
    plt.close(fig)
