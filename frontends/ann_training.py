"""ReLU networks to convert: the seed's 784-128-10 MLP, its QFFS variant, checkpoints.

Training is plain supervised learning (Adam, one-cycle schedule, cross
entropy), seeded, with progress. The QFFS variant is the trained ANN with its
ReLUs replaced by :class:`frontends.conversion.QuantReLU` (clips calibrated to
the least quantization error) and fine-tuned, so the quantized network the
spiking one reproduces is also a good classifier.
"""

from __future__ import annotations

import copy
import io
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from frontends.conversion import QuantReLU, SumPool2d, activation_scales
from frontends.checkpoint import HARMLESS_WEIGHTS, UnreadableTorchFile, load_torch_file
from frontends.datasets import Dataset
from frontends.training import fit
from toolchain.errors import UserError
from toolchain.files import write_bytes_atomically

FORMAT_NAME = "snn-compile-ann"
FORMAT_VERSION = 1


@dataclass
class AnnTrainOptions:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    progress: bool = True


def build_mlp(input_shape, classes: int, hidden=(128,), seed: int = 0) -> nn.Sequential:
    """Flatten -> (Linear -> ReLU) per hidden size -> Linear: the seed's 784-128-10 on 28x28 input.

    Seeded, so the initial weights (not just the batch order) are reproducible."""
    torch.manual_seed(seed)
    sizes = [int(np.prod(input_shape))] + list(hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], classes))
    return nn.Sequential(*layers)


def ann_training_memory_bytes(input_shape, hidden, classes: int, batch_size: int) -> int:
    """About how much memory training ``build_mlp``'s network takes: float32 weights with their
    gradients and Adam's two moments, and a batch's activations (kept for the backward pass)."""
    sizes = [math.prod(input_shape), *hidden, classes]
    weights = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    return 4 * (4 * weights + 3 * batch_size * sum(sizes))


def with_quantized_activations(model: nn.Sequential, levels: int, calibration_x, reset: str = "subtract",
                               percentile: float | None = None) -> nn.Sequential:
    """A copy of ``model`` whose ReLUs are QuantReLU(levels), each clip chosen, layer by
    layer through the already quantized ones, to minimise the squared error between the
    ReLU's activations on calibration data and their quantized values; or, with
    ``percentile``, set to that percentile of the positive activations.

    The error-minimising clip matters most for reset to zero at few levels, whose
    top levels are far apart (L = 4 counts 0, 1, 2 or 4 spikes)."""
    quantized = copy.deepcopy(model).eval()
    if percentile is not None:
        clips = iter(activation_scales(quantized, calibration_x, percentile))
    x = torch.as_tensor(np.asarray(calibration_x), dtype=torch.float32)
    for name in [n for n, m in quantized.named_modules() if isinstance(m, nn.ReLU)]:
        if percentile is not None:
            clip = next(clips)
        else:
            clip = _least_squares_clip(_relu_input(quantized, name, x), levels, reset)
        quantized.set_submodule(name, QuantReLU(levels, clip=clip, reset=reset))
    return quantized


