"""report.html: one offline page of a compile's report, with tables and inline SVG figures.

It draws what report.json holds (see ``snn_compile.evaluate``): where the
program sits on the chip, how the target's spikes compare with the float
model's layer by layer, the confusion matrices (or predicted against true
values), and where the energy and the step time go.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from snn_compile.html_parts import (AS_TRAINED_NOTE, PALETTE, as_trained_table, bar_chart, figure, heatmap, number,
                                    page as html_page, scatter, svg, table, tip)

MAP_LINKS = 300
"""Core-to-core links drawn on the chip map, the most messages x hops first (every link is in report.json)."""
CORE_FIELDS = (("neurons", "neurons"), ("synapse_memory_bits", "synapse memory"), ("fan_in_axons", "fan-in"),
               ("fan_out_axons", "fan-out"))


def page(report: dict) -> str:
    """The whole report page."""
    name = Path(report["source"]["path"]).name
    body = [f"<h1>snn-compile report: {escape(name)} on {escape(report['target'])}</h1>", _summary(report)]
    for section in (_model, _pipeline, _program, _chip_map, _accuracy, _float_vs_chip, _activity, _energy):
        body += section(report)
    return html_page(f"snn-compile report: {name}", body)


def _section(title: str, anchor: str) -> str:
    return f"<h2 id='{anchor}'>{escape(title)}</h2>"


def _summary(report: dict) -> str:
    facts = [f"weight bits {report['bits']}", f"compression {report['size']['compression']:.2f}x"]
    for name, metrics in report.get("accuracy", {}).items():
        facts.append(f"accuracy {escape(name)} {metrics['accuracy']:.4f}")
    for name, metrics in report.get("regression", {}).items():
        facts.append(f"mse {escape(name)} {number(metrics['mse'])}")
    if report.get("mapping"):
        facts.append(f"{report['mapping']['cores']} cores on {report['mapping']['chips']} chip(s)")
    costs = report.get("costs", {})
    if "loihi" in costs:
        loihi = costs["loihi"]
        facts.append(f"Loihi estimate {number(loihi['energy_pj'] / 1e3)} nJ dynamic, "
                     f"{number(loihi['total_pj'] / 1e3)} nJ with static power, "
                     f"{number(loihi['latency_s'] * 1e6)} us per inference")
    if "digital45nm" in costs:
        facts.append(f"45 nm {number(costs['digital45nm']['energy_pj'] / 1e3)} nJ per inference")
    return "<p>" + " &middot; ".join(facts) + "</p>"


def _model(report: dict) -> list[str]:
    src = report["source"]
    rows = [["source", f"{src['path']} ({src['format']})"], ["dataset", src.get("dataset") or "-"],
            ["dt", f"{src['dt']:g} s ({src['dt_source']})"],
            ["reset", str(src["reset"]) + (f" ({src['reset_source']})" if src.get("reset_source") else "")],
            ["target", report["target"]], ["weight bits", report["bits"]]]
    if src.get("framework"):
        rows.append(["conventions", src["framework"]])
    program = report.get("program")
    if program:
        rows += [["steps", program["steps"]],
                 ["latency", f"{program['latency_steps']} steps of synaptic delay (every connection adds one)"]]
    size = report["size"]
    rows += [["model size", f"float {size['float_bits']} bits, quantized {size['quantized_bits']} bits, "
                            f"compression {size['compression']:.2f}x"]]
    out = [_section("Model", "model"), table(["", ""], rows, sortable=False)]
    out += [f"<p class='note'>warning: {escape(w)}</p>" for w in report.get("warnings", [])]
    return out


def _pipeline(report: dict) -> list[str]:
    stages = report.get("pipeline")
    if not stages:
        return []

    def change(row, key):
        if "before" not in row:
            return row.get("made", "") if key == "neurons" else ""
        a, b = row["before"][key], row["after"][key]
        if key == "weight_bits":
            a, b = ",".join(map(str, a)), ",".join(map(str, b))
        return f"{a} → {b}" if a != b else f"{a} (unchanged)"

    rows = [[i + 1, s["pass"], s["options"], change(s, "neurons"), change(s, "synapses"), change(s, "weight_bits")]
            for i, s in enumerate(stages)]
    return [_section("Pass pipeline", "pipeline"),
            table(["#", "pass", "options", "neurons (or what it made)", "synapses", "weight bits"], rows,
                  sortable=False),
            "<p class='note'>Before and after each pass: the network as trained, after the graph passes, and the "
            "program (or the graph the target runs).</p>"]


def _program(report: dict) -> list[str]:
    program = report.get("program")
    if not program:
        return []
    rows = [[r["layer"], r["model"], "x".join(map(str, r["shape"])), r["neurons"], r["groups"], r["synapses"],
             r["weights"], ", ".join(r["inputs"]), ",".join(map(str, r["weight_exp"]))] for r in program["layers"]]
    return [_section("Program", "program"),
            table(["layer", "model", "shape", "neurons", "groups", "synapses", "weights", "inputs", "w_exp"], rows)]


def _layer_colors(report: dict) -> dict[str, str]:
    names = [r["layer"] for r in report["program"]["layers"]] if report.get("program") else []
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _chip_map(report: dict) -> list[str]:
    mapping, placed = report.get("mapping"), report.get("chip_map")
    if not mapping:
        return []
    traffic = mapping["traffic"]
    out = [_section("Chip map", "chip-map"),
           f"<p>{mapping['cores']} cores on {mapping['chips']} chip(s) ({mapping['boards']} board(s)), mesh "
           f"{mapping['mesh'][0]}x{mapping['mesh'][1]} per chip, placement {escape(mapping['placement'])}. Spike "
           f"messages over the {escape(traffic['rates'])} run: {number(traffic['within_cores'])} within cores, "
           f"{number(traffic['between_cores'])} between cores, {number(traffic['between_chips'])} between chips; "
           f"{traffic['mean_hops']:.2f} hops per message on average, {traffic['max_hops']} at most.</p>"]
    if placed:
        out.append(figure(_mesh_svg(placed, _layer_colors(report)),
                          "Each square is a core, coloured by layer and shaded by its utilisation (the largest "
                          "fraction of any per-core limit). Lines: spike messages per inference between cores on "
                          "the test samples, wider for more messages x hops; hover a core or a line for its "
                          "numbers."))
    rows = [[r["layer"], r["cores"]] + [r[f"{field}_max"] for field, _ in CORE_FIELDS]
            + [r[f"{field}_mean"] for field, _ in CORE_FIELDS] for r in mapping["layers"]]
    out.append(table(["layer", "cores"] + [f"{label} max" for _, label in CORE_FIELDS]
                     + [f"{label} mean" for _, label in CORE_FIELDS], rows))
    if placed:
        sent: dict = {}
        for link in placed["links"]:
            if link["source"] != link["target"]:
                sent[link["source"]] = sent.get(link["source"], 0.0) + link["messages"]
        core_rows = [[c["core"], c["layer"], f"{c['neurons'][0]}-{c['neurons'][1] - 1}", c["chip"], c["x"], c["y"]]
                     + [c["utilisation"][field] for field, _ in CORE_FIELDS]
                     + [c["spikes"], c["synaptic_ops"], sent.get(c["core"], 0.0)] for c in placed["cores"]]
        out.append("<details><summary>Every core (utilisation as a fraction of the limit; work per "
                   "inference)</summary>"
                   + table(["core", "layer", "neurons", "chip", "x", "y"] + [label for _, label in CORE_FIELDS]
                           + ["spikes", "synaptic ops", "messages sent"], core_rows) + "</details>")
    return out


def _mesh_svg(placed: dict, colors: dict[str, str]) -> str:
    columns, rows = placed["mesh"]
    chip_columns = placed["chip_columns"]
    chip_rows = math.ceil(placed["chips"] / chip_columns)
    cell = max(10, min(40, 900 // (columns * chip_columns)))
    left, top = 2 * cell + 10, 24
    width = left + columns * chip_columns * cell + 10
    height = top + rows * chip_rows * cell + 16 + 16 * math.ceil(len(colors) / 4)

    def centre(node):
        if node == "host":
            return left - 1.2 * cell, top + cell / 2
        core = placed["cores"][node]
        gx = (core["chip"] % chip_columns) * columns + core["x"]
        gy = (core["chip"] // chip_columns) * rows + core["y"]
        return left + (gx + 0.5) * cell, top + (gy + 0.5) * cell

    parts = []
    for chip in range(placed["chips"]):
        x0 = left + (chip % chip_columns) * columns * cell
        y0 = top + (chip // chip_columns) * rows * cell
        for i in range(columns):
            for j in range(rows):
                parts.append(f"<rect x='{x0 + i * cell}' y='{y0 + j * cell}' width='{cell}' height='{cell}' "
                             "fill='#fafafa' stroke='#e4e4e4'/>")
        parts.append(f"<rect x='{x0}' y='{y0}' width='{columns * cell}' height='{rows * cell}' fill='none' "
                     f"stroke='#555' stroke-width='1.5'>{tip(f'chip {chip}')}</rect>")
    for core in placed["cores"]:
        cx, cy = centre(core["core"])
        use = core["utilisation"]
        peak = max(use.values())
        text = (f"core {core['core']}: {core['layer']} neurons {core['neurons'][0]}-{core['neurons'][1] - 1}, "
                f"chip {core['chip']} ({core['x']}, {core['y']}); "
                + ", ".join(f"{label} {use[field]:.0%}" for field, label in CORE_FIELDS)
                + f"; {number(core['spikes'])} spikes, {number(core['synaptic_ops'])} synaptic ops per inference")
        parts.append(f"<g class='core' data-core='{core['core']}' data-layer='{escape(core['layer'], quote=True)}'>"
                     f"<rect x='{cx - cell / 2 + 1:.1f}' y='{cy - cell / 2 + 1:.1f}' width='{cell - 2}' "
                     f"height='{cell - 2}' fill='{colors.get(core['layer'], '#777')}' "
                     f"fill-opacity='{0.2 + 0.8 * min(peak, 1.0):.2f}' stroke='#333' stroke-width='0.5'>"
                     f"{tip(text)}</rect>"
                     + (f"<text x='{cx:.1f}' y='{cy + 3:.1f}' font-size='{min(10, cell // 2)}' text-anchor='middle' "
                        f"pointer-events='none'>{core['core']}</text>" if cell >= 16 else "") + "</g>")
    hx, hy = centre("host")
    parts.append(f"<rect x='{hx - cell * 0.7:.1f}' y='{hy - cell / 2:.1f}' width='{cell * 1.4:.1f}' height='{cell}' "
                 f"fill='#ddd' stroke='#555'>{tip('host: sends the input')}</rect>"
                 f"<text x='{hx:.1f}' y='{hy + 3:.1f}' font-size='9' text-anchor='middle'>host</text>")
    moving = [link for link in placed["links"] if link["source"] != link["target"] and link["messages"] > 0]
    moving.sort(key=lambda link: -link["messages"] * max(link["hops"], 1))
    peak = max((link["messages"] * max(link["hops"], 1) for link in moving), default=1.0)
    for link in moving[:MAP_LINKS]:
        (x1, y1), (x2, y2) = centre(link["source"]), centre(link["target"])
        bend_x, bend_y = (x1 + x2) / 2 - (y2 - y1) * 0.15, (y1 + y2) / 2 + (x2 - x1) * 0.15
        weight = math.sqrt(link["messages"] * max(link["hops"], 1) / peak)
        text = (f"{_node(link['source'])} to {_node(link['target'])}: {number(link['messages'])} messages per "
                f"inference, {link['hops']} hops")
        parts.append(f"<path d='M{x1:.1f},{y1:.1f} Q{bend_x:.1f},{bend_y:.1f} {x2:.1f},{y2:.1f}' fill='none' "
                     f"stroke='#222' stroke-opacity='{0.25 + 0.5 * weight:.2f}' stroke-width='{0.6 + 5 * weight:.2f}'>"
                     f"{tip(text)}</path>")
    y = top + rows * chip_rows * cell + 14
    for i, (layer, color) in enumerate(colors.items()):
        x = 10 + (i % 4) * 150
        row_y = y + 16 * (i // 4)
        parts.append(f"<rect x='{x}' y='{row_y - 9}' width='10' height='10' fill='{color}'/>"
                     f"<text x='{x + 14}' y='{row_y}' font-size='10'>{escape(layer)}</text>")
    return svg(width, height, "chip map: cores by layer, spike traffic between cores", parts)


def _node(node) -> str:
    return "host" if node == "host" else f"core {node}"


def _accuracy(report: dict) -> list[str]:
    out = []
    if "accuracy" in report:
        rows = [[name, m["accuracy"], m["precision"], m["recall"], m["f1"], m["samples"]]
                for name, m in report["accuracy"].items()]
        out += [_section("Accuracy", "accuracy"),
                table(["backend", "accuracy", "precision (weighted)", "recall (weighted)", "f1 (weighted)",
                       "samples"], rows)]
        out += [f"<p>prediction agreement {escape(pair)}: {value:.4f}</p>"
                for pair, value in report.get("agreement", {}).items()]
        for name, matrix in report.get("confusion", {}).items():
            out.append(figure(heatmap(f"confusion matrix: {name}", matrix, "predicted", "true"),
                              f"{name}: {sum(map(sum, matrix))} samples; rows are the true labels."))
    if "regression" in report:
        rows = [[name, m["mse"], m["mae"], m["samples"]] for name, m in report["regression"].items()]
        out += [_section("Regression", "regression"), table(["backend", "mse", "mae", "samples"], rows)]
        points = report.get("regression_points")
        if points:
            for name, predicted in points["predicted"].items():
                pairs = [(t, p, f"true {number(t)}, predicted {number(p)}") for t, p in zip(points["true"], predicted)]
                out.append(figure(scatter(f"predicted vs true: {name}", {name: pairs}, "true", "predicted",
                                          diagonal=True),
                                  f"{name}: {len(pairs)} values of the test split; dashed: predicted = true."))
    return out


def _float_vs_chip(report: dict) -> list[str]:
    comparison = report.get("float_vs_chip")
    if not comparison:
        return []
    target = report["target"]
    layers = comparison["layers"]
    first = comparison["first_divergence"]
    verdict = (f"The first layer whose agreement falls below {comparison['threshold']:g}: <b>{escape(first)}</b>."
               if first else f"Every layer agrees to at least {comparison['threshold']:g}.")
    out = [_section(f"Float vs {target} per layer", "float-vs-chip"),
           f"<p>Spikes per neuron and sample on the same test samples, the float model being the graph that was "
           f"compiled (after pruning, if any). Agreement is 1 - sum|f - c| / sum(f + c) over a layer's neurons "
           f"(f: float, c: {escape(target)}); 1 means every neuron fires as often. "
           f"{verdict}</p>",
           figure(bar_chart("agreement per layer", [r["layer"] for r in layers],
                            {"agreement": [r["agreement"] for r in layers]}, "agreement", width=420),
                  "Agreement of each layer's spikes per neuron with the float model's.")]
    for row in layers:
        sample = row["sample"]
        points = [(f, c, f"neuron {n}: float {number(f)}, {target} {number(c)}")
                  for n, f, c in zip(sample["neuron"], sample["float"], sample["chip"])]
        out.append(figure(scatter(f"{row['layer']}: spikes per neuron", {row["layer"]: points}, "float", target,
                                  diagonal=True, width=300, height=260),
                          f"{len(points)} of {row['neurons']} neurons; agreement {row['agreement']:.3f}."))
    rows = [[r["layer"], r["neurons"], r["float_spikes_per_neuron"], r["chip_spikes_per_neuron"], r["agreement"],
             "-" if r["correlation"] is None else r["correlation"], r["silent_float"], r["silent_chip"]]
            for r in layers]
    out.append(table(["layer", "neurons", "float spikes/neuron", f"{target} spikes/neuron", "agreement",
                      "correlation", "silent (float)", f"silent ({target})"], rows))
    return out


def _activity(report: dict) -> list[str]:
    if "spikes_per_sample" not in report:
        return []
    backends = list(report["spikes_per_sample"])
    layers = list(next(iter(report["spikes_per_sample"].values())))
    rows = [[layer] + [report["spikes_per_sample"][b][layer] for b in backends] for layer in layers]
    out = [_section("Spikes", "spikes"), table(["layer"] + [f"{b} spikes per sample" for b in backends], rows)]
    if "spikes_per_step" in report:
        groups = {layer: [(t, v, f"{layer}, step {t}: {number(v)}") for t, v in enumerate(per_step)]
                  for layer, per_step in report["spikes_per_step"].items()}
        out.append(figure(scatter(f"spikes per layer per time step ({report['target']})", groups, "time step",
                                  "spikes per inference", lines=True, width=520),
                          "Spikes of each layer at each time step, per inference."))
    return out


def _energy(report: dict) -> list[str]:
    costs = report.get("costs")
    if not costs:
        return []
    digital, loihi = costs["digital45nm"], costs.get("loihi")
    layers = [r["layer"] for r in digital["layers"]]
    series = {"45 nm": [r["energy_pj"] for r in digital["layers"]]}
    if loihi:
        series["Loihi (estimate)"] = [r["energy_pj"] for r in loihi["layers"]]
    out = [_section("Energy and latency", "energy"),
           figure(bar_chart("energy per layer", layers, series, "pJ per inference", log=True, unit="pJ"),
                  "Dynamic energy of each layer per inference, on a log scale.")]
    if loihi:
        kinds = {"synaptic ops": "synaptic_pj", "neuron updates": "neuron_pj", "spikes": "spikes_pj",
                 "routing": "routing_pj"}
        out.append(figure(bar_chart("Loihi energy per layer by kind", layers,
                                    {k: [r[v] for r in loihi["layers"]] for k, v in kinds.items()},
                                    "pJ per inference", stacked=True, unit="pJ"),
                          "The Loihi estimate of each layer, split into its kinds."))
        split = loihi["energy_split_pj"]
        out.append(figure(bar_chart("Loihi energy by kind", list(split), {"pJ": list(split.values())},
                                    "pJ per inference", log=True, width=380, unit="pJ"),
                          "Per inference, over all layers; static: the chips' static power over the "
                          "inference's time."))
        steps = loihi["step_split_ns"]
        out.append(figure(bar_chart("Loihi step time", list(steps), {"ns": list(steps.values())}, "ns per step",
                                    width=380, unit="ns"),
                          "One time step: the busiest core's work (synaptic ops, neuron updates, spike output), "
                          "then the slowest route and the barrier."))
    ann = digital["ann_energy_pj"]
    out.append(figure(bar_chart("45 nm: SNN vs ANN", ["SNN", "ANN"], {"pJ": [digital["energy_pj"], ann]},
                                "pJ per inference", width=300, unit="pJ"),
                      f"The same network as an ANN of {number(costs['operation_totals']['ann_macs'])} MACs; "
                      f"SNN/ANN energy ratio {digital['snn_to_ann']:.3f}."))
    ops = costs["operations"]
    by_layer = {r["layer"]: r for r in digital["layers"]}
    loihi_by_layer = {r["layer"]: r for r in loihi["layers"]} if loihi else {}
    headers = ["layer", "ACs", "MACs", "spikes", "neuron updates", "dense ACs", "dense MACs", "45 nm pJ"]
    if loihi:
        headers += ["Loihi synaptic pJ", "Loihi neuron pJ", "Loihi spikes pJ", "Loihi routing pJ", "Loihi pJ",
                    "busiest core ns"]
    rows = []
    for o in ops:
        row = [o["layer"], o["acs"], o["macs"], o["spikes"], o["neuron_updates"], o["dense_acs"], o["dense_macs"],
               by_layer[o["layer"]]["energy_pj"]]
        if loihi:
            r = loihi_by_layer[o["layer"]]
            row += [r["synaptic_pj"], r["neuron_pj"], r["spikes_pj"], r["routing_pj"], r["energy_pj"],
                    r["busiest_core_ns"]]
        rows.append(row)
    t = costs["operation_totals"]
    total = ["total", t["acs"], t["macs"], t["spikes"], t["neuron_updates"], t["dense_acs"], t["dense_macs"],
             digital["energy_pj"]]
    if loihi:
        total += [loihi["energy_split_pj"][k] for k in ("synaptic_ops", "neuron_updates", "spikes", "routing")]
        total += [loihi["energy_pj"], loihi["busiest_core_ns"]]
    out.append(table(headers, rows, total=total))
    out.append(f"<p class='note'>Operations are counted on the network as compiled, per inference. 45 nm: "
               f"{escape(digital['model'])} model{', with SRAM weight reads' if digital['memory'] else ''}.</p>")
    if "as_trained" in costs:
        trained = as_trained_table(costs)
        out += ([table(*trained[:2], total=trained[2]), f"<p class='note'>{escape(AS_TRAINED_NOTE)}.</p>"]
                if trained else [f"<p class='note'>Operations of the network as trained: not available: "
                                 f"{escape(costs['as_trained']['unavailable'])}.</p>"])
    if loihi:
        facts = [["dynamic energy", f"{number(loihi['energy_pj'] / 1e3)} nJ"],
                 ["static energy", f"{number(loihi['static_pj'] / 1e3)} nJ"],
                 ["total energy", f"{number(loihi['total_pj'] / 1e3)} nJ"],
                 ["step", f"{number(loihi['step_ns'])} ns"], ["latency", f"{number(loihi['latency_s'] * 1e6)} us"],
                 ["throughput", f"{number(loihi['throughput_per_s'])} inferences/s"],
                 ["power", f"{number(loihi['power_w']['total'])} W"],
                 ["energy-delay product", f"{number(loihi['edp_js'])} J s"]]
        out += [table(["Loihi 2 per inference", ""], facts, sortable=False),
                f"<p class='note'>{escape(loihi['note'])}</p>"]
    return out
