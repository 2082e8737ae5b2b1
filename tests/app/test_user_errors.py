"""Every error a user can cause is one line on stderr and exit status 2, and says what is wrong.

The cases run the command line in this process (``main``), with what it prints captured.
"""

from __future__ import annotations

import errno
import gzip
import io
import math
import struct
import warnings

import numpy as np
import pytest
import torch

import toolchain.files
from frontends.ann_training import build_mlp, save_ann
from frontends.checkpoint import save_checkpoint
from frontends.datasets import IDX_FILES, load_dataset, read_idx
from frontends.models import SpikingNetwork, default_config
from snn_compile.cli import main
from toolchain.errors import UserError

def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(result, *fragments, absent=()):
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("snn-compile: error: "), (code, err)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    for fragment in absent:
        assert fragment not in lines[0], lines[0]


def small_model(widths=(16,), steps=4) -> SpikingNetwork:
    torch.manual_seed(0)
    return SpikingNetwork(default_config("mlp", (1, 8, 8), 10, widths=list(widths)), (1, 8, 8), 10, steps)


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(small_model(), path, dataset="digits", levels=16)
    return torch.load(path, weights_only=True)


def damaged(tmp_path, payload, change) -> str:
    """A copy of the checkpoint ``payload`` after ``change(copy)``, saved as a file."""
    copy = {**payload, "config": dict(payload["config"]), "state_dict": dict(payload["state_dict"])}
    change(copy)
    path = tmp_path / "damaged.pt"
    torch.save(copy, path)
    return path


def _set(key, value):
    return lambda p: p.__setitem__(key, value)


def _config(key, value):
    return lambda p: p["config"].__setitem__(key, value)


def _weights(fill):
    def change(p):
        weight = p["state_dict"]["blocks.0.synapse.1.weight"].clone()
        weight[0, 0] = fill
        p["state_dict"]["blocks.0.synapse.1.weight"] = weight
    return change


@pytest.mark.parametrize("change, fragments", [
    (lambda p: p.pop("steps"), ["lacks 'steps'", "damaged"]),
    (lambda p: p.pop("state_dict"), ["lacks 'state_dict'"]),
    (_set("steps", 0), ["'steps' must be a positive integer, found 0"]),
    (_set("dt", float("nan")), ["'dt' must be a positive number of seconds"]),
    (_set("encoding", {"kind": "direct", "input_levels": 0}), ["input_levels, a positive integer"]),
    (_set("input_shape", [1, 0, 8]), ["bad architecture config", "input shape must list positive sizes"]),
    (_config("arch", "rnn"), ["bad architecture config", "arch 'rnn' is not one of mlp, csnn"]),
    (_config("hidden", [16, -3]), ["hidden must list positive sizes"]),
    (_config("hidden", [10**6]), ["its architecture config needs 75000010 weights, but it holds 1218"]),
    (_config("hidden", [17]), ["blocks.0.synapse.1.weight is torch.float32 (16, 64), the architecture needs "
                               "torch.float32 (17, 64)"]),
    (_config("threshold", 0.0), ["threshold must be positive, found 0.0"]),
    (_config("beta", 1.5), ["beta must be in [0, 1], found 1.5"]),
    (_config("beta", -0.1), ["beta must be in [0, 1], found -0.1"]),
    (_weights(float("nan")), ["blocks.0.synapse.1.weight holds NaN or infinite values", "lower --lr"]),
    (_weights(float("inf")), ["holds NaN or infinite values"]),
    (lambda p: p["state_dict"].pop("blocks.1.synapse.0.bias"), ["missing 'blocks.1.synapse.0.bias'"]),
    (lambda p: p["state_dict"].__setitem__("blocks.9.weight", torch.zeros(1)), ["unexpected 'blocks.9.weight'"]),
    (lambda p: p["state_dict"].__setitem__("blocks.1.synapse.0.weight", torch.zeros(10, 15)),
     ["blocks.1.synapse.0.weight is torch.float32 (10, 15), the architecture needs torch.float32 (10, 16)"]),
    (lambda p: p["state_dict"].__setitem__("blocks.0.neurons.threshold", torch.tensor(-1.0)),
     ["block 0's neurons have threshold -1, the config says 1"]),
    (_set("steps", 10**6), ["runs 1000000 time steps; snn-compile runs 1..10000"]),
])
def test_a_damaged_checkpoint_is_named(tmp_path, capsys, payload, change, fragments):
    path = damaged(tmp_path, payload, change)
    assert_one_line(cli(capsys, path, "-o", tmp_path / "out"), str(path), *fragments)
    assert not (tmp_path / "out").exists()


