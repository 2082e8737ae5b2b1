"""Emulator throughput against the float snnTorch forward pass, and against this machine's matmul rate.

Prints, for the digits MLP and CSNN (trained 5 epochs) and the README's
Fashion-MNIST CSNN (32c5-bn-p2-64c5-bn-p2-fc10, 12 steps) at batch 1 and
256: samples/s of the bit-accurate Loihi 2 emulator and of the snnTorch
model on the same inputs, their ratio, the emulator's synaptic events/s
(nonzero source values times their nonzero fan-out) and those as a fraction
of the multiply-accumulates/s a plain float32 torch matmul reaches on this
machine in the same run. All figures are medians of repeated runs, the
emulator's and snnTorch's taken in turn so that load changes fall on both.
The Fashion-MNIST row runs the untrained network of that architecture
(timing needs no trained weights) on the test images, or on random images
when the dataset is not installed (the row says which). With CUDA the rows
repeat on the GPU, the emulator and snnTorch both there. Batch 1 runs on
one torch thread for both: single samples gain nothing from a thread pool,
and on a busy machine waiting for its threads is most of their time.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from frontends.datasets import load_dataset
from frontends.models import SpikingNetwork, default_config
from frontends.nir_export import to_nir
from frontends.training import TrainOptions, train
from targets.chips import load_chip
from targets.loihi2 import run
from toolchain.errors import UserError
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize
from timing import interleaved_median_seconds, median_seconds

REPEATS = 7
SAMPLES = 512
BATCH_ONE_SAMPLES = 64
MATMUL_SHAPE = (256 * 16, 1024, 256)
"""(rows, inputs, outputs): a batch of 256 samples times 16 steps through a 1024-to-256 layer, the
size of the emulator's larger synaptic products."""
FMNIST_SHAPE = (1, 28, 28)
FMNIST_STEPS = 12


def matmul_rate(device: torch.device) -> float:
    """Multiply-accumulates/s of a float32 matmul of ``MATMUL_SHAPE`` (median of repeats)."""
    rows, inputs, outputs = MATMUL_SHAPE
    a = torch.rand(rows, inputs, device=device)
    b = torch.rand(inputs, outputs, device=device)

    def product():
        (a @ b).sum().item()  # .item() waits for a GPU to finish
    return rows * inputs * outputs / median_seconds(product, REPEATS * 4)


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


def models():
    """(name, snnTorch model, 8-bit program, integer inputs of SAMPLES samples, input levels)."""
    digits = load_dataset("digits")
    x = np.concatenate([digits.x_test] * (SAMPLES // len(digits.x_test) + 1))[:SAMPLES]
    chip = load_chip("loihi2")
    for arch in ("mlp", "csnn"):
        model, _ = train(digits, TrainOptions(arch=arch, epochs=5, progress=False))
        program = quantize(graph_from_nir(to_nir(model, digits.levels)), chip, QuantizeOptions(bits=8))
        yield f"digits {arch}", model, program, x, digits.levels
    model = SpikingNetwork(default_config("csnn", FMNIST_SHAPE, 10), FMNIST_SHAPE, 10, FMNIST_STEPS).eval()
    levels = 255
    try:
        name, x = "fmnist csnn*", load_dataset("fmnist").x_test[:SAMPLES]
    except UserError:
        name, x = "fmnist csnn**", np.random.default_rng(0).integers(0, levels + 1, (SAMPLES,) + FMNIST_SHAPE)
    program = quantize(graph_from_nir(to_nir(model, levels)), chip, QuantizeOptions(bits=8))
    yield name, model, program, x, levels


def main():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rates = {device.type: matmul_rate(device) for device in devices}
    print(f"torch threads: {threads} at batch 256, 1 at batch 1 (both sides); {SAMPLES} samples at batch 256, "
          f"{BATCH_ONE_SAMPLES} at batch 1; median of {REPEATS} runs")
    for device, rate in rates.items():
        rows, inputs, outputs = MATMUL_SHAPE
        print(f"{device} float32 matmul ({rows}x{inputs} @ {inputs}x{outputs}): {rate:.3g} multiply-accumulates/s")
    print()
    header = (f"{'model':13} {'device':6} {'batch':>5} {'emulator samples/s':>19} {'snntorch samples/s':>19} "
              f"{'ratio':>6} {'events/s':>9} {'of matmul':>9}")
    print(header)
    print("-" * len(header))
    for name, model, program, x, levels in models():
        xs = x.reshape((SAMPLES,) + tuple(program.input_shape))
        events_per_sample = synaptic_events(program, run(program, xs)) / SAMPLES
        for device in devices:
            model = model.to(device).eval()
            float_x = torch.as_tensor(x, dtype=torch.float32, device=device) / levels
            for batch in (1, 256):
                n = BATCH_ONE_SAMPLES if batch == 1 else SAMPLES
                torch.set_num_threads(1 if batch == 1 else threads)

                @torch.no_grad()
                def snntorch_forward():
                    for start in range(0, n, batch):
                        model(float_x[start:start + batch]).sum().item()
                emulator, snntorch = interleaved_median_seconds(
                    [lambda: run(program, xs[:n], batch_size=batch, device=device.type), snntorch_forward], REPEATS)
                events = events_per_sample * n / emulator
                print(f"{name:13} {device.type:6} {batch:>5} {n / emulator:>19.1f} {n / snntorch:>19.1f} "
                      f"{snntorch / emulator:>6.2f} {events:>9.3g} {events / rates[device.type]:>9.2%}")
    print("\n* the untrained network of that architecture (timing needs no trained weights) on the test "
          "images;\n** on random images, as Fashion-MNIST is not installed")


if __name__ == "__main__":
    main()
