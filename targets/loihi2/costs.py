"""Loihi cost model: energy and time per inference from a run's activity on a mapped program.

Two kinds of constants, each in the chip spec with its source:

- per operation (``costs``): Loihi 1's published pre-silicon figures
  (Davies et al., IEEE Micro 2018, Table 2), an *estimate* for Loihi 2,
  which has none published;
- measured on Loihi 2 silicon (``measured``): the static power of a chip,
  from lava-dl's PilotNet LIF benchmark (one chip, 0.232 W of 0.679 W).

Model, per time step (mean work per step over the run; per-core, per-step
activity is not recorded):

- every core works in parallel: synaptic ops x t_syn + active neuron updates
  x t_active + inactive updates x t_inactive (an update is active when the
  neuron fires) + spike messages it sends x t_spike (its output port
  serialises them);
- a step lasts as long as the busiest core, plus the slowest spike route
  (hops x hop time of the farthest message sent), plus barrier
  synchronisation;
- dynamic energy: synaptic ops x e_syn + updates x e_active/inactive + every
  spike message e_tile ("spikes") plus its hops ("routing", east-west and
  north-south priced apart). Messages between chips are priced as mesh hops
  (the board's link costs are not public);
- static energy: static power x chips used x the time the run takes, an
  inference holding the chips for ``steps`` step times (samples stream).

Latency of the first answer: (steps + pipeline latency) x step time;
throughput when samples stream: one inference per ``steps`` steps. What the
model leaves out: the host's input and output traffic, and the embedded
processors; measured throughput includes them, so this step time is a lower
bound on it.
"""

from __future__ import annotations

import numpy as np

from toolchain.traffic import core_loads, message_flows, node_coordinates, spike_counts
from toolchain.program import Program

ESTIMATE_NOTE = ("dynamic energy and time: estimate from Loihi 1 per-operation figures (Davies et al., IEEE Micro "
                 "2018; Loihi 2's are not public); static power: measured on Loihi 2 (lava-dl PilotNet benchmark)")


