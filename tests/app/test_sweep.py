"""Compression options and the sweep: behaviour, every requested row, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from frontends.checkpoint import save_checkpoint
from frontends.models import SpikingNetwork, default_config
from targets import reference
from targets.registry import get_target
from snn_compile.cli import main
from snn_compile.compile import CompileOptions, compile_model
from snn_compile.report import write_sweep
from targets.chips import load_chip
from toolchain.drc import check_fits
from toolchain.errors import UserError
from toolchain.files import read_marker
from toolchain.ir import INPUT, Connection, Graph, Population
from toolchain.passes.quantize import QuantizeOptions, fake_quantize, quantize
from snn_compile.sweep import check_settings, evaluate_setting, run_sweep, setting_key, split_data, sweep_settings
from toolchain.passes.prune import PruneOptions

CLI = [sys.executable, "-m", "snn_compile.cli"]


def test_per_channel_beats_per_tensor_on_uneven_channel_ranges(loihi2):
    """Channel 0's weights are 100x channel 1's: one shared step rounds channel 1 to nothing."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(2, 16)) * np.array([[1.0], [0.01]])
    graph = Graph((16,), [Population("out", (2,), 0.0, 0.9, 0.5, 0.0)], [Connection(INPUT, "out", weight)],
                  "out", steps=4, dt=1e-3, input_levels=255)
    errors = {}
    for granularity in ("tensor", "channel"):
        snapped = fake_quantize(graph, QuantizeOptions(4, "max", granularity)).connections[0].weight
        errors[granularity] = np.abs(snapped - weight)[1].sum() / np.abs(weight[1]).sum()
        program = quantize(graph, loihi2, QuantizeOptions(4, "max", granularity))
        assert len(program.layers[0].groups()) == (1 if granularity == "tensor" else 2)
    assert errors["tensor"] > 0.9 and errors["channel"] < 0.2


def test_sweep_has_every_requested_row(mlp, digits, loihi2, capsys):
    _, graph = mlp
    data = split_data(digits, calibration=128, validation=128, test_samples=150)
    rows = run_sweep(graph, get_target("loihi2"), data, [16, 8, 4], [0.2], methods=("baseline", "best"), workers=2)
    settings = {(r["method"], r["bits"], r["prune"]) for r in rows}
    expected = {("baseline", 32, 0.0)} | {(m, b, p) for m in ("baseline", "best") for b in (16, 8, 4)
                                         for p in (0.0, 0.2)} | {(m, 32, 0.2) for m in ("baseline", "best")}
    assert settings == expected and len(rows) == len(expected)
    # without a terminal, progress is one line per finished setting
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sweep: ")]
    assert sorted(int(line.split()[1].split("/")[0]) for line in progress) == list(range(1, len(rows) + 1))
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["samples"] == 150 and row["size_bits"] > 0
    by = {(r["method"], r["bits"], r["prune"]): r for r in rows}
    assert by[("best", 4, 0.2)]["neurons"] < by[("best", 4, 0.0)]["neurons"]
    assert by[("baseline", 4, 0.0)]["size_bits"] < by[("baseline", 8, 0.0)]["size_bits"]
    assert all(row["energy_45nm_nj"] > 0 for row in rows)
    assert all(row["loihi_latency_us"] > 0 for row in rows if row["bits"] <= 8)
    # structured pruning removes neurons, so the chip spends less on them
    assert by[("best", 4, 0.2)]["loihi_energy_nj"] < by[("best", 4, 0.0)]["loihi_energy_nj"]


def test_greedy_pruning_search_can_be_left_out(mlp, digits, loihi2):
    data = split_data(digits, calibration=128, validation=128, test_samples=150)
    row = evaluate_setting(mlp[1], get_target("loihi2"), data, None, 0.2, "best", prune_search=False)
    assert row["pruning"].startswith("structured/") and "greedy" not in row["pruning"]


