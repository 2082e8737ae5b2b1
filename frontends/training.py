"""Surrogate-gradient training of the snnTorch models, seeded, with progress."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from frontends.datasets import Dataset
from frontends.models import SpikingNetwork, default_config


@dataclass
class TrainOptions:
    arch: str = "mlp"
    steps: int = 16
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0
    progress: bool = True


def train(dataset: Dataset, options: TrainOptions) -> tuple[SpikingNetwork, dict]:
    """Train with Adam and a cosine schedule on spike-count cross entropy."""
    torch.manual_seed(options.seed)
    np.random.seed(options.seed)
    config = default_config(options.arch, dataset.input_shape, dataset.classes)
    model = SpikingNetwork(config, dataset.input_shape, dataset.classes, options.steps)
    x = torch.as_tensor(dataset.x_train, dtype=torch.float32) / dataset.levels
    y = torch.as_tensor(dataset.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    batches = (len(x) + options.batch_size - 1) // options.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.learning_rate,
                                                   total_steps=options.epochs * batches)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(options.seed)
    bar = tqdm(total=options.epochs * batches, desc="training", unit="batch",
               disable=None if options.progress else True, mininterval=0.5)
    for epoch in range(options.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        correct = seen = 0
        for b in range(batches):
            idx = order[b * options.batch_size:(b + 1) * options.batch_size]
            counts = model(x[idx])
            loss = loss_fn(counts, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((counts.argmax(1) == y[idx]).sum())
            seen += len(idx)
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", acc=f"{correct / seen:.3f}",
                            refresh=False)
        if options.progress and bar.disable:  # no terminal (a log, CI): one line per epoch instead
            print(f"epoch {epoch + 1}/{options.epochs}: loss {loss.item():.3f}, train accuracy "
                  f"{correct / seen:.3f}", flush=True)
    bar.close()
    test_accuracy = evaluate(model, dataset.x_test, dataset.y_test, dataset.levels)
    return model, {"train_accuracy": correct / max(seen, 1), "test_accuracy": test_accuracy,
                   "epochs": options.epochs, "seed": options.seed}


@torch.no_grad()
def evaluate(model: SpikingNetwork, images: np.ndarray, labels: np.ndarray, levels: int,
             batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = torch.as_tensor(images[start:start + batch_size], dtype=torch.float32) / levels
        correct += int((model(x).argmax(1).numpy() == labels[start:start + batch_size]).sum())
    return correct / len(images)
