"""Digits as Xylo takes them: each 8x8 image pooled to 4x4 = 16 input channels, values 0..15 (an
input channel takes at most 15 events a step). Writes two --data files: all 10 classes (for the
16-output Xylo IMU) and digits 0..7 (for Xylo Audio 2's 8 outputs), and a small recurrent network
(snnTorch RLeaky, 16 -> 64 recurrent -> 10) trained on the first, exported to NIR.

    python examples/xylo_digits.py DIR [--force]     # --force: replace these three files if they exist
    snn-compile train --data DIR/digits16.npz -o DIR/digits16.pt
    snn-compile compare DIR/digits16.pt --data DIR/digits16.npz --targets reference,loihi2,xylo-imu
    snn-compile compare DIR/recurrent16.nir --data DIR/digits16.npz --targets reference,loihi2,xylo-imu
"""

import sys
from pathlib import Path

import numpy as np
import snntorch as snn
import torch
from snntorch import surrogate, utils
from torch import nn

from frontends.datasets import load_dataset
from frontends.snntorch_export import export_to_nir

LEVELS = 15
STEPS = 16


def pooled(x: np.ndarray, levels: int) -> np.ndarray:
    """(N, 1, 8, 8) integers 0..levels -> (N, 16) integers 0..LEVELS, the mean of each 2x2 block."""
    blocks = x.reshape(len(x), 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(x), 16)
    return np.round(blocks * LEVELS / levels).astype(np.int64)


def write(directory: Path) -> None:
    digits = load_dataset("digits")
    x_train, x_test = pooled(digits.x_train, digits.levels), pooled(digits.x_test, digits.levels)
    np.savez(directory / "digits16.npz", x_train=x_train, y_train=digits.y_train, x_test=x_test,
             y_test=digits.y_test, levels=LEVELS)
    train, test = digits.y_train < 8, digits.y_test < 8
    np.savez(directory / "digits16_8.npz", x_train=x_train[train], y_train=digits.y_train[train],
             x_test=x_test[test], y_test=digits.y_test[test], levels=LEVELS)


def recurrent(directory: Path, epochs: int = 30, seed: int = 0) -> None:
    """16 -> 64 RLeaky -> 10 Leaky, trained on the spike counts of digits16.npz, written as NIR."""
    torch.manual_seed(seed)
    data = np.load(directory / "digits16.npz")
    x = torch.tensor(data["x_train"] / LEVELS, dtype=torch.float32)
    y = torch.tensor(data["y_train"])
    grad = surrogate.fast_sigmoid()
    net = nn.Sequential(nn.Linear(16, 64), snn.RLeaky(beta=0.9, linear_features=64, spike_grad=grad, init_hidden=True,
                                                      reset_mechanism="subtract"),
                        nn.Linear(64, 10), snn.Leaky(beta=0.9, spike_grad=grad, init_hidden=True,
                                                     reset_mechanism="subtract"))
    optimiser = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(epochs):
        for rows in torch.randperm(len(x)).split(64):
            utils.reset(net)
            counts = sum(net(x[rows]) for _ in range(STEPS))
            loss = nn.functional.cross_entropy(counts, y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    export_to_nir(net, torch.zeros(1, 16), directory / "recurrent16.nir", steps=STEPS, input_levels=LEVELS)


OUTPUTS = ("digits16.npz", "digits16_8.npz", "recurrent16.nir")


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    existing = [str(out / name) for name in OUTPUTS if (out / name).exists()]
    if existing and "--force" not in sys.argv[2:]:
        sys.exit(f"xylo_digits: {', '.join(existing)} exist; pass --force after the directory to replace them")
    out.mkdir(parents=True, exist_ok=True)
    write(out)
    recurrent(out)
    print(f"wrote {out / 'digits16.npz'}, {out / 'digits16_8.npz'} and {out / 'recurrent16.nir'}")
