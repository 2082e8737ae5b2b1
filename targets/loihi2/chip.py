"""A stateful Loihi 2 chip that runs one time step at a time, as a board does.

The batch emulator (``targets.loihi2.emulator``) runs whole samples; a host
talking to a board instead streams input step by step, reads the output
spikes as they come, resets the chip and reads its counters. ``Chip`` is that
board, built from the emulator's own per-layer pieces, so both compute the
same integers.

Timing is the chip's real pipeline: every synapse connection delays by one
step, so a layer at depth k (``program.depth``) sees the input of chip step t
at step t + k, and the output answers ``program.latency`` steps late. A
connection that skips layers is delayed to its target's depth, as Loihi 2's
synaptic delays allow, so every input of a layer belongs to the same input
step. After ``reset()`` a layer at depth k stays in reset for its first k
steps (LIFReset with offset k): the bias does not act on a pipeline that has
not filled yet. With ``reset_interval`` each layer also resets every that
many steps, offset by its depth, so samples stream back to back with no
host reset in between, which is how one long Lava run serves many samples.

Lanes: ``lanes`` independent copies of the chip state advance together on
the same program (a board with several chips, or a batch on the host); each
step's input then has a lane axis.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from targets.chips import load_chip
from targets.loihi2.costs import counter_energy
from targets.loihi2.emulator import CompiledLayer, step_neurons, step_neurons_fast, wrap_int32
from toolchain.connectivity import Wiring
from toolchain.errors import UserError
from toolchain.ir import INPUT
from toolchain.program import Program

CostModel = Callable[[dict], float]
"""Counters -> energy in joules. The default is the Loihi estimate (``costs.counter_energy``)."""


@dataclass
class StepOutput:
    """What ``step`` returns. ``output``: output-layer spikes per step, (steps, [lanes,] neurons)
    uint8. ``spikes``/``u``/``v``: per probed layer, the same layout (u, v as int32)."""

    output: np.ndarray
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    u: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)


class Chip:
    """One emulated Loihi 2 board holding a program and its neuron state."""

    def __init__(self, program: Program | None = None, lanes: int = 1, reset_interval: int | None = None,
                 step_period: float = 1e-3, cost_model: CostModel | None = None):
        self.step_period = step_period
        self.cost_model = cost_model or counter_energy(load_chip("loihi2"))
        self.program = None
        if program is not None:
            self.load(program, lanes, reset_interval)

    # -- the board's calls ---------------------------------------------------

    def load(self, program: Program, lanes: int = 1, reset_interval: int | None = None) -> dict:
        """Hold ``program``; state and counters start from zero. Returns ``info()``."""
        if lanes < 1:
            raise UserError(f"lanes must be at least 1, got {lanes}")
        if reset_interval is not None and reset_interval < 1:
            raise UserError(f"reset_interval must be at least 1, got {reset_interval}")
        self.program, self.lanes, self.reset_interval = program, int(lanes), reset_interval
        self.depth = program.depth
        self.compiled = [CompiledLayer(program, layer) for layer in program.layers]
        self.delays = {id(entry): (1 if entry[0].recurrent else self.depth[cl.layer.name] - self.depth[entry[0].source])
                       for cl in self.compiled for entry in cl.feed + cl.recurrent}
        history = {INPUT: 1, **{layer.name: 1 for layer in program.layers}}
        for cl in self.compiled:
            for entry in cl.feed:
                history[entry[0].source] = max(history[entry[0].source], self.delays[id(entry)])
        self.history_length = history
        self.wirings = [(syn.source, Wiring(syn, program.shape_of(syn.source), program.shape_of(syn.target)))
                        for syn in program.synapses]
        self.reset()
        self.counters_total = self._zero_counters()
        self.last_step_seconds = 0.0
        return self.info()

    def reset(self) -> None:
        """Zero every u, v and the synapses' delay buffers; the pipeline refills from the next step."""
        self._require_program()
        self.t = 0
        self.history = {name: deque([torch.zeros(self.lanes, self._size(name))] * length, maxlen=length)
                        for name, length in self.history_length.items()}
        self.u, self.v = {}, {}
        for cl in self.compiled:
            self._reset_layer(cl)

    def step(self, inputs, probe: bool | Iterable[str] = False) -> StepOutput:
        """Advance one step per entry of ``inputs``: (steps, *input_shape) for one lane, or
        (steps, lanes, *input_shape). Integers in [0, input_levels]. ``probe``: True for every
        layer, or layer names, whose spikes, u and v come back per step."""
        program = self._require_program()
        x, single_lane = self._check_inputs(inputs)
        probed = self._probed(probe)
        n = len(x)
        out_size = program.layer(program.output).size
        output = np.zeros((n, self.lanes, out_size), dtype=np.uint8)
        traces = {name: {k: np.zeros((n, self.lanes, self._size(name)), dtype=d)
                         for k, d in (("spikes", np.uint8), ("u", np.int32), ("v", np.int32))}
                  for name in probed}
        counts = {name: np.zeros(self._size(name)) for name in self.history}
        started = time.perf_counter()
        for i in range(n):
            activity = {INPUT: torch.from_numpy(x[i])}
            for cl in self.compiled:
                name = cl.layer.name
                spikes = self._step_layer(cl)
                activity[name] = spikes.to(torch.float32)
                if name == program.output:
                    output[i] = spikes.numpy()
                if name in traces:
                    traces[name]["spikes"][i] = spikes.numpy()
                    traces[name]["u"][i] = self.u[name].to(torch.int32).numpy()
                    traces[name]["v"][i] = self.v[name].to(torch.int32).numpy()
            for name, values in activity.items():
                self.history[name].appendleft(values)
                counts[name] += (values != 0).sum(0).numpy()
            self.t += 1
        self._count(n, counts, time.perf_counter() - started)
        squeeze = (lambda a: a[:, 0]) if single_lane else (lambda a: a)
        return StepOutput(output=squeeze(output),
                          spikes={k: squeeze(t["spikes"]) for k, t in traces.items()},
                          u={k: squeeze(t["u"]) for k, t in traces.items()},
                          v={k: squeeze(t["v"]) for k, t in traces.items()})

    def counters(self) -> dict:
        """Totals since ``load``: steps, spikes (per layer and total), synaptic operations
        (binary spikes x nonzero outgoing synapses), input operations (nonzero graded input
        values x nonzero outgoing synapses), neuron updates, compute time and the real-time
        factor (emulated time at ``step_period`` per step / compute time) and the cost model's
        energy."""
        self._require_program()
        c = dict(self.counters_total, spikes_per_layer=dict(self.counters_total["spikes_per_layer"]))
        c["step_period"] = self.step_period
        c["real_time_factor"] = (c["steps"] * self.step_period / c["compute_seconds"]
                                 if c["compute_seconds"] > 0 else None)
        c["energy_joules"] = self.cost_model(c)
        return c

    def info(self) -> dict:
        """The I/O contract a host needs to drive the chip."""
        program = self._require_program()
        return {"chip": program.chip, "input_shape": list(program.input_shape), "input_levels": program.input_levels,
                "steps": program.steps, "latency": program.latency, "output": program.output,
                "readout": program.readout, "lanes": self.lanes, "reset_interval": self.reset_interval,
                "output_v_scale": program.layer(program.output).v_scale.tolist(),
                "layers": {layer.name: {"shape": list(layer.shape), "depth": self.depth[layer.name]}
                           for layer in program.layers}}

    # -- internals -----------------------------------------------------------

    def _step_layer(self, cl: CompiledLayer) -> torch.Tensor:
        name, k = cl.layer.name, self.depth[cl.layer.name]
        if self.t < k:
            return torch.zeros(self.lanes, cl.layer.size, dtype=torch.bool)
        restarts = self.t == k or (self.reset_interval is not None and (self.t - k) % self.reset_interval == 0)
        if restarts:
            self._reset_layer(cl)
        exact = cl.exact_path
        a_in = torch.zeros(self.lanes, cl.layer.size, dtype=torch.int64 if exact else torch.float64)
        entries = cl.feed if restarts else cl.feed + cl.recurrent
        for entry in entries:
            source_activity = self.history[entry[0].source][self.delays[id(entry)] - 1]
            contribution = cl.synaptic_input(entry, source_activity)
            a_in = wrap_int32(a_in + contribution) if exact else a_in + contribution
        if cl.constant_input is not None:
            a_in = wrap_int32(a_in + cl.constant_input) if exact else a_in + cl.constant_input
        step = step_neurons if exact else step_neurons_fast
        self.u[name], self.v[name], spikes = step(cl, self.u[name], self.v[name], a_in)
        return spikes

    def _reset_layer(self, cl: CompiledLayer) -> None:
        dtype = torch.int64 if cl.exact_path else torch.float64
        self.u[cl.layer.name] = torch.zeros(self.lanes, cl.layer.size, dtype=dtype)
        self.v[cl.layer.name] = torch.zeros(self.lanes, cl.layer.size, dtype=dtype)

    def _count(self, steps: int, counts: dict[str, np.ndarray], seconds: float) -> None:
        c = self.counters_total
        c["steps"] += steps
        c["lane_steps"] += steps * self.lanes
        c["neuron_updates"] += steps * self.lanes * sum(layer.size for layer in self.program.layers)
        c["compute_seconds"] += seconds
        self.last_step_seconds = seconds
        for layer in self.program.layers:
            c["spikes_per_layer"][layer.name] += int(counts[layer.name].sum())
        c["spikes"] = sum(c["spikes_per_layer"].values())
        for source, wiring in self.wirings:
            ops = int(round(wiring.synaptic_ops_per_target(counts[source]).sum()))
            c["input_ops" if source == INPUT else "synaptic_ops"] += ops

    def _zero_counters(self) -> dict:
        return {"steps": 0, "lane_steps": 0, "spikes": 0, "synaptic_ops": 0, "input_ops": 0, "neuron_updates": 0,
                "compute_seconds": 0.0, "spikes_per_layer": {layer.name: 0 for layer in self.program.layers}}

    def _check_inputs(self, inputs) -> tuple[np.ndarray, bool]:
        program = self.program
        x = np.asarray(inputs)
        shape = tuple(program.input_shape)
        single_lane = x.ndim == 1 + len(shape)
        if single_lane:
            x = x[:, None]
        if x.ndim != 2 + len(shape) or tuple(x.shape[2:]) != shape or x.shape[1] != self.lanes:
            raise UserError(f"inputs of shape {np.shape(inputs)}: expected (steps, {', '.join(map(str, shape))}) "
                            f"or (steps, {self.lanes}, {', '.join(map(str, shape))}) for {self.lanes} lane(s)")
        program.check_inputs(x)
        if single_lane and self.lanes != 1:
            raise UserError(f"the chip has {self.lanes} lanes; inputs need a lane axis")
        return x.reshape(len(x), self.lanes, -1).astype(np.float32), single_lane

    def _probed(self, probe) -> list[str]:
        names = [layer.name for layer in self.program.layers]
        if probe is True:
            return names
        if not probe:
            return []
        unknown = [p for p in probe if p not in names]
        if unknown:
            raise UserError(f"cannot probe {', '.join(unknown)}: layers are {', '.join(names)}")
        return list(probe)

    def _size(self, name: str) -> int:
        return int(np.prod(self.program.shape_of(name)))

    def _require_program(self) -> Program:
        if self.program is None:
            raise UserError("no program loaded on the chip; call load(program) first")
        return self.program


