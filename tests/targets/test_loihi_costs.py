"""The Loihi 2 cost model's static power, its energy and step-time splits, and PilotNet's shape."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from targets.loihi2 import pilotnet
from targets.loihi2.costs import loihi_costs
from targets.loihi2.emulator import run
from toolchain.passes.partition import partition
from toolchain.passes.quantize import QuantizeOptions, quantize


@pytest.fixture(scope="module")
def mlp_costs(mlp, loihi2, digits):
    program = quantize(mlp[1], loihi2, QuantizeOptions(bits=8))
    result = run(program, digits.x_test[:64])
    mapped = partition(program, loihi2)
    return mapped, result, loihi_costs(mapped, result.activity, result.samples, loihi2)


def test_static_energy_is_static_power_times_chips_times_inference_time(mlp_costs, loihi2):
    mapped, _, costs = mlp_costs
    seconds = mapped.steps * costs["step_ns"] * 1e-9
    assert costs["static_pj"] == pytest.approx(0.232 * mapped.mapping.chips_used * seconds * 1e12)
    assert costs["power_w"]["static"] == pytest.approx(0.232 * costs["chips"])
    assert costs["total_pj"] == pytest.approx(costs["dynamic_pj"] + costs["static_pj"])
    assert costs["energy_pj"] == costs["dynamic_pj"]


def test_static_energy_scales_with_the_chips_a_mapping_uses(mlp_costs, loihi2):
    mapped, result, costs = mlp_costs
    two_chips = dataclasses.replace(mapped, mapping=dataclasses.replace(mapped.mapping, cores=[
        dataclasses.replace(core, chip=i % 2) for i, core in enumerate(mapped.mapping.cores)]))
    assert two_chips.mapping.chips_used == 2
    doubled = loihi_costs(two_chips, result.activity, result.samples, loihi2)
    per_second = lambda c: c["static_pj"] / (c["step_ns"] * mapped.steps)  # noqa: E731
    assert per_second(doubled) == pytest.approx(2 * per_second(costs))


def test_the_splits_add_up(mlp_costs):
    _, _, costs = mlp_costs
    split = costs["energy_split_pj"]
    assert set(split) == {"synaptic_ops", "neuron_updates", "spikes", "routing", "static"}
    assert sum(split.values()) == pytest.approx(costs["total_pj"])
    assert split["synaptic_ops"] + split["neuron_updates"] == pytest.approx(sum(r["compute_pj"] for r in costs["layers"]))
    step = costs["step_split_ns"]
    assert set(step) == {"synaptic_ops", "neuron_updates", "spike_output", "routing", "barrier"}
    assert sum(step.values()) == pytest.approx(costs["step_ns"])
    assert step["barrier"] == 465.0


def test_every_measured_figure_names_its_loihi_2_measurement(loihi2):
    assert loihi2.measured
    assert all("Loihi 2" in entry["source"] and "pilotnet" in entry["source"].lower()
               for entry in loihi2.measured.values())


def test_pilotnet_has_the_published_shape():
    program = pilotnet.pilotnet_program()
    shapes = [layer.shape for layer in program.layers]
    assert shapes == [(3, 66, 200), (24, 32, 99), (36, 15, 49), (48, 7, 24), (64, 4, 22), (64, 2, 20),
                      (100,), (50,), (10,), (1,)]
    assert int(np.prod(shapes[5])) == 2560
    assert program.synapses[4].stride == (2, 1) and program.synapses[4].padding == (1, 0)
    assert program.steps == 16


def test_comparison_rows_set_the_estimate_beside_the_measurement(loihi2):
    costs = {"throughput_per_s": 400.0, "step_ns": 150_000.0, "power_w": {"static": 0.232, "dynamic": 0.5, "total": 0.732},
             "dynamic_pj": 1.2e9, "static_pj": 0.58e9, "total_pj": 1.78e9, "chips": 1, "cores": 80}
    rows = dict((q, (ours, theirs)) for q, ours, theirs in pilotnet.comparison_rows(costs, loihi2))
    assert rows["inferences per s"] == ("400", "408.91")
    assert rows["time per step (us)"] == ("150.0", "152.8")
    assert rows["energy per inference (mJ)"] == ("1.780", "1.661")
    assert rows["static energy per inference (mJ)"] == ("0.580", "0.567")