@torch.no_grad()
def _relu_input(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    captured = []
    hook = model.get_submodule(name).register_forward_hook(lambda m, args, out: captured.append(args[0]))
    try:
        model(x)
    finally:
        hook.remove()
    return captured[0].reshape(-1)


@torch.no_grad()
def _least_squares_clip(z: torch.Tensor, levels: int, reset: str, candidates: int = 100) -> float:
    relu = z.clamp(min=0)
    top = float(relu.max())
    if top == 0:
        return 1.0  # a dead layer: any clip gives zero spikes
    best, best_error = top, float("inf")
    for clip in np.linspace(top / candidates, top, candidates):
        error = float(((QuantReLU(levels, clip=clip, reset=reset)(z) - relu) ** 2).mean())
        if error < best_error:
            best, best_error = float(clip), error
    return best


def qffs_finetune(model: nn.Sequential, dataset: Dataset, levels: int, calibration_x, reset: str,
                  options: AnnTrainOptions) -> tuple[nn.Sequential, dict]:
    """QFFS: the trained ReLU network with QuantReLU(levels) activations, fine-tuned so
    that the quantized network, the one the spiking network reproduces, still classifies well."""
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        raise UserError("QFFS fine-tuning replaces nn.ReLU modules, and this network has none (F.relu in "
                        "forward() cannot be swapped); write it as nn.Sequential with nn.ReLU")
    quantized = with_quantized_activations(model, levels, calibration_x, reset=reset)
    metrics = train_ann(quantized, dataset, options, desc=f"QFFS fine-tune, {levels} levels")
    return quantized, metrics


def train_ann(model: nn.Module, dataset: Dataset, options: AnnTrainOptions, desc: str = "training") -> dict:
    """Train in place with Adam and a one-cycle schedule; returns train and test accuracy."""
    torch.manual_seed(options.seed)
    x = torch.as_tensor(dataset.x_train, dtype=torch.float32) / dataset.levels
    train_accuracy = fit(model, x, torch.as_tensor(dataset.y_train), options.epochs, options.batch_size,
                         options.learning_rate, options.seed, options.progress, desc)
    return {"train_accuracy": train_accuracy,
            "test_accuracy": evaluate_ann(model, dataset.x_test, dataset.y_test, dataset.levels),
            "epochs": options.epochs, "seed": options.seed}


@torch.no_grad()
def predict_ann(model: nn.Module, images: np.ndarray, levels: int, batch_size: int = 1024) -> np.ndarray:
    """Class predictions for integer images (the ANN sees ``images / levels``)."""
    model.eval()
    out = [model(torch.as_tensor(images[i:i + batch_size], dtype=torch.float32) / levels).argmax(1).numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def evaluate_ann(model: nn.Module, images: np.ndarray, labels: np.ndarray, levels: int) -> float:
    return float(np.mean(predict_ann(model, images, levels) == labels))


# -- checkpoints ---------------------------------------------------------------

def _layer_spec(layer: nn.Module) -> dict:
    if isinstance(layer, nn.Flatten):
        return {"type": "Flatten"}
    if isinstance(layer, nn.ReLU):
        return {"type": "ReLU"}
    if isinstance(layer, QuantReLU):
        return {"type": "QuantReLU", "levels": layer.levels, "reset": layer.reset}
    if isinstance(layer, nn.Linear):
        return {"type": "Linear", "in_features": layer.in_features, "out_features": layer.out_features,
                "bias": layer.bias is not None}
    if isinstance(layer, nn.Conv2d):
        return {"type": "Conv2d", "in_channels": layer.in_channels, "out_channels": layer.out_channels,
                "kernel_size": list(layer.kernel_size), "stride": list(layer.stride),
                "padding": layer.padding if isinstance(layer.padding, str) else list(layer.padding),
                "bias": layer.bias is not None}
    if isinstance(layer, nn.AvgPool2d):
        return {"type": "AvgPool2d", "kernel_size": layer.kernel_size, "stride": layer.stride}
    if isinstance(layer, SumPool2d):
        return {"type": "SumPool2d", "kernel_size": list(layer.kernel_size), "stride": list(layer.stride)}
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"type": type(layer).__name__, "num_features": layer.num_features}
    if isinstance(layer, nn.Dropout):
        return {"type": "Dropout", "p": layer.p}
    raise UserError(f"cannot save layer {type(layer).__name__}; checkpoints hold {', '.join(_BUILDERS)}")


_BUILDERS = {
    "Flatten": lambda s: nn.Flatten(),
    "ReLU": lambda s: nn.ReLU(),
    "QuantReLU": lambda s: QuantReLU(s["levels"], reset=s["reset"]),
    "Linear": lambda s: nn.Linear(s["in_features"], s["out_features"], bias=s["bias"]),
    "Conv2d": lambda s: nn.Conv2d(s["in_channels"], s["out_channels"], s["kernel_size"], s["stride"],
                                  s["padding"], bias=s["bias"]),
    "AvgPool2d": lambda s: nn.AvgPool2d(s["kernel_size"], s["stride"]),
    "SumPool2d": lambda s: SumPool2d(s["kernel_size"], s["stride"]),
    "BatchNorm1d": lambda s: nn.BatchNorm1d(s["num_features"]),
    "BatchNorm2d": lambda s: nn.BatchNorm2d(s["num_features"]),
    "Dropout": lambda s: nn.Dropout(s["p"]),
}


def save_ann(model: nn.Sequential, path: str | Path, dataset: str, input_shape, input_levels: int,
             metrics: dict | None = None) -> Path:
    """Write a self-describing ANN checkpoint (layer list + weights), atomically."""
    path = Path(path)
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
               "layers": [_layer_spec(layer) for layer in model],
               "input_shape": [int(d) for d in input_shape], "dataset": dataset,
               "encoding": {"kind": "direct", "input_levels": int(input_levels)},
               "metrics": metrics or {}, "state_dict": model.state_dict()}
    buffer = io.BytesIO()  # in memory, where torch records no file name: the same model gives the same bytes
    torch.save(payload, buffer)
    return write_bytes_atomically(path, buffer.getvalue())


