"""report.html and sweep.html: what the pages draw matches report.json and sweep.csv, and a real
headless browser opens them from disk without a network request or a script error."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from frontends.nir_export import to_nir
from snn_compile.compile import CompileOptions, ModelSource, calibration_images, compile_model, model_inputs
from snn_compile.evaluate import evaluate_and_report
from snn_compile.html_report import page
from snn_compile.report import DIVERGENCE_AGREEMENT, float_vs_chip, regression_points, write_sweep
from snn_compile.sweep_report import pareto_front
from targets.registry import get_target
from toolchain.results import LayerActivity, RunResult

SAMPLES = 200


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each <svg>, in document order."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.svgs: list[list[str]] = []  # the tags inside each top-level svg
        self._depth = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "svg":
            if self._depth == 0:
                self.svgs.append([])
            self._depth += 1
        elif self._depth:
            self.svgs[-1].append(tag)

    def handle_endtag(self, tag):
        if tag == "svg":
            self._depth -= 1

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


@pytest.fixture(scope="module")
def csnn_report(tmp_path_factory, csnn, digits):
    """The digits CSNN compiled for Loihi 2 and reported on SAMPLES test images."""
    model, graph = csnn
    out = tmp_path_factory.mktemp("csnn-report")
    calibration = model_inputs(calibration_images(digits.x_train, 64), graph)
    compiled = compile_model(graph, get_target("loihi2"), CompileOptions(), calibration)
    source = ModelSource(path=out / "csnn.pt", nir_graph=to_nir(model, input_levels=digits.levels), graph=graph,
                         dataset="digits", info={"format": "snntorch checkpoint"})
    evaluate_and_report(source, compiled, digits, SAMPLES, 256, out)
    return out, json.loads((out / "report.json").read_text())


def test_chip_map_names_every_core_of_the_mapping(csnn_report):
    out, report = csnn_report
    cores = Elements((out / "report.html").read_text()).find("g", **{"class": "core"})
    mapping = report["mapping"]
    assert sorted(int(c["data-core"]) for c in cores) == list(range(mapping["cores"]))
    per_layer = {r["layer"]: r["cores"] for r in mapping["layers"]}
    assert {layer: sum(c["data-layer"] == layer for c in cores) for layer in per_layer} == per_layer
    placed = report["chip_map"]["cores"]
    for row in mapping["layers"]:  # the map's utilisation is the mapping summary's, core by core
        own = [c["utilisation"] for c in placed if c["layer"] == row["layer"]]
        for field in ("neurons", "synapse_memory_bits", "fan_in_axons", "fan_out_axons"):
            assert max(u[field] for u in own) == row[f"{field}_max"]
    positions = {(c["chip"], c["x"], c["y"]) for c in placed}
    assert len(positions) == len(placed) and all(x < 16 and y < 8 for _, x, y in positions)
    # every core's spikes per inference sum to the layer's spikes per sample on the chip
    for layer, spikes in report["spikes_per_sample"]["loihi2"].items():
        assert sum(c["spikes"] for c in placed if c["layer"] == layer) == pytest.approx(spikes, rel=1e-12)


def test_confusion_matrices_total_the_samples_and_give_the_accuracy(csnn_report):
    out, report = csnn_report
    assert set(report["confusion"]) == {"float", "loihi2"}
    for name, matrix in report["confusion"].items():
        counts = np.array(matrix)
        assert counts.shape == (10, 10) and counts.sum() == SAMPLES
        assert np.trace(counts) / SAMPLES == report["accuracy"][name]["accuracy"]
    svgs = Elements((out / "report.html").read_text())
    heatmaps = [s for s in svgs.find("svg") if s["aria-label"].startswith("confusion matrix")]
    assert [h["aria-label"] for h in heatmaps] == ["confusion matrix: float", "confusion matrix: loihi2"]


def test_float_vs_chip_per_layer_sums_to_the_spikes_per_sample(csnn_report):
    _, report = csnn_report
    comparison = report["float_vs_chip"]
    for row in comparison["layers"]:
        assert row["float_spikes_per_neuron"] * row["neurons"] == pytest.approx(
            report["spikes_per_sample"]["float"][row["layer"]], rel=1e-12)
        assert row["chip_spikes_per_neuron"] * row["neurons"] == pytest.approx(
            report["spikes_per_sample"]["loihi2"][row["layer"]], rel=1e-12)
        assert 0 <= row["agreement"] <= 1
    first = next((r["layer"] for r in comparison["layers"] if r["agreement"] < DIVERGENCE_AGREEMENT), None)
    assert comparison["first_divergence"] == first


def _result(counts: dict[str, list[float]], samples: int) -> RunResult:
    activity = {name: LayerActivity(np.array(c, dtype=np.float64), np.zeros(4)) for name, c in counts.items()}
    return RunResult(output=np.zeros((samples, 2)), activity=activity, samples=samples, steps=4)


def test_the_first_divergence_is_the_first_layer_below_the_threshold():
    reference = _result({"a": [4, 2], "b": [2, 0], "c": [0, 0]}, samples=2)
    target = _result({"a": [4, 2], "b": [1, 1], "c": [2, 0]}, samples=2)
    comparison = float_vs_chip(reference, target, ["a", "b", "c"])
    assert [r["agreement"] for r in comparison["layers"]] == [1.0, 0.5, 0.0]
    assert comparison["first_divergence"] == "b"
    assert [r["silent_float"] for r in comparison["layers"]] == [0, 1, 2]
    same = float_vs_chip(reference, reference, ["a", "b", "c"])
    assert same["first_divergence"] is None and [r["agreement"] for r in same["layers"]] == [1.0, 1.0, 1.0]


SWEEP_ROWS = [  # (method, bits, prune, accuracy, size_bits, energy_45nm_nj, loihi_energy_nj, loihi_cores)
    ("baseline", 32, 0.0, 0.95, 80000, 300.0, None, None),
    ("baseline", 8, 0.0, 0.95, 20000, 310.0, 90.0, 4),
    ("best", 8, 0.0, 0.96, 24000, 305.0, 95.0, 4),
    ("baseline", 4, 0.0, 0.80, 12000, 290.0, 60.0, 3),
    ("best", 4, 0.0, 0.90, 12000, 295.0, 60.0, 3),
    ("best", 4, 0.2, 0.90, 12000, 250.0, 55.0, 2),
    ("best", 2, 0.2, 0.60, 6000, 240.0, 70.0, 2),
    ("baseline", 32, 0.2, 0.93, 64000, 260.0, None, None),
]


def _sweep_rows() -> list[dict]:
    rows = []
    for method, bits, prune, accuracy, size, energy, loihi, cores in SWEEP_ROWS:
        row = {"bits": bits, "prune": prune, "method": method, "quantization": "max/tensor", "pruning": "none",
               "accuracy": accuracy, "size_bits": size, "energy_45nm_nj": energy}
        if loihi is not None:
            row.update(loihi_energy_nj=loihi, loihi_cores=cores)
        rows.append(row)
    return rows


def _non_dominated(rows: list[dict], cost: str) -> set[int]:
    """Brute force: rows no other row matches or beats on both accuracy and ``cost``, strictly on one."""
    have = [i for i, r in enumerate(rows) if r[cost] != ""]
    value = lambda i: (float(rows[i]["accuracy"]), float(rows[i][cost]))  # noqa: E731
    return {i for i in have if not any(value(j)[0] >= value(i)[0] and value(j)[1] <= value(i)[1]
                                       and value(j) != value(i) for j in have)}


def test_sweep_page_fronts_are_exactly_the_non_dominated_rows_of_the_csv(tmp_path):
    write_sweep(_sweep_rows(), tmp_path)
    with open(tmp_path / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    page_html = (tmp_path / "sweep.html").read_text()
    table_rows = re.findall(r"<tr class='(front|)'>(.*?)</tr>", page_html.split("<h2 id='rows'>")[1])
    assert len(table_rows) == len(rows)
    marks = [re.findall(r"<td[^>]*>([^<]*)</td>", cells)[-1] for _, cells in table_rows]
    names = {"energy_45nm_nj": "45 nm energy", "loihi_energy_nj": "Loihi energy", "size_bits": "size",
             "loihi_cores": "cores"}
    for cost in names:
        expected = _non_dominated(rows, cost)
        assert set(pareto_front(_sweep_rows(), cost)) == expected
        assert {i for i, m in enumerate(marks) if names[cost] in m.split(", ")} == expected
    assert _non_dominated(rows, "energy_45nm_nj") == {0, 2, 5, 6, 7}
    assert _non_dominated(rows, "size_bits") == {1, 2, 4, 5, 6}  # 4 and 5 tie exactly: neither beats the other
    assert _non_dominated(rows, "loihi_cores") == {2, 5}  # 4 ties 5's accuracy on more cores
    assert [i for i, (t, _) in enumerate(table_rows) if t == "front"] == [0, 1, 2, 4, 5, 6, 7]
    figures = [a["aria-label"] for a in Elements(page_html).find("svg")]
    assert figures == ["accuracy vs 45 nm energy", "accuracy vs Loihi dynamic energy, estimate",
                       "accuracy vs model size", "accuracy vs Loihi cores"]


def test_a_regression_report_without_a_program_draws_predicted_against_true():
    report = {"source": {"path": "m.nir", "format": "nir", "dataset": None, "dt": 1e-3, "dt_source": "graph",
                         "reset": "zero"},
              "target": "reference", "bits": 8, "warnings": [], "passes": [], "pipeline": [],
              "size": {"float_bits": 640, "quantized_bits": 640, "compression": 1.0},
              "regression": {"float": {"mse": 0.25, "mae": 0.5, "samples": 3}},
              "regression_points": regression_points(np.array([[0.0], [1.0], [2.0]]),
                                                     {"float": np.array([[0.5], [1.5], [1.5]])})}
    assert report["regression_points"] == {"true": [0.0, 1.0, 2.0], "predicted": {"float": [0.5, 1.5, 1.5]}}
    elements = Elements(page(report))
    labels = [a["aria-label"] for a in elements.find("svg")]
    assert labels == ["predicted vs true: float"]
    assert elements.svgs[0].count("circle") == 3


# -- in a real browser -------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install "
                                                             "chromium)")
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--disable-default-apps", "--disable-domain-reliability", "--enable-logging=stderr", "--v=0"]


def browse(path: Path, work: Path) -> tuple[str, list[str], list[str]]:
    """Open ``path`` from disk in headless chromium: (the DOM after its scripts ran, the URLs the page
    requested that are not files, its console messages). A screenshot goes to ``work``."""
    netlog = work / f"{path.stem}-netlog.json"
    common = QUIET + [f"--user-data-dir={work / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *common, f"--log-net-log={netlog}", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr
    shot = subprocess.run([CHROMIUM, *common, "--window-size=1300,2400", f"--screenshot={work / path.stem}.png",
                           path.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and (work / f"{path.stem}.png").stat().st_size > 10_000, shot.stderr
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requested = [e["params"]["url"] for e in log["events"] if e["type"] == start
                 and "file://" in e["params"].get("network_isolation_key", "")  # the page's, not the browser's own
                 and not e["params"]["url"].startswith(("file:", "data:"))]
    console = [line for line in dom.stderr.splitlines() + shot.stderr.splitlines() if ":CONSOLE" in line]
    return dom.stdout, requested, console


def check_page(path: Path, work: Path, figures: int) -> Elements:
    dom, requested, console = browse(path, work)
    assert requested == [] and console == []
    elements = Elements(dom)
    assert len(elements.svgs) == figures and all(len(parts) > 3 for parts in elements.svgs)
    assert all(not re.match(r"(https?:)?//", a.get("src", "") + a.get("href", "")) for _, a in elements.tags)
    text = path.read_text()
    sortable = sum(t.count("<th>") for t in re.findall(r"<table class='sortable'>.*?</table>", text))
    assert sortable and len(elements.find("th", title="sort")) == sortable  # the page's script ran to its end
    raw = Elements(text)  # and without the script the page holds the same figures and tables
    assert len(raw.svgs) == figures and len(raw.find("table")) == len(elements.find("table"))
    return elements


@needs_chromium
def test_the_browser_check_sees_requests_and_console_errors(tmp_path):
    """The check itself: a page that fetches an image and throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><img src='http://127.0.0.1:9/x.png'>"
                   "<script>missing_function();</script></body></html>")
    _, requested, console = browse(bad, tmp_path)
    assert requested == ["http://127.0.0.1:9/x.png"]
    assert console and all("Uncaught ReferenceError: missing_function is not defined" in line for line in console)


@needs_chromium
def test_report_page_opens_offline_in_a_browser(csnn_report, tmp_path):
    out, report = csnn_report
    layers = len(report["program"]["layers"])
    # chip map, two confusion matrices, agreement + one scatter per layer, spikes per step, five energy figures
    elements = check_page(out / "report.html", tmp_path, 1 + 2 + 1 + layers + 1 + 5)
    assert len(elements.find("g", **{"class": "core"})) == report["mapping"]["cores"]


@needs_chromium
def test_sweep_page_opens_offline_in_a_browser(tmp_path):
    write_sweep(_sweep_rows(), tmp_path)
    check_page(tmp_path / "sweep.html", tmp_path, 4)
