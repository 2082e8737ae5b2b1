"""Xylo's cost model: clock cycles per step from Rockpool's cycle model, on the run's measured
activity (``rockpool/devices/xylo/syns61201/power_cycles_model.py``, and syns63300's, which
counts only the hidden neurons that take input or feed the outputs; the constants are in the chip
spec with their source). As there, a neuron or channel that fires in a step counts once however
many events it sends; the second synapse and aliases are not used.

SynSense publishes no energy per event. Where the spec holds a published power of a deployed
network (``measured.dynamic_inference_power_w``), the energy of an inference is that power over
the inference's real-time duration (chip steps times dt): a figure for scale, not one this run's
activity changes."""

from __future__ import annotations

import numpy as np

from targets.xylo.program import OUTPUT
from toolchain.ir import INPUT


def cycles_per_step(program, input_p: float, hidden_p: float, output_p: float, chip) -> float:
    """Rockpool's ``cycles_model`` for this program at these firing probabilities (0..1 per
    channel or neuron and step)."""
    c = chip.cost
    n_in, n_hidden, n_out = program.n_in, program.n_hidden, program.n_out
    fanout = float(np.mean(np.count_nonzero(program.w_rec, axis=1))) if n_hidden else 0.0
    fed, read = n_hidden, n_hidden
    if "input_expansion_neurons" in chip.limits:  # Xylo IMU: Nien and Noen, the neurons with such weights
        fed = int(np.count_nonzero(program.w_in.any(axis=0)))
        read = int(np.count_nonzero(program.w_out.any(axis=1)))
    inputs = n_in * (input_p * fed * c("input_loop_cycles") + 1)
    hidden_isyn = (fanout * c("hidden_update_cycles") * hidden_p + 3) * n_hidden
    output_isyn = hidden_p * (1 + n_out * c("output_isyn_update_cycles")) * read
    hidden_spikes = (c("fixed_hidden_neuron_cycles") + 3 * hidden_p) * n_hidden  # no aliases
    output_spikes = c("fixed_output_neuron_spk_cycles") * n_out
    return inputs + hidden_isyn + output_isyn + hidden_spikes + output_spikes


def xylo_costs(program, activity: dict, samples: int, chip) -> dict:
    """Cycles and time per step and per inference at the spec's clock, whether it runs in real time
    at the spec's dt with Rockpool's margin, and the published-power energy where the spec has one."""
    steps = program.steps

    def probability(names, neurons):
        fired = sum(float(np.sum(activity[n].spike_counts)) for n in names)
        return fired / max(neurons * steps * samples, 1)

    hidden = [s.name for s in program.slots if s.kind != OUTPUT]
    output = [s.name for s in program.slots if s.kind == OUTPUT]
    p_in = probability([INPUT], program.n_in)
    p_hidden, p_out = probability(hidden, program.n_hidden), probability(output, program.n_out)
    cycles = cycles_per_step(program, p_in, p_hidden, p_out, chip)
    clock = chip.cost("clock_hz")
    chip_steps = steps + program.latency
    worst = cycles_per_step(program, 1.0, 1.0, 1.0, chip)
    published = {}
    if "dynamic_inference_power_w" in chip.measured:
        power = chip.measured_value("dynamic_inference_power_w")
        published = {"published_power_w": power, "energy_per_inference_j": power * chip_steps * chip.limit("dt_s"),
                     "energy_source": chip.measured["dynamic_inference_power_w"]["source"]}
    return {**published, "cycles_per_step": cycles, "worst_case_cycles_per_step": worst,
            "step_time_s": cycles / clock, "latency_s": chip_steps * cycles / clock,
            "chip_steps": chip_steps, "clock_hz": clock,
            "realtime_at_dt": bool(worst * (1 + chip.cost("realtime_margin")) <= clock * chip.limit("dt_s")),
            "firing_probability": {"input": p_in, "hidden": p_hidden, "output": p_out}}
