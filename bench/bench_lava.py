"""Emulator throughput against Lava's on the same program and samples, same machine, one run.

For the digits MLP and CSNN at 8 bits: samples/s of the native emulator at
batch 256 (median of repeats) and of Lava (lava-nc 0.10.0, fixed_pt, all
samples streamed through one run; median of fewer repeats because each takes
seconds), and their ratio. Lava's figure includes starting its worker and
building the network, as every Lava run pays that. The two runs are also
checked to agree spike for spike, so the speed is of the same computation.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from frontends.datasets import load_dataset
from frontends.nir_export import to_nir
from frontends.training import TrainOptions, train
from targets.chips import load_chip
from targets.lava import environment
from targets.lava.runner import run as run_lava
from targets.loihi2 import run as run_emulator
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize
from timing import median_seconds

BATCH = 256
SAMPLES = 256
EMULATOR_REPEATS = 5
LAVA_REPEATS = 3


def main() -> int:
    if not environment.is_ready():
        print(f"Lava environment missing ({environment.venv_dir()}): {environment.HOW_TO_CREATE}; nothing to compare")
        return 0
    torch.manual_seed(0)
    digits = load_dataset("digits")
    x = np.concatenate([digits.x_test] * (SAMPLES // len(digits.x_test) + 1))[:SAMPLES]
    print(f"{SAMPLES} digits test samples, batch {BATCH}, 8-bit programs; torch threads {torch.get_num_threads()}; "
          f"median of {EMULATOR_REPEATS} emulator / {LAVA_REPEATS} Lava runs\n")
    header = (f"{'model':6} {'steps':>5} {'emulator samples/s':>19} {'lava samples/s':>15} {'lava steps/s':>13} "
              f"{'ratio':>8} {'spikes equal':>12}")
    print(header)
    print("-" * len(header))
    for arch in ("mlp", "csnn"):
        model, _ = train(digits, TrainOptions(arch=arch, epochs=5, progress=False))
        graph = graph_from_nir(to_nir(model, digits.levels))
        program = quantize(graph, load_chip("loihi2"), QuantizeOptions(bits=8))
        xs = x.reshape((SAMPLES,) + tuple(program.input_shape))
        emulator = median_seconds(lambda: run_emulator(program, xs, batch_size=BATCH), EMULATOR_REPEATS)
        lava = median_seconds(lambda: run_lava(program, xs, batch_size=BATCH), LAVA_REPEATS, warm_up=False)
        equal = all(np.array_equal(a, b) for a, b in zip(
            run_emulator(program, xs, record=True).trains.values(),
            run_lava(program, xs, record=True, batch_size=BATCH).trains.values()))
        chip_steps = SAMPLES * program.steps + program.latency
        print(f"{arch:6} {program.steps:>5} {SAMPLES / emulator:>19.1f} {SAMPLES / lava:>15.2f} "
              f"{chip_steps / lava:>13.0f} {lava / emulator:>7.0f}x {str(equal):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
