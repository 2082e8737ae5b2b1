"""Self-describing checkpoints: everything ``snn-compile model.pt`` needs.

A checkpoint holds the architecture config, the weights, the neuron
parameters and reset rule, the input encoding, the dataset and the number
of time steps, so the compiler needs no other file or option.

Loading validates every field before a layer is built: a damaged or foreign
file ends in one ``UserError`` naming what is wrong, never in a half-built
model or in weights that would compile into nonsense (NaN, a threshold of 0).
"""

from __future__ import annotations

import io
import math
import pickle
import reprlib
import warnings
from pathlib import Path

import torch

from frontends.models import SpikingNetwork, check_config, network_size
from toolchain.errors import UserError
from toolchain.files import read_input, write_bytes_atomically

FORMAT_NAME = "snn-compile-checkpoint"
FORMAT_VERSION = 1
HARMLESS_WEIGHTS = 1 << 20
"""A network this small is built even when the file holds fewer weights, so that the error can
name the missing or misshapen tensor; a larger one must be held by the file."""
REQUIRED_KEYS = ("config", "input_shape", "classes", "steps", "dt", "encoding", "state_dict")


def save_checkpoint(model: SpikingNetwork, path: str | Path, dataset: str | None, levels: int,
                    metrics: dict | None = None, dt: float = 1e-4, coding: dict | None = None) -> Path:
    """``coding``: the host-side encoder and decoder (``{"encoder": ..., "decoder": ...}``) when the
    input is not the dataset's values fed directly; it travels on into the NIR graph and the program.
    The same model gives the same bytes: the file is built in memory, where torch records no file name."""
    path = Path(path)
    payload = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "config": model.config, "input_shape": list(model.input_shape), "classes": model.classes,
        "steps": model.steps, "dt": dt,
        "neurons": {"model": "Leaky", "beta": model.config["beta"], "threshold": model.config["threshold"],
                    "reset": "zero", "reset_delay": False},
        "encoding": {"kind": "direct", "input_levels": levels},
        "coding": coding,
        "dataset": dataset, "metrics": metrics or {},
        "state_dict": model.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes_atomically(path, buffer.getvalue())


class UnreadableTorchFile(Exception):
    """Bytes a weights-only ``torch.load`` refuses. ``pickled``: a torch file holding objects other
    than tensors and plain containers (a model saved whole), as opposed to no torch file at all."""

    def __init__(self, pickled: bool):
        super().__init__("holds pickled objects" if pickled else "not a torch file")
        self.pickled = pickled


def load_torch_file(path: Path):
    """``torch.load(weights_only=True)`` of the file's bytes; warnings torch raises about them stay
    quiet. Raises ``UnreadableTorchFile``, or ``UserError`` when the file cannot be read at all."""
    data = read_input(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for malformed bytes; each means "unreadable"
        raise UnreadableTorchFile(pickled=isinstance(exc, pickle.UnpicklingError)
                                  and "Unsupported global" in str(exc)) from None


def load_checkpoint(path: str | Path) -> tuple[SpikingNetwork, dict]:
    """Rebuild the model; returns it with the checkpoint's metadata."""
    path = Path(path)
    try:
        payload = load_torch_file(path)
    except UnreadableTorchFile as exc:
        if exc.pickled:
            raise UserError(f"{path}: a torch file holding pickled objects, not an snn-compile checkpoint; "
                            "train one with `snn-compile train` or export your network to NIR") from None
        raise UserError(f"{path}: not a model checkpoint (torch.load failed); train one with "
                        "`snn-compile train` or pass a .nir graph") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise UserError(f"{path}: a torch file but not an snn-compile checkpoint; train one with "
                        "`snn-compile train` or export your network to NIR and pass the .nir file")
    if payload.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint version {reprlib.repr(payload.get('version'))}, expected "
                        f"{FORMAT_VERSION}")
    _check_fields(path, payload)
    model = _rebuild(path, payload)
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta


def _damaged(path: Path, problem: str) -> UserError:
    return UserError(f"{path}: {problem}; the checkpoint is damaged or was not written by `snn-compile train`")


def _check_fields(path: Path, payload: dict) -> None:
    """Every field the compiler reads, with the type and range it needs."""
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise _damaged(path, f"it lacks {', '.join(repr(k) for k in missing)}")
    for key in ("classes", "steps"):
        if not _is_count(payload[key]):
            raise _damaged(path, f"{key!r} must be a positive integer, found {reprlib.repr(payload[key])}")
    dt = payload["dt"]
    if not (isinstance(dt, (int, float)) and not isinstance(dt, bool) and math.isfinite(dt) and dt > 0):
        raise _damaged(path, f"'dt' must be a positive number of seconds, found {reprlib.repr(dt)}")
    encoding = payload["encoding"]
    if not (isinstance(encoding, dict) and _is_count(encoding.get("input_levels"))):
        raise _damaged(path, f"'encoding' must give input_levels, a positive integer, found {reprlib.repr(encoding)}")
    for key, kinds in (("dataset", (str, type(None))), ("coding", (dict, type(None))), ("metrics", dict)):
        if key in payload and not isinstance(payload[key], kinds):
            raise _damaged(path, f"{key!r} has the wrong type ({type(payload[key]).__name__})")
    state = payload["state_dict"]
    if not (isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in state.items())):
        raise _damaged(path, "'state_dict' must map names to tensors")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{path}: {name} holds NaN or infinite values; the training diverged (train again "
                            "with a lower --lr) or the file is damaged")
    try:
        check_config(payload["config"], payload["input_shape"], payload["classes"])
    except ValueError as exc:
        raise _damaged(path, f"bad architecture config: {exc}") from None


def _rebuild(path: Path, payload: dict) -> SpikingNetwork:
    """The network the config describes, holding the checkpoint's weights. The config is checked
    against the stored weights before the network is built, so a damaged config cannot make this
    allocate much more than the file already holds."""
    config, shape, classes, state = payload["config"], payload["input_shape"], payload["classes"], payload["state_dict"]
    weights, _ = network_size(config, shape, classes)
    stored = sum(t.numel() for t in state.values())
    if weights > max(stored, HARMLESS_WEIGHTS):
        raise _damaged(path, f"its architecture config needs {weights} weights, but it holds {stored}")
    model = SpikingNetwork(config, shape, classes, payload["steps"])
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise _damaged(path, f"its weights do not match the architecture ({detail})")
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape or state[name].dtype != tensor.dtype:
            raise _damaged(path, f"{name} is {state[name].dtype} {tuple(state[name].shape)}, the architecture "
                           f"needs {tensor.dtype} {tuple(tensor.shape)}")
    model.load_state_dict(state)
    model.eval()
    for b, block in enumerate(model.blocks):
        if block.neurons is None:
            continue
        for key in ("beta", "threshold"):
            stored_value = float(getattr(block.neurons, key))
            if stored_value != float(torch.tensor(config[key], dtype=torch.float32)):
                raise _damaged(path, f"block {b}'s neurons have {key} {stored_value:g}, the config says "
                               f"{config[key]:g}")
    return model


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
