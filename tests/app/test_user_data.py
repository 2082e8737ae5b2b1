"""--data FILE.npz: the user's own data for compile, compare, sweep and train."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from frontends.datasets import Dataset
from frontends.user_data import read_user_data
from snn_compile.cli import main
from toolchain.errors import UserError
from toolchain.nir_import import ImportOptions, graph_from_nir, read_nir_file
from tests.paths import DATA

CORPUS = DATA / "nir"
RNG = np.random.default_rng(0)


def frames(n=40, shape=(1, 8, 8)):
    return (RNG.random((n,) + shape) < 0.3).astype(np.uint8)


@pytest.fixture
def conv_graph(tmp_path):
    """snnTorch's own export of a 1x8x8 -> 4 class CSNN (no steps, dt or levels in the file)."""
    return Path(shutil.copy(CORPUS / "snntorch_conv.nir", tmp_path / "csnn.nir"))


@pytest.fixture
def dense_graph(tmp_path):
    """snnTorch's own export of a 10 -> 12 -> 4 network."""
    return Path(shutil.copy(CORPUS / "snntorch_leaky_zero.nir", tmp_path / "mlp.nir"))


def save(tmp_path, name="data.npz", **arrays) -> Path:
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def imported(path, data, **options):
    return graph_from_nir(read_nir_file(path), data.import_hints(ImportOptions(**options)))


# -- the loader ----------------------------------------------------------------------------------

def test_named_splits_with_stated_levels(tmp_path, conv_graph):
    x = RNG.integers(0, 17, (30, 1, 8, 8))
    path = save(tmp_path, x_train=x[:20], y_train=np.arange(20) % 4, x_test=x[20:], y_test=np.arange(10) % 4,
                levels=16, steps=5)
    data = read_user_data(path)
    graph = imported(conv_graph, data)
    dataset = data.for_model(graph)
    assert isinstance(dataset, Dataset) and dataset.task == "classification"
    assert graph.steps == 5 and graph.input_levels == 16 and dataset.levels == 16 and dataset.classes == 4
    assert np.array_equal(dataset.x_test, x[20:]) and np.array_equal(dataset.y_train, np.arange(20) % 4)
    assert dataset.notes == ("x_train/x_test as given", "input levels 16 (stated in the file)")


def test_x_y_is_split_by_a_fixed_seed(tmp_path):
    x, y = frames(50), np.arange(50) % 4
    first, second = (read_user_data(save(tmp_path, f"{k}.npz", x=x, y=y)) for k in "ab")
    assert len(first.x_train) == 40 and len(first.x_test) == 10
    assert np.array_equal(first.y_test, second.y_test) and np.array_equal(first.x_train, second.x_train)
    assert sorted(np.concatenate([first.y_train, first.y_test])) == sorted(y)


def test_binary_values_infer_one_level_and_floats_are_quantized_to_the_models(tmp_path, conv_graph):
    binary = read_user_data(save(tmp_path, "b.npz", x=frames().astype(np.float32), y=np.zeros(40, int), steps=4))
    assert binary.levels() == (1, "inferred: the values are 0 and 1")
    graph = imported(conv_graph, binary)
    assert graph.input_levels == 1 and binary.for_model(graph).x_train.max() == 1
    analog = RNG.random((40, 64))
    data = read_user_data(save(tmp_path, "f.npz", x=analog, y=np.zeros(40, int), steps=4))
    dataset = data.for_model(imported(conv_graph, data, input_levels=10))
    assert dataset.levels == 10 and dataset.x_train.shape[1:] == (1, 8, 8)  # [N, 64] feeds a 1x8x8 input
    assert dataset.x_train.max() <= 10 and np.array_equal(
        dataset.x_test.reshape(len(dataset.x_test), -1), np.round(data.x_test * 10))


def test_spike_trains_set_the_steps(tmp_path, dense_graph):
    trains = (RNG.random((30, 24, 10)) < 0.3).astype(np.uint8)
    data = read_user_data(save(tmp_path, x=trains, y=np.arange(30) % 4))
    assert data.spike_trains and data.steps == 24
    graph = imported(dense_graph, data)
    dataset = data.for_model(graph)
    assert graph.steps == 24 and dataset.x_test.shape == (6, 24, 10) and dataset.steps == 24


