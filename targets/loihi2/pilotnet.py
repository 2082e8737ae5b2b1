"""Our Loihi 2 estimate for a network of PilotNet's shape, beside Intel's measurement of PilotNet.

``python -m targets.loihi2.pilotnet`` builds PilotNet LIF's shape (lava-dl's
pilotnet_snn: input 3x66x200 through the input layer's bias, conv 24 3x3 s2,
conv 36 3x3 s2, conv 48 3x3 s2, conv 64 3x3 stride (2, 1) padding (1, 0) in
(H, W) order (netx's (x, y) order writes them (1, 2) and (0, 1)), conv 64 3x3,
flatten 2560, dense 100, 50, 10, 1) with random weights, runs it on the
emulator for a few images, maps it and prints the cost model's figures next
to the measured ones in the chip spec. The weights are not PilotNet's, so the
activity is only plausible (sparse, like a trained SNN's); the comparison
tests the model's scale, not a fit: no constant is taken from this
measurement except the static power, which is the chip's and not the
network's. The mapping is a fit of another kind: ``core_rows`` sets its
per-layer cores beside Intel's compiler table (``COMPILER_TABLE``), from
which some of the chip spec's mapping constants are inferred
(docs/guides/mapping.md says which).
"""

from __future__ import annotations

import sys

import numpy as np

from targets.chips import load_chip
from targets.loihi2.costs import loihi_costs
from targets.loihi2.emulator import run
from toolchain.ir import INPUT
from toolchain.passes.partition import partition
from toolchain.passes.place import place
from toolchain.program import Layer, Program, Synapses

STEPS = 16
INPUT_SHAPE = (3, 66, 200)
CONVS = ((24, (2, 2), (0, 0)), (36, (2, 2), (0, 0)), (48, (2, 2), (0, 0)), (64, (2, 1), (1, 0)), (64, (1, 1), (0, 0)))
DENSE = (100, 50, 10, 1)
INPUT_WEIGHT = 64
"""netx's input transform weight W: images in [0, 1] drive the input layer with 0..2W."""

COMPILER_TABLE_SOURCE = ("Intel's compiler on Loihi 2: per-core distribution printed by lava-dl's PilotNet LIF "
                         "benchmark (tutorials/lava/lib/dl/netx/pilotnet_snn/benchmark.ipynb), 74 cores")
COMPILER_COLUMNS = ("AxonIn", "NeuronGr", "Neurons", "Synapses", "AxonMap", "AxonMem", "Cores")
COMPILER_TABLE = {
    "image": ("Conv(16, 66, 3) (input)", (1, 1, 3168, 0, 1015, 731, 13)),
    "conv1": ("Conv(4, 32, 24)", (2, 1, 3072, 81, 253, 93, 25)),
    "conv2": ("Conv(4, 15, 36)", (2, 1, 2160, 864, 113, 32, 13)),
    "conv3": ("Conv(8, 7, 48)", (2, 1, 2688, 1620, 112, 46, 3)),
    "conv4": ("Conv(8, 4, 64)", (1, 1, 2048, 2160, 29, 9, 3)),
    "conv5": ("Conv(16, 2, 64)", (1, 1, 2048, 2880, 1280, 0, 2)),
    "dense1": ("dense 100", (2560, 1, 8, 7253, 8, 0, 12)),
    "dense2": ("dense 50", (100, 1, 50, 1300, 50, 0, 1)),
    "dense3": ("dense 10", (50, 1, 10, 150, 10, 0, 1)),
    "dense4": ("dense 1", (10, 1, 1, 10, 1, 0, 1)),
}
"""Our layer -> (Intel's label, the row in ``COMPILER_COLUMNS``), from ``COMPILER_TABLE_SOURCE``. Synapses
are memory words per core; a convolution's label gives its tile (columns, rows, channels)."""


