"""SNN regression: tasks, encoder/decoder choice, and training in snnTorch.

Two tasks ship with the installed packages: ``projectile`` (the range of a
projectile, R = v^2 sin(2 theta), a smooth nonlinear function of two
physical inputs) and ``diabetes`` (scikit-learn's real 10-feature disease
progression data). Inputs are min-max scaled to [0, 1] on the training split
(the encoders' range); the target is standardised.

The network is an MLP whose output layer has ``outputs`` neurons: spiking
for the spike-based decoders, a leaky integrator (NIR LI) for the membrane
decoder. A linear head on the decoder's features is trained jointly (MSE);
first-spike times are not differentiable, so that decoder trains through
the rate features and is fitted afterwards by least squares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from frontends.encoding import Decoder, Encoder
from frontends.models import SpikingNetwork
from toolchain.errors import UserError

TASKS = ("projectile", "diabetes")


@dataclass
class RegressionData:
    name: str
    x_train: np.ndarray  # (samples, features) in [0, 1]
    y_train: np.ndarray  # standardised
    x_test: np.ndarray
    y_test: np.ndarray


def load_task(name: str, seed: int = 0) -> RegressionData:
    rng = np.random.default_rng(seed)
    if name == "projectile":
        x = rng.random((3000, 2))  # speed (scaled) and launch angle / (pi/2)
        y = x[:, 0] ** 2 * np.sin(np.pi * x[:, 1])
    elif name == "diabetes":
        from sklearn.datasets import load_diabetes
        data = load_diabetes()
        x, y = data.data, data.target.astype(np.float64)
    else:
        raise UserError(f"unknown regression task {name!r}; known: {', '.join(TASKS)}")
    order = rng.permutation(len(x))
    cut = int(0.75 * len(x))
    train, test = order[:cut], order[cut:]
    lo, hi = x[train].min(axis=0), x[train].max(axis=0)
    scale = lambda a: np.clip((a - lo) / np.where(hi > lo, hi - lo, 1), 0, 1)  # noqa: E731
    mean, std = y[train].mean(), y[train].std()
    return RegressionData(name, scale(x[train]), (y[train] - mean) / std, scale(x[test]), (y[test] - mean) / std)


@dataclass(frozen=True)
class RegressionOptions:
    encoder: str = "direct"
    decoder: str = "rate"
    steps: int = 16
    hidden: int = 64
    outputs: int = 8
    epochs: int = 30
    learning_rate: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    progress: bool = True


def make_encoder(options: RegressionOptions) -> Encoder:
    return Encoder(options.encoder, steps=options.steps, levels=255, neurons=8, width=0.1, seed=options.seed)


def train_regressor(data: RegressionData, options: RegressionOptions) -> tuple[SpikingNetwork, Encoder, Decoder]:
    """Train the SNN and fit its decoder on the training split's float outputs."""
    torch.manual_seed(options.seed)
    encoder = make_encoder(options)
    x_int = encoder.encode(data.x_train)
    levels = encoder.output_levels()
    readout = "membrane" if options.decoder == "membrane" else "spikes"
    config = {"arch": "mlp", "hidden": [options.hidden], "beta": 0.9, "threshold": 1.0, "readout": readout}
    model = SpikingNetwork(config, (x_int.shape[-1],), options.outputs, options.steps)
    head = torch.nn.Linear(options.outputs, 1)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=options.learning_rate)
    x = torch.as_tensor(x_int, dtype=torch.float32) / levels
    y = torch.as_tensor(data.y_train, dtype=torch.float32)
    generator = torch.Generator().manual_seed(options.seed)
    bar = tqdm(range(options.epochs), desc=f"{options.encoder}/{options.decoder}", unit="epoch",
               disable=None if options.progress else True, leave=False)
    for _ in bar:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), options.batch_size):
            idx = order[start:start + options.batch_size]
            out = model(x[idx])
            features = _differentiable_features(out, options)
            loss = torch.nn.functional.mse_loss(head(features).squeeze(1), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        bar.set_postfix(mse=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return model, encoder, fit_decoder(model, encoder, options, data)


def _differentiable_features(out: torch.Tensor, options: RegressionOptions) -> torch.Tensor:
    if options.decoder == "membrane":
        return out
    if options.decoder == "population-vote":
        return out / out.sum(dim=1, keepdim=True).clamp(min=1)
    return out / options.steps  # rate; first-spike trains through the rate


@torch.no_grad()
def fit_decoder(model: SpikingNetwork, encoder: Encoder, options: RegressionOptions,
                data: RegressionData) -> Decoder:
    """Least-squares decoder coefficients from the float model's training outputs."""
    x = torch.as_tensor(encoder.encode(data.x_train), dtype=torch.float32) / encoder.output_levels()
    out, per_step = model(x, record=True)
    decoder = Decoder(options.decoder, steps=options.steps)
    return decoder.fit(data.y_train, **decoder_inputs(options.decoder, out.numpy(), per_step.numpy()))


def decoder_inputs(kind: str, output: np.ndarray, trains: np.ndarray | None) -> dict:
    """The keyword the decoder needs from a run: counts, trains or membrane."""
    if kind == "membrane":
        return {"membrane": output}
    if kind == "first-spike":
        return {"trains": trains}
    return {"counts": output}
