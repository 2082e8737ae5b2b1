"""The emulator on the synthetic 1M-neuron network of bench_mapping.py: samples/s and peak memory.

The network (conv 3x3 to 8 channels, conv 3x3 to 8, strided conv 3x3 to 16,
dense read-out to 10, on a 2x224x224 input) runs 16 steps on random binary
images held for every step. One sample's activity over 16 steps is about
16 million neuron-steps, so the emulator streams the samples in batches
bounded by ``emulator.BATCH_MEMORY`` whatever batch size is asked for; the
peak resident memory of the process (``getrusage``) shows that bound holds.
Prints the batch the bound allowed, samples/s of whole runs (median of
repeats; each run first prepares the program's layers, timed alone in
"prepare s"), the peak, and the memory one batch of 256 samples would have
taken.
"""

from __future__ import annotations

import dataclasses
import resource
import sys

import numpy as np
import torch

from bench_mapping import synthetic_network
from targets.loihi2 import emulator
from timing import median_seconds

NEURONS = 1_000_000
STEPS = 16
SAMPLES = 12
REPEATS = 3


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main() -> int:
    program, _ = synthetic_network(NEURONS)
    program = dataclasses.replace(program, steps=STEPS)
    x = np.random.default_rng(0).integers(0, 2, (SAMPLES,) + tuple(program.input_shape))
    neurons = sum(layer.size for layer in program.layers)
    per_sample = STEPS * neurons * emulator.BYTES_PER_NEURON_STEP
    batch = max(1, emulator.BATCH_MEMORY // per_sample)
    before = peak_rss_bytes()
    prepare = median_seconds(lambda: [emulator.CompiledLayer(program, layer, torch.device("cpu"))
                                      for layer in program.layers], 1, warm_up=False)
    seconds = median_seconds(lambda: emulator.run(program, x, batch_size=256), REPEATS)
    result = emulator.run(program, x, batch_size=256)
    spikes = sum(int(result.activity[layer.name].spike_counts.sum()) for layer in program.layers)
    print(f"{neurons:,} neurons, {STEPS} steps, {SAMPLES} samples asked at batch 256; torch threads "
          f"{torch.get_num_threads()}; median of {REPEATS} runs\n")
    header = (f"{'neurons':>9} {'batch':>5} {'samples/s':>9} {'neuron-steps/s':>14} {'spikes/sample':>13} "
              f"{'prepare s':>9} {'peak RSS':>9} {'before run':>10} {'batch 256 would hold':>20}")
    print(header)
    print("-" * len(header))
    print(f"{neurons:>9,} {batch:>5} {SAMPLES / seconds:>9.2f} {SAMPLES * STEPS * neurons / seconds:>14.3g} "
          f"{spikes / SAMPLES:>13,.0f} {prepare:>9.2f} {peak_rss_bytes() / 2**30:>7.2f} G {before / 2**30:>8.2f} G "
          f"{256 * per_sample / 2**30:>18.1f} G")
    return 0


if __name__ == "__main__":
    sys.exit(main())
