"""ANN -> SNN conversion on digits: rate conversion, QFFS exactness, Loihi 2, refusals, the CLI."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frontends.ann_training import (AnnTrainOptions, build_mlp, load_ann, predict_ann, save_ann, train_ann,
                                    with_quantized_activations)
from frontends.conversion import SumPool2d, convert
from targets import reference
from targets.loihi2 import run
from snn_compile.cli import main as snn_compile
from toolchain.errors import UserError
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize

QUIET = AnnTrainOptions(epochs=30, progress=False)
FINETUNE = AnnTrainOptions(epochs=10, learning_rate=5e-4, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ann(digits):
    model = build_mlp(digits.input_shape, digits.classes)
    train_ann(model, digits, QUIET)
    return model


@pytest.fixture(scope="module")
def calibration(digits):
    return digits.x_train[:500] / digits.levels


def _accuracy(predictions, labels) -> float:
    return float(np.mean(predictions == labels))


@pytest.mark.parametrize("method", ["max", "percentile"])
def test_rate_conversion_keeps_ann_accuracy_at_32_steps(method, ann, calibration, digits):
    ann_pred = predict_ann(ann, digits.x_test, digits.levels)
    graph = graph_from_nir(convert(ann, calibration, method=method, steps=32, input_levels=digits.levels))
    snn_pred = reference.run(graph, digits.x_test).predictions()
    assert _accuracy(ann_pred, digits.y_test) > 0.9
    assert abs(_accuracy(snn_pred, digits.y_test) - _accuracy(ann_pred, digits.y_test)) <= 0.02
    assert _accuracy(snn_pred, ann_pred) >= 0.95


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_qffs_spike_counts_are_the_quantized_activations(reset, ann, calibration, digits):
    """T = L steps: hidden spike counts equal L * a / clip and predictions equal the quantized ANN's."""
    levels = 8
    model = with_quantized_activations(ann, levels, calibration, reset=reset)
    train_ann(model, digits, FINETUNE)
    nir_graph = convert(model, method="qffs", input_shape=digits.input_shape, input_levels=digits.levels)
    assert nir_graph.metadata["steps"] == levels and nir_graph.metadata["reset"] == reset
    result = reference.run(graph_from_nir(nir_graph), digits.x_test, record=True)
    with torch.no_grad():
        x = torch.as_tensor(digits.x_test, dtype=torch.float32) / digits.levels
        hidden = model[:3](x)
        expected = torch.round(hidden * levels / model[2].clip).numpy()
    counts = result.trains["s0_if"].sum(axis=1)
    assert np.mean(counts == expected) > 0.999
    assert _accuracy(result.predictions(), predict_ann(model, digits.x_test, digits.levels)) >= 0.99


def test_converted_graphs_compile_and_run_on_loihi2(ann, calibration, digits, loihi2):
    """Loihi resets to zero: the zero-reset QFFS net is exact up to 8-bit rounding,
    the rate-converted one (normalised for reset by subtraction) loses a little more."""
    ann_acc = _accuracy(predict_ann(ann, digits.x_test, digits.levels), digits.y_test)
    rate = graph_from_nir(convert(ann, calibration, method="percentile", steps=32, input_levels=digits.levels))
    rate_acc = _accuracy(run(quantize(rate, loihi2, QuantizeOptions(bits=8)), digits.x_test).predictions(),
                         digits.y_test)
    model = with_quantized_activations(ann, 8, calibration, reset="zero")
    train_ann(model, digits, FINETUNE)
    qffs = graph_from_nir(convert(model, method="qffs", input_shape=digits.input_shape, input_levels=digits.levels))
    chip_pred = run(quantize(qffs, loihi2, QuantizeOptions(bits=8)), digits.x_test).predictions()
    assert rate_acc >= ann_acc - 0.02
    assert _accuracy(chip_pred, digits.y_test) >= ann_acc - 0.02
    assert _accuracy(chip_pred, predict_ann(model, digits.x_test, digits.levels)) >= 0.98