def test_axes_grid_is_the_seeds_study():
    settings = sweep_settings([8, 4], [0.1, 0.3], ("baseline",), grid="axes")
    assert settings == [(None, 0.0, "baseline"), (8, 0.0, "baseline"), (4, 0.0, "baseline"),
                        (None, 0.1, "baseline"), (None, 0.3, "baseline")]
    with pytest.raises(UserError, match="--grid 'diagonal'"):
        sweep_settings([8], [0.1], ("baseline",), grid="diagonal")


def test_sweep_reproduces_the_float_model_at_16_bits(mlp, digits, loihi2):
    _, graph = mlp
    graph16 = fake_quantize(graph, QuantizeOptions(16, "max"))
    a = reference.run(graph, digits.x_test).predictions()
    b = reference.run(graph16, digits.x_test).predictions()
    assert np.mean(a == b) > 0.99


@pytest.mark.parametrize("bits, ratios, message", [([], [0.1], "--bits needs at least one"),
                                                   ([8], [], "--prune needs at least one"), ([17], [0.1], "1..16"),
                                                   ([0], [0.1], "1..16"), ([8], [1.0], "--prune 1 is out of range"),
                                                   ([8], [-0.2], "--prune -0.2 is out of range")])
def test_bad_settings(bits, ratios, message):
    with pytest.raises(UserError, match=message):
        check_settings(bits, ratios)