def pilotnet_program(seed: int = 0) -> Program:
    """A Loihi program of PilotNet LIF's shape with random 8-bit weights (seeded)."""
    rng = np.random.default_rng(seed)
    lif = {"du": 4095, "dv": 256, "v_scale": 64.0, "bias_exp": 6}
    layers = [Layer("image", INPUT_SHAPE, vth=48, bias_mant=-INPUT_WEIGHT, **lif)]
    synapses = [Synapses(INPUT, "image", np.eye(3, dtype=np.int32)[:, :, None, None], np.zeros(3), 8, "conv",
                         message_bits=8)]
    shape, previous = INPUT_SHAPE, "image"
    for i, (channels, stride, padding) in enumerate(CONVS):
        fan_in = shape[0] * 9
        kernel = 2 * rng.integers(-30, 33, size=(channels, shape[0], 3, 3))
        shape = (channels, (shape[1] + 2 * padding[0] - 3) // stride[0] + 1,
                 (shape[2] + 2 * padding[1] - 3) // stride[1] + 1)
        name = f"conv{i + 1}"
        layers.append(Layer(name, shape, vth=int(fan_in * 2.5), bias_mant=0, **lif))
        synapses.append(Synapses(previous, name, kernel, np.zeros(channels), 8, "conv", stride, padding))
        previous = name
    size = int(np.prod(shape))
    for i, width in enumerate(DENSE):
        weights = 2 * rng.integers(-30, 33, size=(width, size))
        name = f"dense{i + 1}"
        layers.append(Layer(name, (width,), vth=int(np.sqrt(size) * 40), bias_mant=0, **lif))
        synapses.append(Synapses(previous, name, weights, np.zeros(width), 8, "dense"))
        previous, size = name, width
    return Program(chip="loihi2", input_shape=INPUT_SHAPE, input_levels=2 * INPUT_WEIGHT, steps=STEPS, layers=layers,
                   synapses=synapses, output=previous, metadata={"network": "PilotNet LIF shape, random weights"})


def pilotnet_estimate(samples: int = 2, seed: int = 0) -> tuple[dict, dict]:
    """(our cost estimate, spikes per neuron and step of each layer) for random images."""
    chip = load_chip("loihi2")
    program = pilotnet_program(seed)
    images = np.random.default_rng(seed + 1).random((samples,) + INPUT_SHAPE)
    drive = np.round(images * program.input_levels).astype(np.int32)
    result = run(program, drive, batch_size=1)
    mapped = place(partition(program, chip), chip, result.activity, seed=seed)
    rates = {layer.name: float(result.activity[layer.name].spike_counts.sum()) / (layer.size * samples * STEPS)
             for layer in program.layers}
    return loihi_costs(mapped, result.activity, samples, chip), rates


def comparison_rows(costs: dict, chip) -> list[tuple[str, str, str]]:
    """(quantity, our estimate, Intel's measurement) rows for the README table."""
    measured = chip.measured_value
    rate = measured("pilotnet_inferences_per_s")
    steps = measured("pilotnet_steps_per_sample")
    return [
        ("inferences per s", f"{costs['throughput_per_s']:.0f}", f"{rate:.2f}"),
        ("time per step (us)", f"{costs['step_ns'] / 1e3:.1f}", f"{1e6 / (rate * steps):.1f}"),
        ("static power (W)", f"{costs['power_w']['static']:.3f}", f"{measured('static_power_w_per_chip'):.3f}"),
        ("dynamic power (W)", f"{costs['power_w']['dynamic']:.3f}", f"{measured('pilotnet_dynamic_power_w'):.3f}"),
        ("total power (W)", f"{costs['power_w']['total']:.3f}", f"{measured('pilotnet_total_power_w'):.3f}"),
        ("dynamic energy per inference (mJ)", f"{costs['dynamic_pj'] / 1e9:.3f}",
         f"{measured('pilotnet_dynamic_power_w') / rate * 1e3:.3f}"),
        ("static energy per inference (mJ)", f"{costs['static_pj'] / 1e9:.3f}",
         f"{measured('static_power_w_per_chip') / rate * 1e3:.3f}"),
        ("energy per inference (mJ)", f"{costs['total_pj'] / 1e9:.3f}",
         f"{measured('pilotnet_energy_per_inference_mj'):.3f}"),
        ("chips, cores", f"{costs['chips']}, {costs['cores']}", "1, -"),
    ]


def core_rows(summary: dict) -> list[tuple]:
    """Per layer of a PilotNet mapping's ``Mapping.summary``: (layer, Intel's label, our cores, Intel's,
    our neurons per core, Intel's, our synapse words per core, Intel's, our fan-in axons, Intel's
    AxonIn, the limit that ended our cores)."""
    rows = []
    for layer in summary["layers"]:
        label, (axons, _, neurons, words, _, _, cores) = COMPILER_TABLE[layer["layer"]]
        rows.append((layer["layer"], label, layer["cores"], cores, layer["neurons"], neurons,
                     layer["synapse_words"], words, layer["fan_in_axons"], axons, layer["limited_by"]))
    return rows


def axon_rows(summary: dict) -> list[tuple]:
    """Per layer of a PilotNet mapping's ``Mapping.summary`` (given the program): (layer, our AxonMap,
    Intel's, our AxonMem, Intel's); ours is None where the model does not cover it (the axon memory of a
    layer that sends to a convolution)."""
    return [(layer["layer"], layer["axon_map"], COMPILER_TABLE[layer["layer"]][1][4], layer["axon_mem"],
             COMPILER_TABLE[layer["layer"]][1][5]) for layer in summary["layers"]]


def main() -> int:
    chip = load_chip("loihi2")
    costs, rates = pilotnet_estimate()
    print("| quantity | snn-compile estimate | Intel, Loihi 2 (measured) |")
    print("| --- | --- | --- |")
    for row in comparison_rows(costs, chip):
        print("| " + " | ".join(row) + " |")
    split = costs["energy_split_pj"]
    print("\nenergy split per inference (mJ): " + ", ".join(f"{k} {v / 1e9:.4f}" for k, v in split.items()))
    print("step split, busiest core (us): " + ", ".join(f"{k} {v / 1e3:.2f}" for k, v in costs["step_split_ns"].items()))
    print("spikes per neuron and step: " + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
