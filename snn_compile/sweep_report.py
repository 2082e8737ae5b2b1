"""sweep.html: the compression sweep's trade-offs as Pareto fronts, and its tables, on one offline page."""

from __future__ import annotations

import math
from html import escape

from snn_compile.html_parts import figure, page as html_page, scatter, table

COSTS = (("energy_45nm_nj", "45 nm energy", "45 nm energy (nJ per inference)", True),
         ("loihi_energy_nj", "Loihi energy", "Loihi dynamic energy, estimate (nJ per inference)", True),
         ("size_bits", "size", "model size (bits)", True),
         ("loihi_cores", "cores", "Loihi cores", False))
"""Columns traded against accuracy: (column, short name, axis label, log axis). Rows without a
column (float weights have no Loihi cost) take no part in its front."""
TABLE_COLUMNS = ("method", "bits", "prune", "max_cores", "accuracy", "drop_points", "f1", "size_bits", "compression",
                 "spikes_per_sample", "energy_45nm_nj", "ann_45nm_nj", "loihi_energy_nj", "loihi_latency_us",
                 "loihi_cores", "quantization", "pruning")


def _value(row: dict, key: str) -> float | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def pareto_front(rows: list[dict], cost: str, gain: str = "accuracy") -> list[int]:
    """Indices of the rows that no other row beats: none has at least their ``gain`` at no more
    ``cost`` and is better in one of the two. Ordered by cost, then gain."""
    points = [(i, _value(r, cost), _value(r, gain)) for i, r in enumerate(rows)]
    points = [(i, c, g) for i, c, g in points if c is not None and g is not None]
    points.sort(key=lambda p: (p[1], -p[2]))
    front, best = [], (math.inf, -math.inf)
    for i, c, g in points:
        # sorted by cost: a row must beat every cheaper row's gain, or tie the best one exactly
        if g > best[1] or (c, g) == best:
            front.append(i)
            best = (c, g)
    return front


def label(row: dict) -> str:
    if row.get("max_cores"):
        return f"{row['method']} {row['bits']}b fit {row['max_cores']} cores"
    return f"{row['method']} {row['bits']}b prune {row['prune']:g}"


def _hover(row: dict) -> str:
    return (f"{label(row)}: accuracy {row['accuracy']:.4f}, size {row['size_bits']} bits; quantization "
            f"{row.get('quantization', '-')}, pruning {row.get('pruning', '-')}")


def page(rows: list[dict], note: str | None = None) -> str:
    """The sweep page: one Pareto figure per cost column the rows have, the seed-style tables, every row."""
    body = ["<h1>Compression sweep</h1>"]
    if note:
        body.append(f"<p><b>{escape(note)}</b></p>")
    body.append("<p>Each point is a row of sweep.csv; the highlighted staircase joins the rows no other row "
                "beats (at least as accurate for no more cost, better in one). Hover a point for its options.</p>")
    fronts = {}
    names = {}
    for column, short, axis, log in COSTS:
        if not any(_value(r, column) is not None for r in rows):
            continue
        front = pareto_front(rows, column)
        fronts[column], names[column] = set(front), short
        groups: dict[str, list] = {}
        for r in rows:
            if _value(r, column) is not None:
                groups.setdefault(r["method"], []).append((_value(r, column), r["accuracy"], _hover(r)))
        line = [(_value(rows[i], column), rows[i]["accuracy"], label(rows[i])) for i in front]
        body.append(figure(scatter(f"accuracy vs {axis.split(' (')[0]}", groups, axis, "accuracy", log_x=log,
                                   fronts={"Pareto front": line}, width=440, height=340),
                           f"{len(front)} of {sum(map(len, groups.values()))} rows on the front: "
                           + "; ".join(label(rows[i]) for i in front) + "."))
    body += _seed_tables(rows)
    columns = [c for c in TABLE_COLUMNS if any(c in r for r in rows)]
    table_rows, classes = [], []
    for i, r in enumerate(rows):
        on = [names[c] for c in fronts if i in fronts[c]]
        table_rows.append([r.get(c, "") for c in columns] + [", ".join(on)])
        classes.append("front" if on else "")
    body += ["<h2 id='rows'>Every row</h2>",
             "<p class='note'>Highlighted: rows on at least one Pareto front (the last column names which).</p>",
             table(columns + ["on the front of"], table_rows, row_classes=classes)]
    return html_page("snn-compile sweep", body)


def _seed_tables(rows: list[dict]) -> list[str]:
    """Accuracy per method against weight bits (unpruned) and against the pruning ratio (float weights)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    rows = [r for r in rows if not r.get("max_cores")]  # pruned to a core budget: on the cores front
    for title, keep, key in (("Accuracy vs weight bits (unpruned)", lambda r: r["prune"] == 0, "bits"),
                             ("Accuracy vs pruning ratio (float weights)", lambda r: r["bits"] == 32, "prune")):
        values = sorted({r[key] for r in rows if keep(r)}, reverse=key == "bits")
        cells = {(r[key], r["method"]): r["accuracy"] for r in rows if keep(r)}
        if len(values) < 2:
            continue
        body = [[v] + [cells.get((v, m), "") for m in methods] for v in values]
        out += [f"<h2>{escape(title)}</h2>", table([key] + methods, body)]
    return out