def load_ann(path: str | Path, allow_pickle: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild a checkpoint written by :func:`save_ann`; returns the model (eval mode) and its metadata.

    A whole model saved with ``torch.save(model)`` loads only with ``allow_pickle``:
    unpickling runs code from the file. Its metadata then names no dataset or input shape.
    """
    path = Path(path)
    try:
        payload = load_torch_file(path)
    except UnreadableTorchFile as exc:
        if not exc.pickled:
            raise UserError(f"{path}: not a torch file (torch.load failed); train an ANN with `snn-compile "
                            "train-ann` or save one with frontends.ann_training.save_ann") from None
        if not allow_pickle:
            raise UserError(f"{path}: holds a pickled model, and unpickling runs code from the file; pass "
                            "--unpickle if you trust it, or save the network with "
                            "frontends.ann_training.save_ann") from None
        payload = _unpickled_model(path)
    if isinstance(payload, nn.Module):
        return payload.eval(), {"dataset": None, "input_shape": None, "encoding": None, "metrics": {}}
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise UserError(f"{path}: not an snn-compile ANN checkpoint or a whole torch model (a state_dict "
                        "lacks the layers); save it with frontends.ann_training.save_ann or torch.save(model)")
    if payload.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: ANN checkpoint version {reprlib.repr(payload.get('version'))}, expected "
                        f"{FORMAT_VERSION}")
    model = _rebuild(path, payload)
    return model, {k: v for k, v in payload.items() if k != "state_dict"}


def _rebuild(path: Path, payload: dict) -> nn.Sequential:
    """The layers the checkpoint lists, holding its weights; each field is checked first, and the
    layers' declared sizes against the stored weights, so a damaged file cannot make this
    allocate much more than it holds."""
    def damaged(problem: str) -> UserError:
        return UserError(f"{path}: {problem}; the ANN checkpoint is damaged or was not written by save_ann")

    layers, state = payload.get("layers"), payload.get("state_dict")
    if not (isinstance(layers, list) and all(isinstance(spec, dict) for spec in layers)):
        raise damaged("'layers' must list layer specifications")
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in state.items())):
        raise damaged("'state_dict' must map names to tensors")
    shape, encoding = payload.get("input_shape"), payload.get("encoding")
    if not (isinstance(shape, list) and shape and all(_is_count(d) for d in shape)):
        raise damaged(f"'input_shape' must list positive sizes, found {reprlib.repr(shape)}")
    if not (isinstance(encoding, dict) and _is_count(encoding.get("input_levels"))):
        raise damaged(f"'encoding' must give input_levels, a positive integer, found {reprlib.repr(encoding)}")
    if not isinstance(payload.get("dataset"), (str, type(None))):
        raise damaged("'dataset' must be a name")
    unknown = [spec.get("type") for spec in layers if spec.get("type") not in _BUILDERS]
    if unknown:
        raise UserError(f"{path}: unknown layer types {reprlib.repr(unknown)}")
    declared = sum(_declared_weights(spec) for spec in layers)
    stored = sum(t.numel() for t in state.values())
    if declared > max(stored, HARMLESS_WEIGHTS):
        raise damaged(f"its layers need {declared} weights, but it holds {stored}")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: {name} holds NaN or infinite values; the training diverged (train again "
                            "with a lower --lr) or the file is damaged")
    built = []
    for index, spec in enumerate(layers):
        try:
            built.append(_BUILDERS[spec["type"]](spec))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise damaged(f"layer {index} ({spec['type']}) has bad settings ({type(exc).__name__}: "
                          f"{reprlib.repr(str(exc))})") from None
    model = nn.Sequential(*built)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise damaged(f"its weights do not match its layers ({'missing' if missing else 'unexpected'} "
                      f"{(missing or unexpected)[0]!r})")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape or state[name].dtype != tensor.dtype:
            raise damaged(f"{name} is {state[name].dtype} {tuple(state[name].shape)}, its layer needs "
                          f"{tensor.dtype} {tuple(tensor.shape)}")
    model.load_state_dict(state)
    model.eval()
    return model


def _declared_weights(spec: dict) -> int:
    """Weights a layer specification asks for (0 when its sizes are not positive integers: the
    layer's own constructor then names the problem)."""
    sizes = {"Linear": ("in_features", "out_features"), "Conv2d": ("in_channels", "out_channels"),
             "BatchNorm1d": ("num_features",), "BatchNorm2d": ("num_features",)}.get(spec["type"], ())
    values = [spec.get(key) for key in sizes]
    if spec["type"] == "Conv2d":
        values += list(spec.get("kernel_size") or []) if isinstance(spec.get("kernel_size"), list) else [0]
    if not values or not all(_is_count(v) for v in values):
        return 0
    return math.prod(values)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _unpickled_model(path: Path) -> nn.Module:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling raises whatever the pickled code raises
        raise UserError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, nn.Module):
        raise UserError(f"{path}: holds a {type(payload).__name__}, not a torch model")
    return payload
