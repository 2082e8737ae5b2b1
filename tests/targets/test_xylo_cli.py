"""Xylo through the command line: compile with --data to a report directory, and compare beside
Loihi 2, on a small recurrent snnTorch network exported to NIR."""

from __future__ import annotations

import json

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from frontends.snntorch_export import export_to_nir
from snn_compile.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """16 inputs -> 24 RLeaky -> 4 outputs, untrained; 40 samples of 16 channels on 15 levels."""
    root = tmp_path_factory.mktemp("xylo")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 24), snn.RLeaky(beta=0.9, linear_features=24, init_hidden=True,
                                                      reset_mechanism="subtract"),
                        nn.Linear(24, 4), snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="subtract"))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    export_to_nir(net, torch.zeros(1, 16), root / "rnn.nir", steps=12, input_levels=15)
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x=rng.integers(0, 16, (40, 16)), y=rng.integers(0, 4, 40), levels=15)
    return root


def test_compile_for_xylo_writes_a_report_with_its_costs(files, capsys):
    out = files / "xylo"
    assert main([str(files / "rnn.nir"), "--target", "xylo", "--data", str(files / "data.npz"), "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "xylo" and report["passes"] == ["quantize(bits=8, headroom=4)", "map()", "drc()"]
    assert report["program"]["chip"] == "xylo" and report["mapping"] is None
    assert set(report["accuracy"]) == {"float", "xylo"} and report["accuracy"]["xylo"]["samples"] == 8
    costs = report["costs"]["xylo"]
    assert costs["chip_steps"] == 12 + 1 and costs["latency_s"] > 0 and costs["realtime_at_dt"]
    assert costs["energy_per_inference_j"] == pytest.approx(291e-6 * 13 * 1e-3)
    assert report["costs"]["digital45nm"]["energy_pj"] > 0 and "loihi" not in report["costs"]
    assert report["spikes_per_sample"]["xylo"]["1"] > 0
    page = (out / "report.html").read_text()
    assert "xylo" in page and "<svg" in page and (out / "program.h5").stat().st_size > 0
    assert "Xylo LIF" in capsys.readouterr().out


def test_compare_puts_xylo_beside_loihi2(files, capsys):
    assert main(["compare", str(files / "rnn.nir"), "--targets", "reference,loihi2,xylo", "--data",
                 str(files / "data.npz"), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "8 test samples" in table and "reference/xylo" in table and "loihi2/xylo" in table
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith(("reference ", "loihi2 ", "xylo "))}
    assert "Loihi 2 estimate" in rows["loihi2"] and " us " in rows["loihi2"]
    assert "published figure" in rows["xylo"] and " nJ " in rows["xylo"] and " us " in rows["xylo"]