def test_conv_net_with_batchnorm_and_pooling(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), SumPool2d(2), nn.Flatten(),
                          nn.Linear(64, digits.classes))
    train_ann(model, digits, AnnTrainOptions(epochs=30, learning_rate=3e-3, progress=False))
    ann_pred = predict_ann(model, digits.x_test, digits.levels)
    graph = graph_from_nir(convert(model, digits.x_train[:500] / digits.levels, steps=32,
                                   input_levels=digits.levels))
    assert [c.kind for c in graph.connections] == ["conv", "conv", "dense"]
    snn_pred = reference.run(graph, digits.x_test).predictions()
    assert _accuracy(ann_pred, digits.y_test) > 0.9
    assert _accuracy(snn_pred, ann_pred) >= 0.95


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def test_traced_module_converts_like_its_sequential(calibration):
    net = _Net()
    sequential = nn.Sequential(nn.Flatten(), net.fc1, nn.ReLU(), net.fc2)
    a = convert(net, calibration, steps=8, input_levels=16)
    b = convert(sequential, calibration, steps=8, input_levels=16)
    assert list(a.nodes) == list(b.nodes)
    assert np.array_equal(a.nodes["s0_1"].weight, b.nodes["s0_1"].weight)


@pytest.mark.parametrize("layer, name", [(nn.MaxPool2d(2), "MaxPool2d"), (nn.Sigmoid(), "Sigmoid"),
                                         (nn.LSTM(64, 10), "LSTM")])
def test_unsupported_layers_are_refused_by_name(layer, name, calibration):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), layer, nn.Linear(64, 10))
    with pytest.raises(UserError, match=rf"layer 2 \({name}\) cannot be converted"):
        convert(model, calibration, steps=8)


def test_unsupported_operation_in_forward_is_refused():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return torch.sigmoid(self.fc(torch.flatten(x, 1)))

    with pytest.raises(UserError, match="sigmoid"):
        convert(Gated(), input_shape=(1, 8, 8), method="max", calibration_x=np.zeros((2, 1, 8, 8)), steps=8)


def test_checkpoint_and_nir_file_round_trip(tmp_path, ann, calibration, digits):
    model = with_quantized_activations(ann, 4, calibration)
    path = save_ann(model, tmp_path / "ann.pt", "digits", digits.input_shape, digits.levels)
    loaded, meta = load_ann(path)
    assert meta["encoding"]["input_levels"] == digits.levels
    assert np.array_equal(predict_ann(loaded, digits.x_test, digits.levels),
                          predict_ann(model, digits.x_test, digits.levels))
    nir.write(tmp_path / "snn.nir", convert(loaded, method="qffs", input_shape=meta["input_shape"],
                                            input_levels=digits.levels))
    graph = graph_from_nir(nir.read(tmp_path / "snn.nir"))
    assert (graph.steps, graph.metadata["reset"], graph.input_levels) == (4, "subtract", digits.levels)
    assert graph.population("readout").spiking is False


def test_cli_trains_converts_and_compiles_without_further_options(tmp_path, capsys):
    ann_path, nir_path = tmp_path / "ann.pt", tmp_path / "snn.nir"
    assert snn_compile(["train-ann", "--dataset", "digits", "--epochs", "20", "-o", str(ann_path)]) == 0
    assert snn_compile(["convert", str(ann_path), "--method", "qffs", "--steps", "8", "--finetune-epochs", "3",
                        "-o", str(nir_path)]) == 0
    assert snn_compile([str(nir_path), "--target", "loihi2", "--bits", "8"]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "snn-loihi2-8b" / "report.json").read_text())
    assert report["source"]["dataset"] == "digits" and report["program"]["steps"] == 8
    assert report["source"]["reset"] == "zero" and not report["warnings"]
    assert report["accuracy"]["loihi2"]["accuracy"] > 0.9
    assert report["agreement"]["float/loihi2"] >= 0.97


def _assert_one_line_error(code, capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("snn-compile: error:"), err
    for fragment in fragments:
        assert fragment in err[0]


def test_cli_names_an_unsupported_layer_in_one_line(tmp_path, capsys):
    path = tmp_path / "cnn.pt"
    torch.save(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 10)), path)
    _assert_one_line_error(snn_compile(["convert", str(path), "--dataset", "digits", "--steps", "8"]), capsys,
                           "--unpickle")
    _assert_one_line_error(snn_compile(["convert", str(path), "--unpickle", "--dataset", "digits",
                                        "--method", "max", "--steps", "8"]), capsys, "layer 2 (MaxPool2d)")


def test_cli_refuses_a_non_nir_output_name(tmp_path, ann, digits, capsys):
    path = save_ann(ann, tmp_path / "ann.pt", "digits", digits.input_shape, digits.levels)
    _assert_one_line_error(snn_compile(["convert", str(path), "--method", "max", "--steps", "8",
                                        "-o", str(tmp_path / "snn.pt")]), capsys, "*.nir")
