"""Surrogate-gradient training of the snnTorch models, seeded, with progress."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from frontends.datasets import Dataset
from frontends.models import SpikingNetwork, default_config, network_size


@dataclass
class TrainOptions:
    arch: str = "mlp"
    steps: int = 16
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    channel_dropout: float = 0.0
    widths: list[int] | None = None
    progress: bool = True


def training_memory_bytes(config: dict, input_shape, classes: int, steps: int, batch_size: int) -> int:
    """About how much memory training ``config`` takes: float32 weights with their gradients and
    Adam's two moments, and every step's activity of a batch, kept for the backward pass."""
    weights, values = network_size(config, input_shape, classes)
    return 4 * (4 * weights + steps * batch_size * values)


def train(dataset: Dataset, options: TrainOptions) -> tuple[SpikingNetwork, dict]:
    """Train with Adam and a cosine schedule on spike-count cross entropy."""
    torch.manual_seed(options.seed)
    np.random.seed(options.seed)
    config = default_config(options.arch, dataset.input_shape, dataset.classes, options.channel_dropout,
                            options.widths)
    model = SpikingNetwork(config, dataset.input_shape, dataset.classes, options.steps)
    x = torch.as_tensor(dataset.x_train, dtype=torch.float32) / dataset.levels
    train_accuracy = fit(model, x, torch.as_tensor(dataset.y_train), options.epochs, options.batch_size,
                         options.learning_rate, options.seed, options.progress)
    test_accuracy = evaluate(model, dataset.x_test, dataset.y_test, dataset.levels)
    return model, {"train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
                   "epochs": options.epochs, "seed": options.seed}


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, learning_rate: float,
        seed: int, progress: bool, desc: str = "training") -> float:
    """Train in place on cross entropy of the model's output (spike counts or logits) with Adam and
    a one-cycle schedule, in seeded shuffled batches; returns the last epoch's train accuracy."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    batches = (len(x) + batch_size - 1) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate,
                                                   total_steps=max(epochs * batches, 1))
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=epochs * batches, desc=desc, unit="batch", disable=None if progress else True,
               mininterval=0.5)
    correct = seen = 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        correct = seen = 0
        for b in range(batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            out = model(x[idx])
            loss = loss_fn(out, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((out.argmax(1) == y[idx]).sum())
            seen += len(idx)
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", acc=f"{correct / seen:.3f}",
                            refresh=False)
        if progress and bar.disable:  # no terminal (a log, CI): one line per epoch instead
            print(f"{desc}: epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, train accuracy "
                  f"{correct / seen:.3f}", flush=True)
    bar.close()
    return correct / max(seen, 1)


@torch.no_grad()
def evaluate(model: SpikingNetwork, images: np.ndarray, labels: np.ndarray, levels: int,
             batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = torch.as_tensor(images[start:start + batch_size], dtype=torch.float32) / levels
        correct += int((model(x).argmax(1).numpy() == labels[start:start + batch_size]).sum())
    return correct / len(images)