def test_an_interrupted_sweep_keeps_its_rows_and_resumes_to_the_same_rows(tmp_path, capsys):
    torch.manual_seed(0)
    model = SpikingNetwork(default_config("mlp", (1, 8, 8), 10, widths=[16]), (1, 8, 8), 10, 4)
    save_checkpoint(model, tmp_path / "model.pt", dataset="digits", levels=16)
    sweep = CLI + ["sweep", str(tmp_path / "model.pt"), "--bits", "8,4", "--prune", "0.2", "--methods", "baseline",
                   "--samples", "60", "--calibration", "32", "--workers", "1", "--prune-search", "none"]
    out = tmp_path / "out"
    proc = subprocess.Popen(sweep + ["-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("sweep: 1/6 "):  # one of six settings finished: interrupt the rest
            proc.send_signal(signal.SIGINT)
            break
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and stderr == "snn-compile: interrupted\n"
    kept = json.loads((out / "sweep.json").read_text())
    assert 1 <= len(kept) < 6 and kept[0]["bits"] == 32 and kept[0]["prune"] == 0
    assert f"wrote the {len(kept)} finished settings of 6 to {out}/ (a partial sweep); rerun the same command " \
           f"with --resume to compute the other {6 - len(kept)}" in stdout
    assert f"A partial sweep: {len(kept)} of 6 settings (interrupted)" in (out / "sweep.md").read_text()
    assert read_marker(out)["sweep"]["complete"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "out"]

    options = [str(a) for a in sweep[len(CLI):]]
    assert main(options + ["-o", str(out), "--resume"]) == 0
    assert f"sweep: {len(kept)} of 6 settings already done; computing {6 - len(kept)}" in capsys.readouterr().out
    assert read_marker(out)["sweep"]["complete"] is True
    assert main(options + ["-o", str(tmp_path / "whole")]) == 0
    for name in ("sweep.json", "sweep.csv", "sweep.md"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    capsys.readouterr()
    assert main(options[:-2] + ["--prune-search", "greedy", "-o", str(out), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"snn-compile: error: --resume: the sweep in {out} ran with prune_search 'none', not 'greedy'; resume with "
        "the same options, or start over with --force\n")


def test_resumed_rows_equal_computed_ones(mlp, digits, loihi2):
    """Rows handed back as finished are kept; the missing ones (here one needing the shared
    calibration's rates) come out as an uninterrupted run computes them."""
    data = split_data(digits, calibration=128, validation=128, test_samples=150)
    settings = dict(bits=[8], ratios=[0.2], methods=("baseline", "best"), workers=1, progress=False,
                    prune_search=False)
    rows = run_sweep(mlp[1], get_target("loihi2"), data, **settings)
    missing = {("best", 8, 0.0), ("baseline", 32, 0.2)}
    finished = [row for row in rows if (row["method"], row["bits"], row["prune"]) not in missing]
    assert len(finished) == len(rows) - 2
    assert run_sweep(mlp[1], get_target("loihi2"), data, **settings, finished=finished) == rows


def test_core_budgets_add_rows_pruned_to_fit_each(csnn, digits, monkeypatch, tmp_path):
    """The cores axis on the digits CSNN: it fits 3 cores of the real chip, so a chip whose
    convolution tile holds 128 neurons makes it take 7. A row per budget and chip width, pruned
    until its program maps within the budget, is kept on --resume and lands on the cores front."""
    chip = load_chip("loihi2")
    small = replace(chip, limits={**chip.limits, "conv_tile_neurons_below": {"value": 128, "source": "test"}})
    monkeypatch.setattr("snn_compile.compile.load_chip", lambda name: small)
    data = split_data(digits, calibration=128, validation=128, test_samples=150)
    options = dict(methods=("baseline",), workers=1, prune_search=False, progress=False)
    rows = run_sweep(csnn[1], get_target("loihi2"), data, [8], [0.2], max_cores=[4, 3], **options)
    by = {setting_key(r): r for r in rows}
    assert list(by) == [(32, 0.0, "baseline"), (8, 0.0, "baseline"), (8, 0.2, "baseline"), (32, 0.2, "baseline"),
                        (8, 0.0, "baseline", 4), (8, 0.0, "baseline", 3)]
    assert by[(8, 0.0, "baseline")]["loihi_cores"] == 7
    for budget in (4, 3):
        row = by[(8, 0.0, "baseline", budget)]
        assert row["max_cores"] == budget and row["loihi_cores"] <= budget and 0 <= row["accuracy"] <= 1
        assert row["pruning"].startswith("to fit, structured/l1/none, by readout deviation per core saved: 7 -> ")
        assert row["neurons"] < by[(8, 0.0, "baseline")]["neurons"]
    # the row is the program compile --max-cores 3 --prune-to-fit makes
    compiled = compile_model(csnn[1], get_target("loihi2"), CompileOptions(
        QuantizeOptions(8, "max", "tensor", False), PruneOptions(0.0, "structured", "l1", "none"), max_cores=3,
        prune_to_fit=True), data.calibration)
    assert check_fits(compiled.program.mapping, small, max_cores=3) == []
    predictions = get_target("loihi2").run(compiled.program, data.test_x).predictions()
    assert by[(8, 0.0, "baseline", 3)]["accuracy"] == pytest.approx(np.mean(predictions == data.test_y))
    assert by[(8, 0.0, "baseline", 3)]["loihi_cores"] == len(compiled.program.mapping.cores)

    again = run_sweep(csnn[1], get_target("loihi2"), data, [8], [0.2], max_cores=[4, 3], finished=rows, **options)
    assert again == rows
    with pytest.raises(UserError, match="--max-cores prunes to a Loihi core budget; none of --bits 16"):
        run_sweep(csnn[1], get_target("loihi2"), data, [16], [0.2], max_cores=[3], **options)
    write_sweep(rows, tmp_path)
    page = (tmp_path / "sweep.html").read_text()
    assert "accuracy vs Loihi cores" in page and "baseline 8b fit 3 cores" in page


@pytest.mark.parametrize("budgets, bits, message", [
    ("0,8", "8", "--max-cores 0: a core budget is a positive whole number"),
    (",", "8", "--max-cores needs at least one value, e.g. --max-cores 8,16,32"),
    ("8", "16", "--max-cores prunes to a Loihi core budget; none of --bits 16 runs on a chip with cores "
                "(Loihi 2 holds 1..8)")])
def test_bad_core_budgets_are_refused_before_any_work(tmp_path, capsys, budgets, bits, message):
    torch.manual_seed(0)
    model = SpikingNetwork(default_config("mlp", (1, 8, 8), 10, widths=[16]), (1, 8, 8), 10, 4)
    save_checkpoint(model, tmp_path / "model.pt", dataset="digits", levels=16)
    assert main(["sweep", str(tmp_path / "model.pt"), "--bits", bits, "--max-cores", budgets,
                 "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"snn-compile: error: {message}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
