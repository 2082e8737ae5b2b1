"""AxonMap and AxonMem beside Intel's compiler table for PilotNet (``pilotnet.COMPILER_TABLE``).

A layer that sends through dense connections alone (or to the host) takes
one axon-map entry per neuron and no axon memory; Intel's table reports
its neurons per core, the mean over the layer's cores rounded down. Five
layers of PilotNet send so: conv5 (2560 neurons on 2 cores, 2048 + 512)
and the four dense layers. A layer that sends through convolutions alone
takes one entry per spatial position and per fan-in axon of its cores (the
phases of its own input's column stride): the other five layers. Their
AxonMem is not modelled and reads None.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from builders import conv_program
from targets.chips import load_chip
from targets.loihi2 import pilotnet
from toolchain.passes.partition import map_in_order
from toolchain.program import Synapses

INTEL_AXON_MAP = {"image": 1015, "conv1": 253, "conv2": 113, "conv3": 112, "conv4": 29,
                  "conv5": 1280, "dense1": 8, "dense2": 50, "dense3": 10, "dense4": 1}
"""Intel's AxonMap column for PilotNet, written out apart from ``pilotnet.COMPILER_TABLE``."""


def test_axon_map_and_memory_match_intels_table_where_they_are_modelled():
    chip = load_chip("loihi2")
    program = pilotnet.pilotnet_program()
    mapping = map_in_order(program, chip)
    rows = {row[0]: row for row in pilotnet.axon_rows(mapping.summary(chip, program))}
    senders_to_dense = ("conv5", "dense1", "dense2", "dense3", "dense4")
    # neurons of each layer over its cores, counted from the cores themselves
    per_core = {name: sum(c.stop - c.start for c in mapping.cores if c.layer == name)
                // sum(c.layer == name for c in mapping.cores) for name in senders_to_dense}
    assert per_core == {name: INTEL_AXON_MAP[name] for name in senders_to_dense}
    assert {name: rows[name][1:] for name in senders_to_dense} == {
        name: (per_core[name], per_core[name], 0, 0) for name in senders_to_dense}
    assert {name: rows[name][1] for name in rows} == INTEL_AXON_MAP


def test_a_sender_to_convolutions_takes_an_entry_per_position_and_input_phase():
    chip = load_chip("loihi2")
    program = pilotnet.pilotnet_program()
    mapping = map_in_order(program, chip)
    rows = {row[0]: row for row in pilotnet.axon_rows(mapping.summary(chip, program))}
    shapes = {layer.name: layer.shape for layer in program.layers}
    column_stride = {s.target: s.stride[1] for s in program.synapses}
    for name in ("image", "conv1", "conv2", "conv3", "conv4"):
        channels, height, width = shapes[name]
        cores = [c for c in mapping.cores if c.layer == name]
        # whole columns per core: its positions are its columns times the layer's rows
        columns = [(c.stop - c.start) // (channels * height) for c in cores]
        assert sum(columns) == width
        expected = sum(columns) * height * column_stride[name] // len(cores)
        assert rows[name][1:] == (expected, INTEL_AXON_MAP[name], None, pilotnet.COMPILER_TABLE[name][1][5])


def test_a_layer_sending_both_ways_is_not_modelled():
    chip = load_chip("loihi2")
    program = conv_program(0)
    rng = np.random.default_rng(1)
    mixed = dataclasses.replace(program, synapses=program.synapses + [
        Synapses("c1", "out", rng.integers(-128, 128, (5, 144)), np.zeros(5), 8)])
    layers = {layer["layer"]: layer for layer in map_in_order(mixed, chip).summary(chip, mixed)["layers"]}
    assert (layers["c1"]["axon_map"], layers["c1"]["axon_mem"]) == (None, None)
    assert layers["c2"]["axon_mem"] == 0 and layers["c2"]["axon_map"] == 27
    plain = {layer["layer"]: layer for layer in map_in_order(program, chip).summary(chip, program)["layers"]}
    assert (plain["c1"]["axon_map"], plain["c1"]["axon_mem"]) == (36, None)


def test_the_columns_need_the_program_and_stay_out_of_the_summary_without_it():
    chip = load_chip("loihi2")
    program = pilotnet.pilotnet_program()
    layers = map_in_order(program, chip).summary(chip)["layers"]
    assert all("axon_map" not in layer and "axon_mem" not in layer for layer in layers)