def test_float_targets_are_regression(tmp_path, dense_graph):
    data = read_user_data(save(tmp_path, x=frames(30, (10,)), y=RNG.random((30, 4)), steps=8))
    dataset = data.for_model(imported(dense_graph, data))
    assert dataset.task == "regression" and dataset.classes == 0 and dataset.y_test.shape == (6, 4)
    with pytest.raises(UserError, match="`snn-compile sweep` scores class labels"):
        data.require("sweep")


# -- what is refused, through the CLI: one line, exit 2, nothing written -------------------------

def refused(capsys, argv, out: Path) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("snn-compile: error: ") and "Traceback" not in err
    assert not out.exists()
    return err


@pytest.mark.parametrize("arrays,message", [
    ({"images": frames(), "labels": np.zeros(40, int)},
     r"found arrays \['images', 'labels'\]; name them x_train, y_train, x_test, y_test \(or x and y"),
    ({"x": frames(40, (7,)), "y": np.zeros(40, int), "steps": 4},
     r"frames of shape \(7,\) do not fit the model's input \(1, 8, 8\)"),
    ({"x": frames() * 1.5, "y": np.zeros(40, int), "steps": 4}, r"float inputs must lie in \[0, 1\]"),
    ({"x": frames().astype(np.int32) * 300, "y": np.zeros(40, int), "steps": 4},
     "input values up to 300 exceed the 255 input levels"),
    ({"x": frames().astype(np.int32) * 20, "y": np.zeros(40, int), "steps": 4, "levels": 16},
     "input values up to 20 exceed the 16 input levels"),
    ({"x": frames(), "y": np.arange(40) % 10, "steps": 4}, r"labels go up to 9 but the model has 4 outputs"),
    ({"x": frames(), "y": np.arange(40) - 1, "steps": 4}, "has label -1; labels are 0..K-1"),
    ({"x": frames(), "y": np.zeros(30, int), "steps": 4}, "x has 40 samples and y 30"),
    ({"x": frames(40, (2, 1, 8, 8, 1)), "y": np.zeros(40, int)}, r"x_train has shape \(32, 2, 1, 8, 8, 1\)"),
    ({"x": np.array([{"a": 1}] * 40, dtype=object), "y": np.zeros(40, int)}, r"holds object \(pickled\) arrays"),
])
def test_bad_data_is_refused(tmp_path, capsys, conv_graph, arrays, message):
    path = save(tmp_path, **arrays)
    err = refused(capsys, [str(conv_graph), "--data", str(path), "-o", str(tmp_path / "out")], tmp_path / "out")
    assert re.search(message, err), err


def test_files_that_are_not_npz_are_refused(tmp_path, capsys, conv_graph):
    path = tmp_path / "data.npz"
    path.write_bytes(b"not a zip at all")
    assert "data.npz: not an .npz archive" in refused(
        capsys, [str(conv_graph), "--data", str(path), "-o", str(tmp_path / "out")], tmp_path / "out")
    np.savez_compressed(path, x=frames(), y=np.zeros(40, int))
    damaged = bytearray(path.read_bytes())
    damaged[100:400] = bytes(300)  # the members' bytes, the archive's directory intact
    path.write_bytes(bytes(damaged))
    assert "data.npz: not a readable .npz archive" in refused(
        capsys, [str(conv_graph), "--data", str(path), "-o", str(tmp_path / "out")], tmp_path / "out")


def test_a_single_npy_array_is_not_an_npz(tmp_path, capsys, conv_graph):
    np.save(tmp_path / "x.npy", frames())
    err = refused(capsys, [str(conv_graph), "--data", str(tmp_path / "x.npy"), "-o", str(tmp_path / "out")],
                  tmp_path / "out")
    assert "x.npy: not an .npz archive (numpy.savez writes one)" in err


def test_data_and_dataset_together_are_refused(tmp_path, capsys, conv_graph):
    path = save(tmp_path, x=frames(), y=np.zeros(40, int))
    err = refused(capsys, [str(conv_graph), "--data", str(path), "--dataset", "digits", "-o",
                           str(tmp_path / "out")], tmp_path / "out")
    assert "name two datasets; give one of them" in err


