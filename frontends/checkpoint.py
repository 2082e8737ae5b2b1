"""Self-describing checkpoints: everything ``snn-compile model.pt`` needs.

A checkpoint holds the architecture config, the weights, the neuron
parameters and reset rule, the input encoding, the dataset and the number
of time steps, so the compiler needs no other file or option.
"""

from __future__ import annotations

from pathlib import Path

import torch

from frontends.models import SpikingNetwork
from toolchain.errors import UserError
from toolchain.files import atomic_path

FORMAT_NAME = "snn-compile-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(model: SpikingNetwork, path: str | Path, dataset: str | None, levels: int,
                    metrics: dict | None = None, dt: float = 1e-4, coding: dict | None = None) -> Path:
    """``coding``: the host-side encoder and decoder (``{"encoder": ..., "decoder": ...}``) when the
    input is not the dataset's values fed directly; it travels on into the NIR graph and the program."""
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
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path) -> tuple[SpikingNetwork, dict]:
    """Rebuild the model; returns it with the checkpoint's metadata."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"{path}: not a model checkpoint (torch.load failed); train one with "
                        "`snn-compile train` or pass a .nir graph") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise UserError(f"{path}: a torch file but not an snn-compile checkpoint; train one with "
                        "`snn-compile train` or export your network to NIR and pass the .nir file")
    if payload.get("version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint version {payload.get('version')}, expected {FORMAT_VERSION}")
    model = SpikingNetwork(payload["config"], payload["input_shape"], payload["classes"], payload["steps"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
