"""Loihi cost model: energy and time per inference from a run's activity on a mapped program.

Per-operation figures come from the chip spec's ``costs`` (Loihi 1's
published pre-silicon numbers, Davies et al. 2018: an *estimate* for
Loihi 2, which has none published). Model, per time step:

- every core works in parallel: its time is synaptic ops x t_syn + active
  neuron updates x t_active + inactive updates x t_inactive (an update is
  active when the neuron fires);
- a step lasts as long as the busiest core, plus the slowest spike route
  (hops x hop time of the farthest message sent), plus barrier synchronisation;
- energy: synaptic ops x e_syn + updates x e_active/inactive + every spike
  message e_tile plus its hops (east-west and north-south priced apart).
  Messages between chips are priced as mesh hops (the board's link costs are
  not public).

The busiest core is taken on mean per-step work over the run (per-core,
per-step activity is not recorded), so step time is a mean-load estimate.
Latency of the first answer: (steps + pipeline latency) x step time;
throughput when samples stream: one inference per ``steps`` steps.
"""

from __future__ import annotations

import numpy as np

from toolchain.mapping import message_flows, node_coordinates, spike_counts
from toolchain.program import Program

ESTIMATE_NOTE = "estimate from Loihi 1 per-operation figures (Davies et al., IEEE Micro 2018); Loihi 2's are not public"


def loihi_costs(program: Program, activity: dict, samples: int, chip) -> dict:
    """Energy (pJ), step time (ns), latency, throughput and energy-delay product per inference."""
    if program.mapping is None:
        raise ValueError("the Loihi cost model needs a mapped program (run the partition pass)")
    mapping, steps = program.mapping, program.steps
    cost = chip.cost
    loads = mapping.core_loads(program, activity)
    run_steps = samples * steps
    active = loads.spikes / run_steps
    inactive = loads.neurons - active
    synaptic = loads.synaptic_ops / run_steps
    core_ns = (synaptic * cost("synaptic_op_ns") + active * cost("neuron_update_active_ns")
               + inactive * cost("neuron_update_inactive_ns"))
    core_pj = (synaptic * cost("synaptic_op_pj") + active * cost("neuron_update_active_pj")
               + inactive * cost("neuron_update_inactive_pj")) * steps

    chip_index = np.array([c.chip for c in mapping.cores])
    gx, gy, _ = node_coordinates(mapping.mesh, chip_index, np.array([c.x for c in mapping.cores]),
                                 np.array([c.y for c in mapping.cores]))
    flows = message_flows(program, mapping.cores, spike_counts(program, activity))
    message_pj = {}
    route_ns = 0.0
    for syn in program.synapses:
        flow = flows[syn.name]
        messages = flow.messages / samples
        dx, dy = np.abs(gx[flow.source] - gx[flow.target]), np.abs(gy[flow.source] - gy[flow.target])
        message_pj[syn.target] = message_pj.get(syn.target, 0.0) + float(
            messages.sum() * cost("spike_in_tile_pj") + messages @ dx * cost("hop_east_west_pj")
            + messages @ dy * cost("hop_north_south_pj"))
        sent = messages > 0
        if sent.any():
            route = cost("spike_in_tile_ns") + dx[sent] * cost("hop_east_west_ns") + dy[sent] * cost("hop_north_south_ns")
            route_ns = max(route_ns, float(route.max()))

    layers = []
    for layer in program.layers:
        index, _ = mapping.layer_cores(layer.name)
        compute = float(core_pj[index].sum())
        layers.append({"layer": layer.name, "cores": int(index.size), "compute_pj": compute,
                       "messages_pj": message_pj.get(layer.name, 0.0),
                       "energy_pj": compute + message_pj.get(layer.name, 0.0),
                       "busiest_core_ns": float(core_ns[index].max())})
    energy_pj = sum(row["energy_pj"] for row in layers)
    for row in layers:
        row["share"] = row["energy_pj"] / energy_pj if energy_pj else 0.0
    step_ns = float(core_ns.max()) + route_ns + cost("barrier_sync_ns")
    latency_s = (steps + program.latency) * step_ns * 1e-9
    return {"note": ESTIMATE_NOTE, "energy_pj": energy_pj, "step_ns": step_ns,
            "busiest_core_ns": float(core_ns.max()), "route_ns": route_ns, "barrier_ns": cost("barrier_sync_ns"),
            "latency_s": latency_s, "throughput_per_s": 1.0 / (steps * step_ns * 1e-9),
            "edp_js": energy_pj * 1e-12 * latency_s, "cores": len(mapping.cores), "chips": mapping.chips_used,
            "layers": layers}


def counter_energy(chip):
    """A stepping chip's counters -> joules, with the per-operation figures ``loihi_costs`` uses.

    The counters know operations and spikes but not routes, so every spike
    message is priced within its tile (no hops): a lower bound on message
    energy, which ``loihi_costs`` prices in full for a mapped program.
    """
    synaptic, tile = chip.cost("synaptic_op_pj"), chip.cost("spike_in_tile_pj")
    active, inactive = chip.cost("neuron_update_active_pj"), chip.cost("neuron_update_inactive_pj")

    def energy(counters: dict) -> float:
        ops = counters["synaptic_ops"] + counters["input_ops"]
        spikes = counters["spikes"]
        return 1e-12 * (ops * synaptic + spikes * (active + tile) + (counters["neuron_updates"] - spikes) * inactive)

    return energy