def write_idx(path, array, dtype_code=0x08, compress=False):
    data = struct.pack(">HBB", 0, dtype_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("content, message", [
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + b"\0" * 100, "truncated: the file ends before"),
    (b"\x12\x34\x08\x03" + b"\0" * 40, "bad magic number"),
    (b"\x00\x00\x08", "truncated: the file ends before its header"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\0\0\0", "data continues after the 2 values"),
    (b"\x00\x00\x08\x02" + struct.pack(">2I", 2**31, 2**31), "more than the 2147483648 this reader takes"),
])
def test_a_broken_idx_file_is_named(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a valid IDX file") as error:
        read_idx(path)
    assert message in str(error.value) and len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    (gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 4) + b"\1\2\3\4")[:-12] + b"garbage!" * 2,
     "not a valid IDX file"),
    (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 40, "not a valid IDX file"),
    (b"plain bytes, not gzip", "Not a gzipped file"),
])
def test_a_corrupt_gzip_is_named(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_idx(path)


def idx_directory(tmp_path, train_images):
    rng = np.random.default_rng(0)
    arrays = {"train_images": train_images, "train_labels": rng.integers(0, 10, len(train_images)).astype(np.uint8),
              "test_images": rng.integers(0, 256, (3, 8, 8)).astype(np.uint8),
              "test_labels": np.arange(3, dtype=np.uint8)}
    for key, stem in IDX_FILES.items():
        write_idx(tmp_path / stem, arrays[key])
    return tmp_path


def test_idx_files_without_images(tmp_path):
    directory = idx_directory(tmp_path, np.zeros((0, 8, 8), dtype=np.uint8))
    with pytest.raises(UserError, match=r"the train split holds no images \(0, 8, 8\)"):
        load_dataset("mnist", directory)


def test_idx_images_of_two_sizes(tmp_path):
    directory = idx_directory(tmp_path, np.zeros((4, 9, 9), dtype=np.uint8))
    with pytest.raises(UserError, match=r"train images are \(9, 9\) pixels, test images \(8, 8\)"):
        load_dataset("mnist", directory)


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(small_model(), path, dataset="digits", levels=16)
    return path


@pytest.mark.parametrize("args, fragments", [
    (["--placement-seed", "-1"], ["--placement-seed must be in 0..4294967295, got -1"]),
    (["--dt", "0"], ["--dt 0.0"]),
    (["--dt=-1e-3"], ["--dt -0.001"]),
    (["--dt", "nan"], ["--dt nan"]),
    (["--input-levels", "0"], ["--input-levels 0"]),
    (["--steps", "20000"], ["--steps 20000 is over the maximum of 10000 time steps"]),
    (["--input-shape", "1,0,8"], ["--input-shape '1,0,8': sizes must be at least 1"]),
])
def test_bad_compile_options(tmp_path, capsys, checkpoint, args, fragments):
    assert_one_line(cli(capsys, checkpoint, *args, "-o", tmp_path / "out"), *fragments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train", "train-ann", "convert"])
def test_negative_seed(tmp_path, capsys, command):
    model = [tmp_path / "ann.pt"] if command == "convert" else []
    assert_one_line(cli(capsys, command, *model, "--seed", "-1", "-o", tmp_path / "out.nir"),
                    "--seed must be in 0..4294967295, got -1")


@pytest.mark.parametrize("rate", ["nan", "inf", "-1", "0"])
@pytest.mark.parametrize("command", ["train", "train-ann"])
def test_bad_learning_rate(tmp_path, capsys, command, rate):
    assert_one_line(cli(capsys, command, "--lr", rate, "-o", tmp_path / "m.pt"),
                    f"--lr must be a finite number above 0, got {float(rate)}")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("args, fragments", [
    (["train", "--steps", "10000", "--widths", "100000"],
     ["training mlp with --steps 10000 --widths 100000 needs about", "GiB of memory", "lower --steps"]),
    (["train", "--widths", "1000000000"], ["needs about", "GiB of memory, more than this machine's"]),
    (["train", "--steps", "1000000"], ["--steps 1000000 is over the maximum of 10000"]),
    (["train-ann", "--hidden", "100000000"], ["training a ReLU MLP with --hidden 100000000 needs about"]),
])
def test_requests_that_would_exhaust_memory(tmp_path, capsys, args, fragments):
    result = cli(capsys, *args, "-o", tmp_path / "m.pt")
    assert_one_line(result, *fragments)
    assert "training" not in result[1] and not (tmp_path / "m.pt").exists()


def test_a_run_that_would_exhaust_memory(tmp_path, capsys):
    path = tmp_path / "wide.pt"
    save_checkpoint(small_model(widths=(8192,), steps=10_000), path, dataset="digits", levels=16)
    assert_one_line(cli(capsys, path, "-o", tmp_path / "out"), "running 10000 steps in batches of 256 needs about",
                    "lower --batch-size")


@pytest.mark.parametrize("make_output, fragments", [
    (lambda d: (d / "file.txt").write_text("mine") and d / "file.txt", ["a file of that name exists"]),
    (lambda d: (d / "file.txt").write_text("mine") and d / "file.txt" / "out", ["file.txt is a file, not a directory"]),
])
def test_output_path_problems_stop_compile_before_any_work(tmp_path, capsys, checkpoint, make_output, fragments):
    output = make_output(tmp_path)
    result = cli(capsys, checkpoint, "-o", output)
    assert_one_line(result, *fragments)
    assert (tmp_path / "file.txt").read_text() == "mine" and result[1] == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "model.pt"]


def test_output_under_a_file_stops_training_before_any_work(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("mine")
    result = cli(capsys, "train", "-o", tmp_path / "file.txt" / "model.pt")
    assert_one_line(result, "file.txt is a file, not a directory")
    assert result[1] == ""  # no "training ..." line: nothing started


def test_an_unwritable_output_directory(tmp_path, capsys, checkpoint, monkeypatch):
    real_access = toolchain.files.os.access
    monkeypatch.setattr(toolchain.files.os, "access",
                        lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode))
    assert_one_line(cli(capsys, "train", "-o", tmp_path / "m.pt"), f"cannot write in {tmp_path} (permission denied)")
    assert_one_line(cli(capsys, checkpoint, "-o", tmp_path / "out"), f"cannot write in {tmp_path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(toolchain.files, "open", no_space, raising=False)
    result = cli(capsys, "train", "--epochs", "1", "--widths", "8", "--steps", "2", "-o", tmp_path / "m.pt")
    assert_one_line(result, "No space left on device")
    assert list(tmp_path.iterdir()) == []  # neither the checkpoint nor its temporary file


def test_a_full_disk_while_compiling(tmp_path, capsys, checkpoint, monkeypatch):
    monkeypatch.setattr(toolchain.files, "open", no_space, raising=False)
    assert_one_line(cli(capsys, checkpoint, "--samples", "10", "-o", tmp_path / "out"), "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no output, no staging directory


def test_a_full_disk_while_converting(tmp_path, capsys, monkeypatch):
    save_ann(build_mlp((1, 8, 8), 10, [8]), tmp_path / "ann.pt", "digits", (1, 8, 8), 16)
    monkeypatch.setattr(toolchain.files, "open", no_space, raising=False)
    result = cli(capsys, "convert", tmp_path / "ann.pt", "--method", "max", "--steps", "4", "--calibration", "50",
                 "-o", tmp_path / "snn.nir")
    assert_one_line(result, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["ann.pt"]  # no .nir, no temporary file


def test_an_unreadable_model_is_not_called_a_non_model(tmp_path, capsys, checkpoint, monkeypatch):
    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(toolchain.files, "open", denied, raising=False)
    assert_one_line(cli(capsys, checkpoint, "-o", tmp_path / "out"), f"{checkpoint}: cannot read it (Permission "
                    "denied)", absent=["not a model checkpoint"])


def test_random_bytes_are_not_a_torch_file(tmp_path, capsys):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    assert_one_line(cli(capsys, "convert", path, "--steps", "4", "-o", tmp_path / "out.nir"),
                    f"{path}: not a torch file", absent=["--unpickle", "pickled"])


def test_a_whole_pickled_model_asks_for_unpickle(tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(build_mlp((1, 8, 8), 10, [8]), path)
    assert_one_line(cli(capsys, "convert", path, "--steps", "4", "-o", tmp_path / "out.nir"),
                    "holds a pickled model", "--unpickle")


@pytest.mark.parametrize("change, message", [
    (lambda p: p["layers"][1].__setitem__("in_features", 10**9),
     "its layers need 8000000080 weights, but it holds 610"),
    (lambda p: p["layers"][1].__setitem__("in_features", "sixty-four"), "layer 1 (Linear) has bad settings"),
    (lambda p: p["state_dict"].__setitem__("1.weight", torch.full((8, 64), math.nan)), "1.weight holds NaN"),
    (lambda p: p.__setitem__("input_shape", "64"), "'input_shape' must list positive sizes"),
])
def test_a_damaged_ann_checkpoint_is_named(tmp_path, capsys, change, message):
    path = tmp_path / "ann.pt"
    save_ann(build_mlp((1, 8, 8), 10, [8]), path, "digits", (1, 8, 8), 16)
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    assert_one_line(cli(capsys, "convert", path, "--steps", "4", "-o", tmp_path / "out.nir"), message)


def test_option_errors_are_one_line_without_usage(capsys):
    assert cli(capsys, "train", "--epochs", "many") == (
        2, "", "snn-compile: error: argument --epochs: invalid int value: 'many' (see `snn-compile train --help`)\n")
    assert cli(capsys, "compile") == (2, "", "snn-compile: error: the following arguments are required: model (see "
                                             "`snn-compile compile --help`)\n")


def test_an_empty_output_path(capsys, checkpoint):
    assert_one_line(cli(capsys, checkpoint, "-o", ""), "argument -o/--output: the output path is empty")


def test_library_warnings_stay_off_the_terminal(capsys, monkeypatch):
    def noisy_setup():
        warnings.warn("a library's advice", UserWarning)
        np.float32(3e38) * np.float32(10)  # numpy: overflow encountered (RuntimeWarning)
    monkeypatch.setattr("targets.lava.environment.create", noisy_setup)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli(capsys, "lava", "setup") == (0, "", "")


def test_a_message_with_newlines_becomes_one_line(capsys, monkeypatch):
    def failing_setup():
        raise UserError("model.h5: unable to open\n  (HDF5: bad symbol table)\n")
    monkeypatch.setattr("targets.lava.environment.create", failing_setup)
    assert cli(capsys, "lava", "setup") == (2, "", "snn-compile: error: model.h5: unable to open (HDF5: bad symbol "
                                                   "table)\n")


def test_a_truncated_stream_is_not_a_crash(tmp_path, capsys, payload):
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = tmp_path / "cut.pt"
    path.write_bytes(buffer.getvalue()[:2000])
    assert_one_line(cli(capsys, path, "-o", tmp_path / "out"), "not a model checkpoint")
