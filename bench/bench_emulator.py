"""Emulator throughput against the float snnTorch forward pass on the same inputs.

Prints, for the digits MLP and CSNN at batch 1 and 256: samples/s and
synaptic events/s of the bit-accurate Loihi 2 emulator, samples/s of the
snnTorch model, and their ratio (median of repeated runs).
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from frontends.datasets import load_dataset
from frontends.nir_export import to_nir
from frontends.training import TrainOptions, train
from targets.chips import load_chip


from targets.loihi2 import run
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize
from timing import median_seconds

REPEATS = 5
SAMPLES = 512


def synaptic_events(program, result) -> float:
    """Weight additions a run performed: each nonzero source value times its nonzero fan-out."""
    total = 0.0
    for syn in program.synapses:
        counts = torch.as_tensor(result.activity[syn.source].spike_counts, dtype=torch.float64)
        mask = torch.as_tensor(syn.weights != 0, dtype=torch.float64)
        if syn.kind == "dense":
            total += float(counts @ mask.sum(0))
        else:
            count_map = counts.reshape((1,) + program.shape_of(syn.source))
            total += float(F.conv2d(count_map, mask, stride=syn.stride, padding=syn.padding).sum())
    return total


def main():
    torch.manual_seed(0)
    digits = load_dataset("digits")
    x = np.concatenate([digits.x_test] * (SAMPLES // len(digits.x_test) + 1))[:SAMPLES]
    print(f"torch threads: {torch.get_num_threads()}; {SAMPLES} samples; median of {REPEATS} runs\n")
    header = f"{'model':6} {'batch':>5} {'emulator samples/s':>19} {'events/s':>10} {'snntorch samples/s':>19} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for arch in ("mlp", "csnn"):
        model, _ = train(digits, TrainOptions(arch=arch, epochs=5, progress=False))
        program = quantize(graph_from_nir(to_nir(model, digits.levels)), load_chip("loihi2"), QuantizeOptions(bits=8))
        events = synaptic_events(program, run(program, x))
        float_x = torch.as_tensor(x, dtype=torch.float32) / digits.levels
        for batch in (1, 256):
            n = 64 if batch == 1 else SAMPLES
            emu = median_seconds(lambda: run(program, x[:n], batch_size=batch), REPEATS)

            @torch.no_grad()
            def snntorch_forward():
                for start in range(0, n, batch):
                    model(float_x[start:start + batch])
            ref = median_seconds(snntorch_forward, REPEATS)
            print(f"{arch:6} {batch:>5} {n / emu:>19.1f} {events / SAMPLES * n / emu:>10.3g} {n / ref:>19.1f} "
                  f"{ref / emu:>6.2f}")


if __name__ == "__main__":
    main()
