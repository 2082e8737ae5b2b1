"""AxonMap and AxonMem beside Intel's compiler table for PilotNet (``pilotnet.COMPILER_TABLE``).

A layer that sends through dense connections alone (or to the host) takes
one axon-map entry per neuron and no axon memory; Intel's table reports
its neurons per core, the mean over the layer's cores rounded down. Five
layers of PilotNet send so: conv5 (2560 neurons on 2 cores, 2048 + 512)
and the four dense layers. The layers that send to a convolution are not
modelled and read None.
"""

from __future__ import annotations

from targets.chips import load_chip
from targets.loihi2 import pilotnet
from toolchain.passes.partition import map_in_order


def test_axon_map_and_memory_match_intels_table_where_they_are_modelled():
    chip = load_chip("loihi2")
    program = pilotnet.pilotnet_program()
    mapping = map_in_order(program, chip)
    rows = {row[0]: row for row in pilotnet.axon_rows(mapping.summary(chip, program))}
    senders_to_dense = ("conv5", "dense1", "dense2", "dense3", "dense4")
    # neurons of each layer over its cores, counted from the cores themselves
    per_core = {name: sum(c.stop - c.start for c in mapping.cores if c.layer == name)
                // sum(c.layer == name for c in mapping.cores) for name in senders_to_dense}
    assert per_core == {"conv5": 1280, "dense1": 8, "dense2": 50, "dense3": 10, "dense4": 1}
    assert {name: rows[name][1:] for name in senders_to_dense} == {
        name: (per_core[name], per_core[name], 0, 0) for name in senders_to_dense}
    for name in ("image", "conv1", "conv2", "conv3", "conv4"):
        assert rows[name][1] is None and rows[name][3] is None and rows[name][2] > 0


def test_the_columns_need_the_program_and_stay_out_of_the_summary_without_it():
    chip = load_chip("loihi2")
    program = pilotnet.pilotnet_program()
    layers = map_in_order(program, chip).summary(chip)["layers"]
    assert all("axon_map" not in layer and "axon_mem" not in layer for layer in layers)
