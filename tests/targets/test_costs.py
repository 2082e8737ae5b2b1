"""Operation counting, the 45 nm energy model and the Loihi cost model.

Counts are checked against hand computation on a 3-input, 2-output layer;
the Loihi model against the direction and proportion physics dictates.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from targets import digital45nm
from targets.loihi2 import run
from targets.loihi2.costs import loihi_costs
from toolchain.results import LayerActivity
from toolchain.errors import UserError
from toolchain.operations import count_operations, totals
from toolchain.passes.partition import partition
from toolchain.passes.prune import PruneOptions, prune
from toolchain.passes.quantize import QuantizeOptions, quantize
from toolchain.program import Layer, Program, Synapses

# 3 inputs -> 2 neurons; synapse (1, 2) pruned to zero: 5 live synapses out of 6
WEIGHTS = np.array([[10, 20, 30],
                    [40, 50, 0]])


def one_layer(input_levels: int) -> Program:
    layer = Layer(name="out", shape=(2,), du=4095, dv=0, vth=100, bias_mant=0, bias_exp=0, v_scale=1.0)
    syn = Synapses("input", "out", WEIGHTS, np.zeros(2), weight_bits=8, message_bits=8 if input_levels > 1 else 0)
    return Program(chip="loihi2", input_shape=(3,), input_levels=input_levels, steps=4, layers=[layer],
                   synapses=[syn], output="out")


def activity(input_events, output_spikes, steps=4):
    return {"input": LayerActivity(np.array(input_events), np.zeros(steps, dtype=np.int64)),
            "out": LayerActivity(np.array(output_spikes), np.zeros(steps, dtype=np.int64))}


def test_binary_input_counts_one_ac_per_event_per_live_synapse():
    # over 2 samples: input 0 fired 3 times, input 1 once, input 2 twice
    (ops,) = count_operations(one_layer(1), activity([3, 1, 2], [4, 2]), samples=2, steps=4)
    # input 0 -> 2 synapses, input 1 -> 2, input 2 -> 1 (the pruned one costs nothing)
    assert ops.acs == (3 * 2 + 1 * 2 + 2 * 1) / 2
    assert ops.macs == 0
    assert ops.spikes == 3 and ops.active_updates == 3
    assert ops.neuron_updates == 2 * 4
    assert ops.dense_acs == 6 * 4 and ops.dense_macs == 0  # every synapse, zero or not, every step
    assert ops.ann_macs == 6


def test_graded_first_layer_input_counts_macs():
    (ops,) = count_operations(one_layer(255), activity([3, 1, 2], [4, 2]), samples=2, steps=4)
    assert ops.macs == 5 and ops.acs == 0
    assert ops.dense_macs == 24 and ops.dense_acs == 0


def test_spikes_of_a_layer_are_acs_into_the_next(loihi2):
    hidden = Layer(name="hidden", shape=(3,), du=4095, dv=0, vth=100, bias_mant=0, bias_exp=0, v_scale=1.0)
    out = Layer(name="out", shape=(2,), du=4095, dv=0, vth=100, bias_mant=0, bias_exp=0, v_scale=1.0)
    program = Program(chip="loihi2", input_shape=(3,), input_levels=255, steps=4, layers=[hidden, out],
                      synapses=[Synapses("input", "hidden", np.eye(3, dtype=int) * 50, np.zeros(3), 8, message_bits=8),
                                Synapses("hidden", "out", WEIGHTS, np.zeros(2), 8)], output="out")
    act = activity([4, 4, 4], [1, 0])
    act["hidden"] = LayerActivity(np.array([2, 0, 5]), np.zeros(4, dtype=np.int64))
    first, second = count_operations(program, act, samples=1, steps=4)
    assert (first.macs, first.acs) == (12, 0)
    assert (second.acs, second.macs) == (2 * 2 + 5 * 1, 0)
    assert totals([first, second])["acs"] == 9


def test_45nm_energy_and_the_ann_comparison():
    (ops,) = count_operations(one_layer(255), activity([3, 1, 2], [4, 2]), samples=2, steps=4)
    plain = digital45nm.energy([ops], weight_bits=8, steps=4, dt=1e-3)
    assert plain["energy_pj"] == pytest.approx(4.6 * 5)
    assert plain["ann_energy_pj"] == pytest.approx(4.6 * 6)
    assert plain["snn_to_ann"] == pytest.approx(5 / 6)
    with_memory = digital45nm.energy([ops], weight_bits=8, steps=4, dt=1e-3, memory=True)
    assert with_memory["energy_pj"] == pytest.approx(4.6 * 5 + 5 * 10 * 8 / 64)
    assert with_memory["ann_energy_pj"] == pytest.approx(6 * (4.6 + 10 * 32 / 64))
    spike = digital45nm.energy([ops], weight_bits=8, steps=4, dt=1e-3, model="spike")
    assert spike["energy_pj"] == pytest.approx(0.1 * 3)  # P_leak is 0 in the shipped constants


def test_bad_energy_model_and_constants_files(tmp_path):
    with pytest.raises(UserError, match="unknown energy model 'joules'; choose one of: ops, spike"):
        digital45nm.energy([], 8, 4, 1e-3, model="joules")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="malformed cost constants file \\(not JSON"):
        digital45nm.load_constants(broken)
    data = json.loads(digital45nm.CONSTANTS_FILE.read_text())
    del data["constants"]["mac_pj"]
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(data))
    with pytest.raises(UserError, match="missing 'mac_pj'"):
        digital45nm.load_constants(missing)
    with pytest.raises(UserError, match="no such cost constants file"):
        digital45nm.load_constants(tmp_path / "absent.json")


def test_every_constant_names_its_source(loihi2):
    constants = digital45nm.load_constants()
    assert all(constants.sources[k] for k in digital45nm.REQUIRED)
    assert all("Loihi 1" in entry["source"] for entry in loihi2.costs.values())


# -- the Loihi model moves the way physics says ------------------------------

def loihi_estimate(program, chip, images):
    result = run(program, images)
    return loihi_costs(partition(program, chip), result.activity, result.samples, chip)


def test_latency_grows_with_time_steps_and_throughput_falls(mlp_program, loihi2, digits):
    images = digits.x_test[:64]
    short = loihi_estimate(mlp_program, loihi2, images)
    long = loihi_estimate(replace(mlp_program, steps=2 * mlp_program.steps), loihi2, images)
    assert long["latency_s"] > short["latency_s"]
    assert long["throughput_per_s"] < short["throughput_per_s"]
    # a constant input settles into a steady rate: energy grows about in proportion to the steps
    assert 1.6 < long["energy_pj"] / short["energy_pj"] < 2.4


def test_energy_follows_the_spike_rate(mlp_program, loihi2, digits):
    images = digits.x_test[:64]
    dim = loihi_estimate(mlp_program, loihi2, images // 4)
    bright = loihi_estimate(mlp_program, loihi2, images)
    assert bright["energy_pj"] > dim["energy_pj"]
    quiet = run(mlp_program, np.zeros_like(images))
    silent = loihi_costs(partition(mlp_program, loihi2), quiet.activity, quiet.samples, loihi2)
    neurons = sum(layer.size for layer in mlp_program.layers)
    floor = neurons * mlp_program.steps * loihi2.cost("neuron_update_inactive_pj")
    # no input: what remains is the neuron updates and the few spikes biases cause
    assert floor <= silent["energy_pj"] < dim["energy_pj"]
    assert silent["energy_pj"] < 1.05 * floor


def test_pruning_lowers_energy(mlp, loihi2, digits):
    images = digits.x_test[:64]
    full = loihi_estimate(quantize(mlp[1], loihi2, QuantizeOptions(bits=8)), loihi2, images)
    pruned_graph = prune(mlp[1], PruneOptions(0.5, "magnitude"))
    pruned = loihi_estimate(quantize(pruned_graph, loihi2, QuantizeOptions(bits=8)), loihi2, images)
    assert pruned["energy_pj"] < full["energy_pj"]
    assert pruned["busiest_core_ns"] < full["busiest_core_ns"]
