"""One compile flow behind the Target protocol: a new target is one registry entry, and the
sweep prices a row exactly as the compile command prices the same model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from frontends.checkpoint import save_checkpoint
from snn_compile.cli import main
from snn_compile.compile import CompileOptions, calibration_images, compile_model
from snn_compile.sweep import split_data
from targets import reference
from targets.registry import TARGETS, Target, for_bits, get_target, register
from toolchain.errors import UserError
from toolchain.passes.quantize import QuantizeOptions

RUNS = []


def run(graph, inputs, batch_size=256, progress=None, record=False):
    """The toy target: the float reference on the graph the compile flow hands it, logged."""
    RUNS.append(graph)
    return reference.run(graph, inputs, batch_size=batch_size, record=record)


@pytest.fixture
def toy():
    target = register(Target("toy", "a 4-bit float accelerator for the protocol test", __name__, bits=(1, 4)))
    RUNS.clear()
    yield target
    del TARGETS["toy"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mlp, digits):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(mlp[0], path, dataset="digits", levels=digits.levels)
    return path


def test_a_registered_target_compiles_compares_and_sweeps(toy, checkpoint, capsys):
    out = checkpoint.parent / "toy"
    assert main([str(checkpoint), "--target", "toy", "--bits", "4", "--samples", "60", "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "toy" and report["passes"][0].startswith("fake-quantize(bits=4")
    assert set(report["accuracy"]) == {"float", "toy"} and "loihi" not in report["costs"]
    assert not (out / "program.h5").exists()
    # what the toy ran is the 4-bit graph: every weight on a grid of at most 15 levels
    assert all(len(np.unique(c.weight)) <= 15 for c in RUNS[-1].connections)

    assert main(["compare", str(checkpoint), "--targets", "reference,toy", "--bits", "4", "--samples", "60"]) == 0
    assert "toy" in capsys.readouterr().out

    sweep_dir = checkpoint.parent / "toy-sweep"
    assert main(["sweep", str(checkpoint), "--target", "toy", "--bits", "4", "--prune", "0",
                 "--methods", "baseline", "--samples", "60", "--workers", "1", "-o", str(sweep_dir)]) == 0
    rows = json.loads((sweep_dir / "sweep.json").read_text())
    assert {(r["bits"], r["method"]) for r in rows} >= {(4, "baseline")}


def test_a_target_refuses_bits_it_does_not_hold_before_any_work(toy, checkpoint, tmp_path):
    with pytest.raises(UserError, match=r"--bits 6 is out of range: the toy target takes 1\.\.4"):
        toy.check_bits(6)
    assert main([str(checkpoint), "--target", "toy", "--bits", "6", "-o", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists() and RUNS == []


def test_widths_a_target_does_not_hold_route_to_one_that_does():
    assert for_bits(8).name == "loihi2"
    assert for_bits(12).name == "digital45nm"
    with pytest.raises(UserError, match="1..16"):
        for_bits(17)


def test_chip_targets_share_one_program_and_graph_targets_run_the_graph(mlp):
    compiled = compile_model(mlp[1], get_target("loihi2"), CompileOptions(QuantizeOptions(8)))
    assert compiled.model is compiled.program and compiled.program.mapping is not None
    assert [p.split("(")[0] for p in compiled.passes] == ["quantize", "partition", "place"]
    float_run = compile_model(mlp[1], get_target("reference"))
    assert float_run.model is mlp[1] and float_run.passes == []


def test_sweep_row_and_compile_report_price_the_same_program(checkpoint, digits, tmp_path):
    """(bits 8, prune 0, baseline) in the sweep is ``snn-compile --bits 8 --weight-scale max`` with the
    same calibration images: the same accuracy, cores, Loihi latency and energy."""
    samples, calibration = 120, 64
    out = tmp_path / "compiled"
    assert main([str(checkpoint), "--bits", "8", "--weight-scale", "max", "--granularity", "tensor",
                 "--calibration", str(calibration), "--samples", str(samples), "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert main(["sweep", str(checkpoint), "--bits", "8", "--prune", "0", "--methods", "baseline",
                 "--calibration", str(calibration), "--samples", str(samples), "--workers", "1",
                 "-o", str(tmp_path / "sweep")]) == 0
    row = next(r for r in json.loads((tmp_path / "sweep" / "sweep.json").read_text())
               if (r["bits"], r["prune"], r["method"]) == (8, 0, "baseline"))
    assert row["accuracy"] == report["accuracy"]["loihi2"]["accuracy"]
    assert row["loihi_cores"] == report["mapping"]["cores"] == report["costs"]["loihi"]["cores"]
    assert row["loihi_latency_us"] == pytest.approx(report["costs"]["loihi"]["latency_s"] * 1e6, rel=1e-12)
    assert row["loihi_energy_nj"] == pytest.approx(report["costs"]["loihi"]["energy_pj"] / 1e3, rel=1e-12)
    # both drew the same calibration images
    np.testing.assert_array_equal(split_data(digits, calibration=calibration).calibration,
                                  calibration_images(digits.x_train, calibration))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_the_machine_lacks_is_refused_before_any_work(checkpoint, tmp_path):
    out = tmp_path / "out"
    assert main([str(checkpoint), "--device", "cuda", "-o", str(out)]) == 2
    assert not out.exists()
    with pytest.raises(UserError, match="target lava runs on the CPU only"):
        get_target("lava").check_device("cuda")
    get_target("lava").check_device("auto")  # auto is the CPU wherever there is no GPU


def test_a_reset_the_target_cannot_run_is_refused_before_any_run(toy, checkpoint, capsys, monkeypatch):
    """A target declares the resets it runs; compare refuses the others before the reference runs a sample."""
    monkeypatch.setitem(TARGETS, "toy", dataclasses.replace(TARGETS["toy"], resets=("zero",)))
    monkeypatch.setattr(reference, "run", lambda *a, **k: pytest.fail("a run started before the refusal"))
    assert main(["compare", str(checkpoint), "--targets", "reference,toy", "--bits", "4", "--reset", "subtract"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "resets by subtract and target toy runs only reset zero; compile with --reset zero" in message


def test_lava_takes_only_reset_to_zero_and_names_the_target_that_takes_subtraction(mlp):
    graph = mlp[1].replace(populations=[dataclasses.replace(p, reset="subtract") for p in mlp[1].populations])
    with pytest.raises(UserError, match="target lava runs only reset zero; compile with --reset zero or use "
                                        "--target loihi2"):
        compile_model(graph, get_target("lava"))
