"""Pieces of the offline HTML pages: the page shell, sortable tables and hand-drawn SVG charts.

Everything is inline (no file, font, script or style is fetched), so a page
opens from disk and reads fully without JavaScript: the script only sorts
tables, and every point carries an SVG ``<title>`` that browsers show on
hover.
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]

STYLE = """
body{font-family:system-ui,sans-serif;max-width:78em;margin:1em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right}
th{background:#f0f0f0}th:first-child,td:first-child,td.text{text-align:left}
table.sortable th{cursor:pointer}tr.total td{font-weight:bold}tr.front td{background:#fff3d6}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figcaption{font-size:.85em;color:#555;max-width:44em}
svg text{font-family:system-ui,sans-serif}
.note{color:#555;font-size:.9em}pre{background:#f6f6f6;padding:.5em;overflow-x:auto}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.title = 'sort';
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = th.dataset.order !== 'up';
      th.dataset.order = up ? 'up' : 'down';
      function key(row) {
        var cell = row.cells[column], v = cell.dataset.v;
        return v !== undefined ? parseFloat(v) : cell.textContent;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), d = typeof x === 'number' && typeof y === 'number' ? x - y
          : String(x).localeCompare(String(y));
        return up ? d : -d;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def number(value) -> str:
    """A number as the reports print it: four significant digits, or scientific when tiny or huge."""
    if isinstance(value, float):
        if value == 0 or math.isfinite(value) and 1e-3 <= abs(value) < 1e6:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def page(title: str, body: list[str]) -> str:
    """A complete page: ``body`` holds HTML fragments, in order."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            + "".join(body) + f"<script>{SCRIPT}</script></body></html>")


def table(headers: list[str], rows: list[list], total: list | None = None, row_classes: list[str] | None = None,
          sortable: bool = True) -> str:
    """A table; numeric cells keep their exact value in ``data-v`` so sorting is by number."""
    def cell(value, tag="td"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"<{tag} class='text'>{escape(str(value))}</{tag}>"
        return f"<{tag} data-v='{value!r}'>{escape(number(value))}</{tag}>"

    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    classes = row_classes or [""] * len(rows)
    lines = [f"<tr class='{c}'>" + "".join(cell(v) for v in row) + "</tr>" for row, c in zip(rows, classes)]
    foot = "<tfoot><tr class='total'>" + "".join(cell(v) for v in total) + "</tr></tfoot>" if total else ""
    kind = " class='sortable'" if sortable else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody>{foot}</table>"


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def svg(width: int, height: int, title: str, parts: list[str]) -> str:
    """An inline SVG; ``title`` is its accessible name and the heading drawn at its top."""
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title, quote=True)}'>"
            f"<text x='{width / 2:.1f}' y='14' font-size='13' text-anchor='middle'>{escape(title)}</text>"
            + "".join(parts) + "</svg>")


def tip(text: str) -> str:
    """A hover text for the element it is put in."""
    return f"<title>{escape(text)}</title>"


class Scale:
    """Maps data values in [lo, hi] onto pixels [a, b], linearly or logarithmically."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False):
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        self.lo, self.hi, self.a, self.b, self.log = lo, hi, a, b, log

    def __call__(self, value: float) -> float:
        v = math.log10(value) if self.log else value
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self) -> list[float]:
        """Round values inside the range: decades on a log axis (with 2s and 5s, or plain steps,
        when the range spans too few), about five steps of 1, 2 or 5 on a linear one."""
        if not self.log:
            return _steps(self.lo, self.hi)
        lo, hi = self.lo - 1e-9, self.hi + 1e-9
        decades = range(math.floor(lo), math.floor(hi) + 1)
        for multiples in ((1,), (1, 2, 5)):
            found = [m * 10.0 ** e for e in decades for m in multiples if lo <= math.log10(m) + e <= hi]
            if len(found) >= 3:
                return found
        return [v for v in _steps(10 ** self.lo, 10 ** self.hi) if v > 0]


def _steps(lo: float, hi: float) -> list[float]:
    raw = (hi - lo) / 5
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def data_range(values: list[float], log: bool, pad: float = 0.05) -> tuple[float, float]:
    """Bounds of ``values`` with a margin; on a log axis, of the positive values."""
    finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not finite:
        return (1.0, 10.0) if log else (0.0, 1.0)
    lo, hi = min(finite), max(finite)
    if log:
        return lo / 10 ** pad, hi * 10 ** pad
    span = hi - lo or abs(hi) or 1.0
    return lo - pad * span, hi + pad * span


MARGIN = (58, 24, 26, 44)
"""Left, top, right and bottom margins of a chart's plotting area, in pixels."""


LEGEND_WIDTH = 150
"""Room on a chart's right for its legend, when it has more than one series."""


def axes(x: Scale, y: Scale, width: int, height: int, xlabel: str, ylabel: str, x_ticks: bool = True,
         right: int = MARGIN[2]) -> list[str]:
    """Frame, grid, ticks and labels of a chart."""
    left, top, _, bottom = MARGIN
    parts = [f"<rect x='{left}' y='{top}' width='{width - left - right}' height='{height - top - bottom}' "
             "fill='none' stroke='#999'/>"]
    for value in y.ticks():
        py = y(value)
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{py:.1f}' y2='{py:.1f}' stroke='#eee'/>"
                     f"<text x='{left - 4}' y='{py + 4:.1f}' font-size='10' text-anchor='end'>{_tick(value)}</text>")
    if x_ticks:
        for value in x.ticks():
            px = x(value)
            parts.append(f"<line y1='{top}' y2='{height - bottom}' x1='{px:.1f}' x2='{px:.1f}' stroke='#eee'/>"
                         f"<text x='{px:.1f}' y='{height - bottom + 13}' font-size='10' "
                         f"text-anchor='middle'>{_tick(value)}</text>")
    parts.append(f"<text x='{(left + width - right) / 2:.1f}' y='{height - 6}' font-size='11' "
                 f"text-anchor='middle'>{escape(xlabel)}</text>")
    parts.append(f"<text transform='translate(13,{(top + height - bottom) / 2:.1f}) rotate(-90)' font-size='11' "
                 f"text-anchor='middle'>{escape(ylabel)}</text>")
    return parts


def _tick(value: float) -> str:
    """A tick label: SI prefixes for large values (2k, 5M), scientific for tiny ones."""
    for power, prefix in ((12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if abs(value) >= 10 ** power:
            return f"{value / 10 ** power:.3g}{prefix}"
    return f"{value:.3g}" if value == 0 or abs(value) >= 1e-3 else f"{value:.0e}"


def _right(series: int) -> int:
    return MARGIN[2] + (LEGEND_WIDTH if series > 1 else 0)


def legend(names: list[str], width: int) -> list[str]:
    """Series names beside the plotting area, in the room ``_right`` leaves."""
    parts = []
    for i, name in enumerate(names):
        x = width - LEGEND_WIDTH + 4
        y = MARGIN[1] + 8 + 14 * i
        parts.append(f"<rect x='{x}' y='{y}' width='10' height='10' fill='{PALETTE[i % len(PALETTE)]}'/>"
                     f"<text x='{x + 14}' y='{y + 9}' font-size='10'>{escape(name)}</text>")
    return parts


def bar_chart(title: str, categories: list[str], series: dict[str, list[float]], ylabel: str, log: bool = False,
              stacked: bool = False, width: int = 520, height: int = 300, unit: str = "") -> str:
    """Bars per category, one per series side by side (or stacked, on a linear axis); each bar tells
    its value on hover. On a log axis a bar of zero is left out."""
    if log and stacked:
        raise ValueError("stacked bars need a linear axis")
    left, top, _, bottom = MARGIN
    names = list(series)
    right = _right(len(names))
    width += right - MARGIN[2]
    values = [sum(series[n][i] for n in names) for i in range(len(categories))] if stacked else \
        [v for n in names for v in series[n]]
    lo, hi = data_range(values + ([] if log else [0.0]), log)
    y = Scale(lo if log else 0.0, hi, height - bottom - 30, top, log)  # 30: room for slanted category names
    x = Scale(0, max(len(categories), 1), left, width - right)
    parts = axes(x, y, width, height - 30, "", ylabel, x_ticks=False, right=right)
    slot = (x(1) - x(0)) * 0.8
    floor = y.a
    for i, category in enumerate(categories):
        stack = 0.0
        for j, name in enumerate(names):
            value = float(series[name][i])
            if stacked:
                x0, w = x(i) + (x(1) - x(0)) * 0.1, slot
                y0, y1 = y(stack + value), y(stack)
                stack += value
            else:
                if log and value <= 0:
                    continue
                w = slot / len(names)
                x0 = x(i) + (x(1) - x(0)) * 0.1 + j * w
                y0, y1 = y(value), floor
            parts.append(f"<rect x='{x0:.1f}' y='{min(y0, y1):.1f}' width='{w:.1f}' height='{abs(y1 - y0):.1f}' "
                         f"fill='{PALETTE[j % len(PALETTE)]}'>"
                         f"{tip(f'{category}, {name}: {number(value)} {unit}'.strip())}</rect>")
        parts.append(f"<text transform='translate({x(i + 0.5):.1f},{height - bottom - 30 + 12}) rotate(30)' "
                     f"font-size='10'>{escape(category)}</text>")
    if len(names) > 1:
        parts += legend(names, width)
    return svg(width, height, title, parts)


def scatter(title: str, groups: dict[str, list[tuple[float, float, str]]], xlabel: str, ylabel: str,
            log_x: bool = False, log_y: bool = False, diagonal: bool = False, lines: bool = False,
            fronts: dict[str, list[tuple[float, float, str]]] | None = None, width: int = 420,
            height: int = 320) -> str:
    """Points (x, y, hover text) per group; ``diagonal`` draws y = x, ``lines`` joins a group's points,
    ``fronts`` draws a highlighted staircase through points (x ascending) and writes each one's label.
    With more than one group the legend widens the chart."""
    left, top, _, bottom = MARGIN
    right = _right(len(groups))
    width += right - MARGIN[2]
    points = [p for g in groups.values() for p in g]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if diagonal:
        xs = ys = xs + ys
    x = Scale(*data_range(xs, log_x), left, width - right, log_x)
    y = Scale(*data_range(ys, log_y), height - bottom, top, log_y)
    parts = axes(x, y, width, height, xlabel, ylabel, right=right)
    if diagonal:
        lo, hi = data_range(xs, log_x)
        parts.append(f"<line x1='{x(lo):.1f}' y1='{y(lo):.1f}' x2='{x(hi):.1f}' y2='{y(hi):.1f}' stroke='#888' "
                     "stroke-dasharray='4 3'><title>equal</title></line>")
    for name, front in (fronts or {}).items():
        shown = [(x(a), y(b), label) for a, b, label in front if _on(a, log_x) and _on(b, log_y)]
        steps = [f"{px:.1f},{py:.1f}" for px, py, _ in shown[:1]]
        for (_, py, _), (qx, qy, _) in zip(shown, shown[1:]):
            steps += [f"{qx:.1f},{py:.1f}", f"{qx:.1f},{qy:.1f}"]
        parts.append(f"<polyline class='front' points='{' '.join(steps)}' fill='none' stroke='#e6a000' "
                     f"stroke-width='6' stroke-opacity='0.45'>{tip(name)}</polyline>")
        parts += [f"<text x='{px + 5:.1f}' y='{py - 5:.1f}' font-size='9'>{escape(label)}</text>"
                  for px, py, label in shown]
    for j, (name, group) in enumerate(groups.items()):
        color = PALETTE[j % len(PALETTE)]
        shown = [(a, b, t) for a, b, t in group if _on(a, log_x) and _on(b, log_y)]
        if lines and len(shown) > 1:
            path = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b, _ in shown)
            parts.append(f"<polyline points='{path}' fill='none' stroke='{color}' stroke-width='1.5'/>")
        for a, b, text in shown:
            parts.append(f"<circle cx='{x(a):.1f}' cy='{y(b):.1f}' r='{2.5 if lines else 3.5}' fill='{color}' "
                         f"fill-opacity='0.75'>{tip(text)}</circle>")
    if len(groups) > 1:
        parts += legend(list(groups), width)
    return svg(width, height, title, parts)


def _on(value: float, log: bool) -> bool:
    return math.isfinite(value) and (value > 0 or not log)


def heatmap(title: str, matrix: list[list[int]], xlabel: str, ylabel: str, size: int = 300) -> str:
    """A square matrix of counts as shaded cells with the count written in each nonzero cell."""
    n = len(matrix)
    left, top = 44, 24
    cell = (size - left - 10) / max(n, 1)
    peak = max((v for row in matrix for v in row), default=0) or 1
    parts = []
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            shade = value / peak
            fill = f"rgb({int(255 - 224 * shade)},{int(255 - 136 * shade)},{int(255 - 75 * shade)})"
            x0, y0 = left + j * cell, top + i * cell
            parts.append(f"<rect x='{x0:.1f}' y='{y0:.1f}' width='{cell:.1f}' height='{cell:.1f}' fill='{fill}' "
                         f"stroke='#ddd'>{tip(f'{ylabel} {i}, {xlabel} {j}: {value}')}</rect>")
            if value and cell >= 14:
                color = "#fff" if shade > 0.55 else "#222"
                parts.append(f"<text x='{x0 + cell / 2:.1f}' y='{y0 + cell / 2 + 3:.1f}' font-size='"
                             f"{min(10, cell * 0.45):.0f}' text-anchor='middle' fill='{color}'>{value}</text>")
        parts.append(f"<text x='{left - 4}' y='{top + (i + 0.5) * cell + 3:.1f}' font-size='9' "
                     f"text-anchor='end'>{i}</text>")
        parts.append(f"<text x='{left + (i + 0.5) * cell:.1f}' y='{top + n * cell + 11:.1f}' font-size='9' "
                     f"text-anchor='middle'>{i}</text>")
    height = int(top + n * cell + 32)
    parts.append(f"<text x='{left + n * cell / 2:.1f}' y='{height - 4}' font-size='11' "
                 f"text-anchor='middle'>{escape(xlabel)}</text>")
    parts.append(f"<text transform='translate(12,{top + n * cell / 2:.1f}) rotate(-90)' font-size='11' "
                 f"text-anchor='middle'>{escape(ylabel)}</text>")
    return svg(size, height, title, parts)


AS_TRAINED_NOTE = ("NeuroBench 2.3 SynapticOperations of the snnTorch model as trained, in float (BatchNorm and "
                   "pooling unfolded); the compiled counts are of the network as compiled, whose folded pooling "
                   "reaches fewer targets per spike, on the target's own run, whose spikes may differ")


def as_trained_table(costs: dict) -> tuple[list[str], list[list], list] | None:
    """(headers, rows, total) setting the as-trained counts beside the compiled ones, per layer;
    None where they are unavailable."""
    trained = costs["as_trained"]
    if "unavailable" in trained:
        return None
    compiled = {o["layer"]: o for o in costs["operations"]}
    headers = ["layer", "Effective_ACs", "Effective_MACs", "Dense", "compiled ACs+MACs", "as trained/compiled"]

    def row(name, acs, macs, dense, ops):
        return [name, acs, macs, dense, ops, _ratio(acs + macs, ops)]

    rows = [row(r["layer"], r["effective_acs"], r["effective_macs"], r["dense"],
                compiled[r["layer"]]["acs"] + compiled[r["layer"]]["macs"]) for r in trained["layers"]]
    t, c = trained["totals"], costs["operation_totals"]
    total = row("total", t["Effective_ACs"], t["Effective_MACs"], t["Dense"], c["acs"] + c["macs"])
    return headers, rows, total


def _ratio(a: float, b: float) -> float | str:
    return a / b if b else "-"