def test_spike_trains_must_last_the_steps_the_graph_states(tmp_path, capsys, dense_graph):
    path = save(tmp_path, x=(RNG.random((20, 24, 10)) < 0.3).astype(np.uint8), y=np.zeros(20, int))
    err = refused(capsys, [str(dense_graph), "--data", str(path), "--steps", "10", "-o", str(tmp_path / "out")],
                  tmp_path / "out")
    assert "spike trains of 24 steps, but the model runs 10 steps; pass --steps 24" in err


def test_lava_without_data_is_refused(tmp_path, capsys, conv_graph):
    err = refused(capsys, [str(conv_graph), "--target", "lava", "--steps", "4", "-o", str(tmp_path / "out")],
                  tmp_path / "out")
    assert "--target lava runs the program on test data and none is named" in err


# -- whole commands ------------------------------------------------------------------------------

def test_foreign_graph_and_data_give_the_full_report(tmp_path, capsys, conv_graph):
    path = save(tmp_path, x=frames(60), y=RNG.integers(0, 4, 60), steps=8)
    assert main([str(conv_graph), "--data", str(path), "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["source"]["dataset"] == "data.npz" and report["accuracy"]["loihi2"]["samples"] == 12
    assert report["costs"]["digital45nm"] and report["costs"]["loihi"] and report["mapping"]["cores"] >= 1
    assert capsys.readouterr().out.startswith("data: ")


def test_spike_train_data_gives_the_full_report(tmp_path, dense_graph):
    path = save(tmp_path, x=(RNG.random((30, 24, 10)) < 0.3).astype(np.uint8), y=RNG.integers(0, 4, 30))
    assert main([str(dense_graph), "--data", str(path), "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["program"]["steps"] == 24 and report["accuracy"]["float"]["samples"] == 6


def test_regression_data_reports_the_error(tmp_path, dense_graph):
    path = save(tmp_path, x=frames(30, (10,)), y=RNG.random((30, 4)), steps=8)
    assert main([str(dense_graph), "--data", str(path), "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["regression"]) == {"float", "loihi2"} and report["regression"]["float"]["mse"] >= 0


def test_compare_takes_spike_trains(tmp_path, capsys, dense_graph):
    path = save(tmp_path, x=(RNG.random((30, 24, 10)) < 0.3).astype(np.uint8), y=RNG.integers(0, 4, 30))
    assert main(["compare", str(dense_graph), "--data", str(path), "--targets", "reference,loihi2"]) == 0
    out = capsys.readouterr().out
    assert "6 test samples" in out and "reference/loihi2" in out


def test_train_on_user_data(tmp_path, capsys):
    path = save(tmp_path, x=RNG.integers(0, 17, (80, 1, 8, 8)), y=np.arange(80) % 3, levels=16)
    assert main(["train", "--data", str(path), "--epochs", "1", "--steps", "4", "-o", str(tmp_path / "m.pt")]) == 0
    assert (tmp_path / "m.pt").exists() and "training mlp on data.npz: 64 samples" in capsys.readouterr().out
    regression = save(tmp_path, "r.npz", x=RNG.random((20, 5)), y=RNG.random(20))
    refused(capsys, ["train", "--data", str(regression), "-o", str(tmp_path / "r.pt")], tmp_path / "r.pt")


def test_sweep_on_user_data(tmp_path, capsys, conv_graph):
    path = save(tmp_path, x=frames(60), y=RNG.integers(0, 4, 60), steps=4)
    assert main(["sweep", str(conv_graph), "--data", str(path), "--bits", "8", "--prune", "0.25", "--methods",
                 "baseline", "--workers", "1", "--calibration", "16", "-o", str(tmp_path / "sweep")]) == 0
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert any(row["bits"] == 8 for row in (rows if isinstance(rows, list) else rows["rows"]))


def test_calibrated_sweep_takes_spike_trains(tmp_path, dense_graph):
    path = save(tmp_path, x=(RNG.random((30, 24, 10)) < 0.3).astype(np.uint8), y=RNG.integers(0, 4, 30))
    assert main(["sweep", str(dense_graph), "--data", str(path), "--bits", "8", "--prune", "0.25", "--methods",
                 "best", "--prune-search", "none", "--workers", "1", "--calibration", "16", "-o",
                 str(tmp_path / "sweep")]) == 0
