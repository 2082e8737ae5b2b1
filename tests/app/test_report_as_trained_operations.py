"""The report sets NeuroBench's counts of the model as trained beside the compiled counts, for a
checkpoint; for a NIR file it says they are not available."""

from __future__ import annotations

import json

import nir
import pytest

from frontends.checkpoint import save_checkpoint
from frontends.nir_export import to_nir
from frontends.trained_operations import count_trained_operations, totals
from snn_compile.compile import CompileOptions, compile_model, load_model, model_inputs
from snn_compile.evaluate import evaluate_and_report
from targets.registry import get_target

SAMPLES = 60


def report_for(path, digits, out):
    source = load_model(path)
    compiled = compile_model(source.graph, get_target("reference"), CompileOptions())
    evaluate_and_report(source, compiled, digits, SAMPLES, 32, out, bits=32)
    return source, json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("arch", ["mlp", "csnn"])
def test_a_checkpoints_report_has_the_as_trained_counts_beside_the_compiled(arch, request, digits, tmp_path):
    model, _ = request.getfixturevalue(arch)
    path = save_checkpoint(model, tmp_path / f"{arch}.pt", "digits", digits.levels)
    source, report = report_for(path, digits, tmp_path)
    costs = report["costs"]
    x = model_inputs(digits.x_test[:SAMPLES], source.graph)
    expected = count_trained_operations(model, x, digits.levels)
    assert costs["as_trained"] == {"layers": [o.as_dict() for o in expected], "totals": totals(expected)}
    compiled = costs["operation_totals"]["acs"] + costs["operation_totals"]["macs"]
    ratio = (totals(expected)["Effective_ACs"] + totals(expected)["Effective_MACs"]) / compiled
    assert (ratio == pytest.approx(1.0)) == (arch == "mlp")  # pooling makes the CSNN's as-trained counts larger
    text = (tmp_path / "report.md").read_text()
    section = text[text.index("Operations of the network as trained"):]
    total_line = next(line for line in section.splitlines() if line.startswith("total "))
    assert total_line.split()[-1] == f"{ratio:.4g}"
    html = (tmp_path / "report.html").read_text()
    assert "<th>Effective_ACs</th><th>Effective_MACs</th><th>Dense</th>" in html
    assert f"<td data-v='{ratio!r}'>{ratio:.4g}</td></tr></tfoot>" in html


def test_a_nir_files_report_says_the_as_trained_counts_are_not_available(mlp, digits, tmp_path):
    model, _ = mlp
    nir.write(tmp_path / "mlp.nir", to_nir(model, input_levels=digits.levels))
    source, report = report_for(tmp_path / "mlp.nir", digits, tmp_path)
    assert source.trained is None
    reason = report["costs"]["as_trained"]["unavailable"]
    assert reason.startswith("a nir file holds the network as exported")
    assert f"not available: {reason}" in (tmp_path / "report.md").read_text()
    assert "Operations of the network as trained: not available" in (tmp_path / "report.html").read_text()