def loihi_costs(program: Program, activity: dict, samples: int, chip) -> dict:
    """Energy (pJ, dynamic and static), step time (ns) and its parts, latency, throughput, power and
    energy-delay product per inference. ``energy_pj`` is the dynamic energy; ``total_pj`` adds the static."""
    if program.mapping is None:
        raise ValueError("the Loihi cost model needs a mapped program (run the partition pass)")
    mapping, steps = program.mapping, program.steps
    cost = chip.cost
    loads = core_loads(mapping, program, activity)
    run_steps = samples * steps
    active = loads.spikes / run_steps
    inactive = loads.neurons - active
    synaptic = loads.synaptic_ops / run_steps

    chip_index = np.array([c.chip for c in mapping.cores])
    gx, gy, _ = node_coordinates(mapping.mesh, chip_index, np.array([c.x for c in mapping.cores]),
                                 np.array([c.y for c in mapping.cores]))
    flows = message_flows(program, mapping.cores, spike_counts(program, activity))
    sent = np.zeros(len(mapping.cores) + 1)  # messages per step each node sends; the host is last
    spike_pj, routing_pj = {}, {}
    route_ns = 0.0
    for syn in program.synapses:
        flow = flows[syn.name]
        messages = flow.messages / samples
        np.add.at(sent, flow.source, flow.messages / run_steps)
        dx, dy = np.abs(gx[flow.source] - gx[flow.target]), np.abs(gy[flow.source] - gy[flow.target])
        spike_pj[syn.target] = spike_pj.get(syn.target, 0.0) + float(messages.sum() * cost("spike_in_tile_pj"))
        routing_pj[syn.target] = routing_pj.get(syn.target, 0.0) + float(
            messages @ dx * cost("hop_east_west_pj") + messages @ dy * cost("hop_north_south_pj"))
        if (messages > 0).any():
            used = messages > 0
            route = cost("spike_in_tile_ns") + dx[used] * cost("hop_east_west_ns") + dy[used] * cost("hop_north_south_ns")
            route_ns = max(route_ns, float(route.max()))

    parts_ns = {"synaptic_ops": synaptic * cost("synaptic_op_ns"),
                "neuron_updates": active * cost("neuron_update_active_ns") + inactive * cost("neuron_update_inactive_ns"),
                "spike_output": sent[:-1] * cost("spike_in_tile_ns")}
    core_ns = sum(parts_ns.values())
    busiest = int(np.argmax(core_ns))
    synaptic_pj = synaptic * cost("synaptic_op_pj") * steps
    neuron_pj = (active * cost("neuron_update_active_pj") + inactive * cost("neuron_update_inactive_pj")) * steps

    layers = []
    for layer in program.layers:
        index, _ = mapping.layer_cores(layer.name)
        row = {"layer": layer.name, "cores": int(index.size), "synaptic_pj": float(synaptic_pj[index].sum()),
               "neuron_pj": float(neuron_pj[index].sum()), "spikes_pj": spike_pj.get(layer.name, 0.0),
               "routing_pj": routing_pj.get(layer.name, 0.0), "busiest_core_ns": float(core_ns[index].max())}
        row["compute_pj"] = row["synaptic_pj"] + row["neuron_pj"]
        row["messages_pj"] = row["spikes_pj"] + row["routing_pj"]
        row["energy_pj"] = row["compute_pj"] + row["messages_pj"]
        layers.append(row)
    energy_pj = sum(row["energy_pj"] for row in layers)
    for row in layers:
        row["share"] = row["energy_pj"] / energy_pj if energy_pj else 0.0

    barrier_ns = cost("barrier_sync_ns")
    step_ns = float(core_ns.max()) + route_ns + barrier_ns
    inference_s = steps * step_ns * 1e-9
    static_w = chip.measured_value("static_power_w_per_chip") * mapping.chips_used
    static_pj = static_w * inference_s * 1e12
    total_pj = energy_pj + static_pj
    latency_s = (steps + program.latency) * step_ns * 1e-9
    return {"note": ESTIMATE_NOTE, "energy_pj": energy_pj, "dynamic_pj": energy_pj, "static_pj": static_pj,
            "total_pj": total_pj,
            "energy_split_pj": {"synaptic_ops": sum(r["synaptic_pj"] for r in layers),
                                "neuron_updates": sum(r["neuron_pj"] for r in layers),
                                "spikes": sum(r["spikes_pj"] for r in layers),
                                "routing": sum(r["routing_pj"] for r in layers), "static": static_pj},
            "step_ns": step_ns, "busiest_core_ns": float(core_ns.max()), "route_ns": route_ns, "barrier_ns": barrier_ns,
            "step_split_ns": {**{k: float(v[busiest]) for k, v in parts_ns.items()}, "routing": route_ns,
                              "barrier": barrier_ns},
            "power_w": {"static": static_w, "dynamic": energy_pj * 1e-12 / inference_s,
                        "total": total_pj * 1e-12 / inference_s},
            "latency_s": latency_s, "throughput_per_s": 1.0 / inference_s,
            "edp_js": total_pj * 1e-12 * latency_s, "cores": len(mapping.cores), "chips": mapping.chips_used,
            "layers": layers}


def counter_energy(chip):
    """A stepping chip's counters -> joules, with the per-operation figures ``loihi_costs`` uses.

    The counters know operations and spikes but not routes, so every spike
    message is priced within its tile (no hops): a lower bound on message
    energy, which ``loihi_costs`` prices in full for a mapped program.
    Static energy needs the run's wall time on silicon, which counters lack.
    """
    synaptic, tile = chip.cost("synaptic_op_pj"), chip.cost("spike_in_tile_pj")
    active, inactive = chip.cost("neuron_update_active_pj"), chip.cost("neuron_update_inactive_pj")

    def energy(counters: dict) -> float:
        ops = counters["synaptic_ops"] + counters["input_ops"]
        spikes = counters["spikes"]
        return 1e-12 * (ops * synaptic + spikes * (active + tile) + (counters["neuron_updates"] - spikes) * inactive)

    return energy
