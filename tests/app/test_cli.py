"""The command line: a real compile, and every user error as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import nir
import numpy as np
import pytest

from frontends.checkpoint import save_checkpoint
from toolchain.passes.prune import RIDGE

CLI = [sys.executable, "-m", "snn_compile.cli"]


def snn_compile(*args, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mlp, digits):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(mlp[0], path, dataset="digits", levels=digits.levels)
    return path


def test_compile_writes_program_and_reports(checkpoint):
    proc = snn_compile(checkpoint, "--target", "loihi2", "--bits", "8")
    assert proc.returncode == 0, proc.stderr
    out = checkpoint.with_name("model-loihi2-8b")
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["loihi2"]["samples"] == 540
    assert abs(report["accuracy"]["loihi2"]["accuracy"] - report["accuracy"]["float"]["accuracy"]) <= 0.01
    assert "Accuracy" in (out / "report.md").read_text() and "loihi2" in proc.stdout
    costs = report["costs"]
    assert costs["digital45nm"]["energy_pj"] > 0 and costs["digital45nm"]["ann_energy_pj"] > 0
    assert costs["loihi"]["latency_s"] > 0 and report["mapping"]["cores"] >= len(report["program"]["layers"])
    assert "SNN/ANN energy ratio" in proc.stdout and "cores on 1 chip" in proc.stdout
    page = (out / "report.html").read_text()
    assert "<svg" in page and "energy per layer" in page and "http" not in page.split("<svg", 1)[0]
    assert nir.read(str(out / "model.nir")).metadata["steps"] == 16
    # the written NIR graph compiles again on its own
    again = snn_compile(out / "model.nir", "--dataset", "digits", "--samples", "100", "-o", out.parent / "again")
    assert again.returncode == 0, again.stderr


def test_help_lists_commands_and_options():
    top = snn_compile("--help")
    assert top.returncode == 0 and "train" in top.stdout and "--target" in snn_compile("compile", "--help").stdout


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snn-compile: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_file(tmp_path):
    assert_user_error(snn_compile(tmp_path / "nope.pt"), "no such file")


def test_not_a_model(tmp_path):
    bogus = tmp_path / "bogus.pt"
    bogus.write_text("hello")
    assert_user_error(snn_compile(bogus), "not a model checkpoint")
    assert not (tmp_path / "bogus-loihi2-8b").exists()


def test_unsupported_nir_node(tmp_path):
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}), "thr": nir.Threshold(threshold=np.ones(4)),
             "output": nir.Output(output_type={"output": np.array([4])})}
    path = tmp_path / "g.nir"
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=[("input", "thr"), ("thr", "output")]))
    assert_user_error(snn_compile(path, "--steps", "4"), "Threshold", "not supported")
    assert not list(tmp_path.glob("g-*"))


@pytest.mark.parametrize("bits", ["0", "9"])
def test_bits_out_of_range(checkpoint, bits):
    assert_user_error(snn_compile(checkpoint, "--bits", bits), f"--bits {bits}", "1..8")


@pytest.mark.parametrize("rate", ["-0.1", "1"])
def test_channel_dropout_out_of_range(tmp_path, rate):
    assert_user_error(snn_compile("train", "--channel-dropout", rate, "-o", tmp_path / "m.pt"),
                      f"--channel-dropout must be in [0, 1), got {float(rate)}")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("widths", ["", "16,0", "16,x"])
def test_bad_widths_are_refused(tmp_path, widths):
    message = "expected comma-separated numbers" if "x" in widths else "must be one or more positive sizes"
    assert_user_error(snn_compile("train", "--widths", widths, "-o", tmp_path / "m.pt"), "--widths", message)
    assert not (tmp_path / "m.pt").exists()


def test_digital_target_takes_wide_weights(checkpoint, tmp_path):
    proc = snn_compile(checkpoint, "--target", "digital45nm", "--bits", "12", "--samples", "100",
                       "--energy-model", "spike", "-o", tmp_path / "digital")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "digital" / "report.json").read_text())
    assert report["costs"]["digital45nm"]["model"] == "spike" and "loihi" not in report["costs"]
    assert not (tmp_path / "digital" / "program.h5").exists()
    assert_user_error(snn_compile(checkpoint, "--target", "digital45nm", "--bits", "17"), "1..16")


def test_compile_prunes_structurally_and_the_program_shrinks(checkpoint, tmp_path):
    proc = snn_compile(checkpoint, "--prune", "0.3", "-o", tmp_path / "pruned")
    assert proc.returncode == 0, proc.stderr
    pruned = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert snn_compile(checkpoint, "-o", tmp_path / "full").returncode == 0
    full = json.loads((tmp_path / "full" / "report.json").read_text())
    assert pruned["passes"][0] == ("prune(ratio=0.3, method=structured, rank=redundancy, compensation=regression, "
                                   f"ridge={RIDGE})")
    assert [layer["neurons"] for layer in pruned["program"]["layers"]] == [128 - 38, 10]
    synapses = lambda report: sum(layer["synapses"] for layer in report["program"]["layers"])  # noqa: E731
    assert synapses(pruned) < 0.75 * synapses(full)
    assert pruned["size"]["quantized_bits"] < 0.75 * full["size"]["quantized_bits"]
    memory = lambda report: sum(layer["synapse_memory_bits_max"] for layer in report["mapping"]["layers"])  # noqa: E731
    assert memory(pruned) < memory(full)
    accuracy = pruned["accuracy"]
    assert accuracy["float"] == full["accuracy"]["float"]  # measured against the model as trained
    assert accuracy["loihi2"]["accuracy"] >= accuracy["float"]["accuracy"] - 0.04


def test_compile_takes_the_calibrated_quantization_options(checkpoint, tmp_path):
    proc = snn_compile(checkpoint, "--bits", "4", "--weight-scale", "output-mse", "--granularity", "channel",
                       "--bias-correction", "-o", tmp_path / "q4")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "q4" / "report.json").read_text())
    assert report["passes"][0] == "quantize(bits=4, weight_scale=output-mse, granularity=channel, bias_correction=True)"
    assert report["program"]["layers"][0]["groups"] > 1  # per-channel steps: a neuron group per channel
    assert report["accuracy"]["loihi2"]["accuracy"] >= report["accuracy"]["float"]["accuracy"] - 0.03


@pytest.mark.parametrize("args, fragments", [
    (["--prune", "1"], ["--prune 1 is out of range", "[0, 1)"]),
    (["--prune", "0.3", "--calibration", "0"],
     ["--prune-rank redundancy and --prune-compensation regression need calibration images", "--prune-rank l1"]),
    (["--bias-correction", "--calibration", "0"], ["--bias-correction needs calibration images", "--dataset"]),
    (["--prune", "0.999"], ["would remove every unit of layer b0_lif"]),
])
def test_bad_compression_options(checkpoint, tmp_path, args, fragments):
    assert_user_error(snn_compile(checkpoint, *args, "-o", tmp_path / "out"), *fragments)
    assert not (tmp_path / "out").exists()


def test_a_network_that_does_not_fit_names_the_limit(checkpoint, tmp_path):
    assert_user_error(snn_compile(checkpoint, "--max-cores", "1", "-o", tmp_path / "out"), "does not fit loihi2",
                      "cores", "over the limit of 1")
    assert not (tmp_path / "out").exists()


def test_unknown_target(checkpoint):
    assert_user_error(snn_compile(checkpoint, "--target", "truenorth"), "unknown target", "loihi2")


def test_dataset_directory_without_files(checkpoint, tmp_path):
    assert_user_error(snn_compile(checkpoint, "--dataset", "fmnist", "--data-dir", tmp_path, "-o", tmp_path / "out"),
                      "not found", "dataset-fashion-mnist")


def test_compare_prints_accuracy_energy_latency_and_agreement_per_backend(checkpoint):
    proc = snn_compile("compare", checkpoint, "--targets", "reference,loihi2", "--samples", "100")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()
            if line.startswith(("reference ", "loihi2 "))}
    assert float(rows["reference"][1]) >= 0.9 and float(rows["loihi2"][1]) >= 0.9
    assert rows["reference"][3:6] == ["nJ", "-", "45"]  # priced by the 45 nm model, which has no latency
    assert rows["loihi2"][3] == "nJ" and rows["loihi2"][5] == "us" and float(rows["loihi2"][4]) > 0
    assert "Loihi 2 estimate (dynamic energy)" in proc.stdout
    agreement = next(line for line in proc.stdout.splitlines() if line.startswith("reference/loihi2"))
    assert float(agreement.split()[1]) >= 0.95
    assert "bit-exact" not in proc.stdout  # only printed when both bit-accurate backends ran


def test_compare_refuses_unknown_and_repeated_targets(checkpoint):
    assert_user_error(snn_compile("compare", checkpoint, "--targets", "loihi2,truenorth"), "unknown target",
                      "'truenorth'")
    assert_user_error(snn_compile("compare", checkpoint, "--targets", "loihi2,loihi2"), "name each target once")