def run_samples(chip, inputs: np.ndarray, probe: bool | Iterable[str] = False):
    """Classify ``inputs`` (samples, *input_shape) held for ``steps`` steps, or (samples, steps,
    *input_shape) given per step, on anything with
    the chip's calls (a ``Chip`` or a ``targets.hil.client.Board``): per group of ``lanes``
    samples, reset, feed ``steps`` steps then ``latency`` zero steps, read the output.

    Returns (readout, traces): readout (samples, classes) as the batch emulator gives it;
    traces per probed layer, each aligned to the sample's own steps (the pipeline shift
    removed): {"spikes", "u", "v"} -> (samples, steps, neurons)."""
    info = chip.info()
    steps, latency, lanes, shape = info["steps"], info["latency"], info["lanes"], tuple(info["input_shape"])
    probed = list(info["layers"]) if probe is True else list(probe or [])
    if info["readout"] == "membrane" and info["output"] not in probed:
        probed.append(info["output"])
    inputs = np.asarray(inputs)
    if inputs.ndim == 1 + len(shape):
        inputs = np.broadcast_to(inputs[:, None], (len(inputs), steps) + inputs.shape[1:])
    readouts, traces = [], {}
    for start in range(0, len(inputs), lanes):
        batch = inputs[start:start + lanes]
        n = len(batch)
        padded = np.zeros((steps + latency, lanes) + shape, dtype=batch.dtype)
        padded[:steps, :n] = np.moveaxis(batch.reshape((n, steps) + shape), 0, 1)
        chip.reset()
        result = chip.step(padded if lanes > 1 else padded[:, 0], probe=probed)
        lane_axis = (lambda a: a) if lanes > 1 else (lambda a: a[:, None])
        if info["readout"] == "spike_count":
            readouts.append(lane_axis(result.output)[latency:latency + steps, :n].sum(0).astype(np.float64))
        else:
            v = lane_axis(result.v[info["output"]])[latency + steps - 1, :n]
            readouts.append(v / np.asarray(info["output_v_scale"]))
        for name in result.spikes:
            depth = info["layers"][name]["depth"]
            for kind in ("spikes", "u", "v"):
                aligned = np.moveaxis(lane_axis(getattr(result, kind)[name])[depth:depth + steps, :n], 0, 1)
                traces.setdefault(name, {}).setdefault(kind, []).append(aligned)
    traces = {name: {kind: np.concatenate(parts) for kind, parts in by_kind.items()}
              for name, by_kind in traces.items()}
    return np.concatenate(readouts), traces
