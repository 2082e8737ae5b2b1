"""Mapping time and quality on synthetic sparse networks of 10k, 100k and 1M neurons, and PilotNet's
per-core distribution beside Intel's compiler's.

Each network is a pruned convolutional stack on a square two-channel input
(conv 3x3 to 8 channels, conv 3x3 to 8, strided conv 3x3 to 16, dense read-out
to 10 classes), half of every kernel's taps zero and at most 2000 inputs per
read-out neuron.
Calibration activity is uneven on purpose: lognormal per neuron, a hot spot
in the middle of the image and busier early layers. Prints, per network:
the time to partition and to place, cores, chips, and traffic x hops of the
traffic-aware placement against the naive in-order one. Then PilotNet LIF's
shape (random weights) mapped in order, each layer's cores, neurons and
synapse words per core and fan-in axons beside the table Intel's compiler
printed for it on Loihi 2, and the limit that ended our cores.
"""

from __future__ import annotations

import math
import time

import numpy as np

from targets.chips import load_chip
from targets.loihi2 import pilotnet
from toolchain.results import LayerActivity
from toolchain.passes.partition import map_in_order, partition
from toolchain.passes.place import place, place_in_order
from toolchain.program import Layer, Program, Synapses

SIZES = (10_000, 100_000, 1_000_000)
NEURONS_PER_PIXEL = 8 + 8 + 16 / 4  # conv1, conv2, strided conv3
READOUT_FAN_IN = 2000  # inputs per read-out neuron, within a core's 4096 fan-in axons


def synthetic_network(neurons: int, seed: int = 0) -> tuple[Program, dict[str, LayerActivity]]:
    """A pruned conv stack of about ``neurons`` neurons, and uneven calibration activity for it."""
    rng = np.random.default_rng(seed)
    side = 2 * round(math.sqrt(neurons / NEURONS_PER_PIXEL) / 2)
    shapes = {"input": (2, side, side), "conv1": (8, side, side), "conv2": (8, side, side),
              "conv3": (16, side // 2, side // 2), "readout": (10,)}

    def kernel(c_out, c_in):
        return rng.integers(-127, 128, (c_out, c_in, 3, 3)) * (rng.random((c_out, c_in, 3, 3)) < 0.5) * 2

    def conv(source, target, stride):
        c_out, c_in = shapes[target][0], shapes[source][0]
        return Synapses(source, target, kernel(c_out, c_in), np.zeros(c_out), weight_bits=8, kind="conv",
                        stride=(stride, stride), padding=(1, 1))

    readout_in = int(np.prod(shapes["conv3"]))
    density = min(0.1, READOUT_FAN_IN / readout_in)
    readout = rng.integers(-127, 128, (10, readout_in)) * (rng.random((10, readout_in)) < density) * 2
    synapses = [conv("input", "conv1", 1), conv("conv1", "conv2", 1), conv("conv2", "conv3", 2),
                Synapses("conv3", "readout", readout, np.zeros(10), weight_bits=8)]
    layers = [Layer(name, shapes[name], du=4095, dv=410, vth=1000, bias_mant=0, bias_exp=0, v_scale=1.0)
              for name in ("conv1", "conv2", "conv3", "readout")]
    program = Program(chip="loihi2", input_shape=shapes["input"], input_levels=1, steps=20, layers=layers,
                      synapses=synapses, output="readout")

    activity = {}
    for depth, (name, shape) in enumerate(shapes.items()):
        size = int(np.prod(shape))
        if len(shape) == 3:
            y, x = np.meshgrid(np.linspace(-1, 1, shape[1]), np.linspace(-1, 1, shape[2]), indexing="ij")
            hot_spot = np.broadcast_to(np.exp(-4 * (x**2 + y**2)), shape).reshape(-1)
        else:
            hot_spot = np.ones(size)
        counts = np.round(rng.lognormal(0, 1, size) * (1 + 20 * hot_spot) * 4 / (1 + depth))
        activity[name] = LayerActivity(counts.astype(np.int64), np.zeros(program.steps, dtype=np.int64))
    return program, activity


def main():
    chip = load_chip("loihi2")
    print(f"chip: {chip.name}, {chip.limit('cores_per_chip')} cores per chip, "
          f"{chip.limit('neurons_per_core')} neurons per core, convolution tiles under "
          f"{chip.limit('conv_tile_neurons_below')} neurons, "
          f"{chip.limit('synapse_memory_bits_per_core')} synapse memory bits per core\n")
    header = (f"{'neurons':>9} {'cores':>6} {'chips':>5} {'partition s':>11} {'place s':>7} {'total s':>7} "
              f"{'traffic x hops':>14} {'in-order':>10} {'lower by':>8} {'mean hops':>9} {'in-order':>8} "
              f"{'max hops':>8}")
    print(header)
    print("-" * len(header))
    for neurons in SIZES:
        program, activity = synthetic_network(neurons)
        start = time.perf_counter()
        partitioned = partition(program, chip)
        partitioned_at = time.perf_counter()
        placed = place(partitioned, chip, activity, seed=0)
        placed_at = time.perf_counter()
        naive = place_in_order(partitioned, chip, activity).mapping.traffic
        traffic = placed.mapping.traffic
        size = sum(layer.size for layer in program.layers)
        print(f"{size:>9,} {len(placed.mapping.cores):>6} {placed.mapping.chips_used:>5} "
              f"{partitioned_at - start:>11.2f} {placed_at - partitioned_at:>7.2f} {placed_at - start:>7.2f} "
              f"{traffic.message_hops:>14.4g} {naive.message_hops:>10.4g} "
              f"{1 - traffic.message_hops / naive.message_hops:>8.1%} {traffic.mean_hops:>9.2f} "
              f"{naive.mean_hops:>8.2f} {traffic.max_hops:>8}")
    pilotnet_table(chip)


def pilotnet_table(chip) -> None:
    """PilotNet's cores per layer, ours beside Intel's compiler's (markdown)."""
    summary = map_in_order(pilotnet.pilotnet_program(), chip).summary(chip)
    rows = pilotnet.core_rows(summary)
    print(f"\nPilotNet LIF, in-order mapping: {summary['cores']} cores; {pilotnet.COMPILER_TABLE_SOURCE}\n")
    print("| layer | Intel's label | cores | Intel | neurons/core | Intel | synapse words/core | Intel "
          "| fan-in axons | Intel AxonIn | limited by |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    print(f"| total | | {summary['cores']} | {sum(r[3] for r in rows)} | | | | | | | |")


if __name__ == "__main__":
    main()
