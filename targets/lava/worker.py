"""Run a compiled program on lava-nc 0.10.0 (``Loihi2SimCfg(select_tag="fixed_pt")``).

Executed by the Lava environment's Python 3.10, so it imports only numpy and
lava. ``python worker.py DIR`` reads ``DIR/network.json`` and
``DIR/arrays.npz`` (written by ``targets.lava.runner``), runs the samples in
batches, writes ``DIR/batch_NNNN.npz`` per batch and prints
``progress DONE TOTAL`` lines on stdout.

Mapping. The input is a RingBuffer source (graded payloads when the synapse
says so). Each layer becomes one LIFReset per process group (one du/dv/vth
and one weight exponent per incoming synapse, see
``targets.loihi2.emulator.process_groups``); each synapse becomes one Dense
per (source process, target process), so Lava's per-process sign mode,
clip, truncation and exponent apply exactly where the program says. A
convolution arrives as its explicit matrix: Lava's fixed-point Conv ignores
weight_exp and skips the sign-mode clip and truncation. When a source layer
is split into processes, the sign mode is passed explicitly, computed over
the whole target block, because each Dense then sees only part of the row.
A layer's current bias (Lava's LIF adds ``bias`` to v, not u) is an always-on
input: a second RingBuffer that sends 1 every step, into one Dense per
process group holding the 8-bit bias weights and their exponent, so it
enters the dendrite like any synapse.

Timing. Samples stream through one run with period ``steps``: layer k (k
connections from the input) sees sample s step j at time step
``s*steps + j + k + 1`` (Lava counts from 1), so its LIFReset resets with
``reset_offset = (k + 1) % steps``. A recurrent Dense would carry the
previous sample's last spikes into the next sample's first step, so the run
pauses at each such boundary and clears that Dense's buffer.

Probes. Each LIF model records its own spikes (and u, v when asked) and
saves them when the run ends: Lava's ``Var.get`` and ``Monitor`` move a long
recording element by element and are slower than the run, and a sink per
port adds an OS process that every step waits for. The model is Lava's
``PyLifResetModelBitAcc`` unchanged; the subclass only copies what each step
produced.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.resources import CPU
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.dense.process import Dense
from lava.proc.io.source import RingBuffer
from lava.proc.lif.models import PyLifResetModelBitAcc
from lava.proc.lif.process import LIFReset
from lava.utils.weightutils import determine_sign_mode

PROGRESS_CHUNK_STEPS = 512


class RecordedLIFReset(LIFReset):
    """LIFReset whose model records its spikes (and u, v) and saves them at ``total_steps``."""

    def __init__(self, *, total_steps: int, path: str, record_state: bool, **kwargs):
        super().__init__(**kwargs)
        self.proc_params["total_steps"] = total_steps
        self.proc_params["path"] = path
        self.proc_params["record_state"] = record_state


class RecordingLifResetModel(PyLifResetModelBitAcc):
    """Lava's ``PyLifResetModelBitAcc`` unchanged, plus a copy of what each step produced: the spikes
    (and u, v with ``record_state``), saved to ``path`` at ``total_steps`` (all from ``proc_params``).

    Bound to no process: Lava looks for a process's model in the process's own module, so each worker
    (this one and ``netx_worker.py``) binds a subclass to its LIFReset there.
    """

    implements_process = None  # inherited from Lava's model; a subclass's decorator sets its own

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.total_steps = proc_params["total_steps"]
        self.path = proc_params["path"]
        self.record_state = proc_params["record_state"]
        shape = (self.total_steps,) + tuple(proc_params["shape"])
        self.spikes = np.zeros(shape, dtype=np.uint8)
        self.u_trace = np.zeros(shape, dtype=np.int32) if self.record_state else None
        self.v_trace = np.zeros(shape, dtype=np.int32) if self.record_state else None

    def spiking_activation(self):
        spikes = super().spiking_activation()
        self.spikes[self.time_step - 1] = spikes
        return spikes

    def run_spk(self):
        super().run_spk()
        if self.record_state:
            self.u_trace[self.time_step - 1] = self.u
            self.v_trace[self.time_step - 1] = self.v
        if self.time_step == self.total_steps:
            state = {"u": self.u_trace, "v": self.v_trace} if self.record_state else {}
            np.savez(self.path, spikes=self.spikes, **state)


@implements(proc=RecordedLIFReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRecordedLifResetModel(RecordingLifResetModel):
    """The recording model of this worker's ``RecordedLIFReset``."""


def build(net: dict, arrays, inputs: np.ndarray, out_dir: Path, record: bool):
    """Lava processes for one batch: (source, recordings per layer, total steps, recurrent Dense to clear)."""
    steps, samples = net["steps"], len(inputs)
    total = samples * steps + net["max_depth"]
    data = np.zeros((inputs.shape[-1], total), dtype=np.int32)
    data[:, :samples * steps] = inputs.reshape(samples * steps, -1).T
    source = RingBuffer(data=data)
    always_on = RingBuffer(data=np.ones((1, total), dtype=np.int32)) \
        if any(layer["current_bias"] for layer in net["layers"]) else None
    groups, recordings = {}, {}
    for layer in net["layers"]:
        processes = []
        for g, group in enumerate(layer["groups"]):
            rows = arrays[f"{layer['name']}/rows/{g}"]
            path = out_dir / f"rec_{layer['index']}_{g}.npz"
            lif = RecordedLIFReset(shape=(len(rows),), du=group["du"], dv=group["dv"], vth=group["vth"],
                                   bias_mant=arrays[f"{layer['name']}/bias_mant"][rows],
                                   bias_exp=arrays[f"{layer['name']}/bias_exp"][rows],
                                   reset_interval=steps, reset_offset=(layer["depth"] + 1) % steps,
                                   total_steps=total, path=str(path), record_state=record or layer["probe_v"])
            recordings.setdefault(layer["name"], []).append((rows, path))
            processes.append((lif, rows))
            current_bias = arrays[f"{layer['name']}/current_bias_mant"][rows]
            if np.any(current_bias):
                dense = Dense(weights=current_bias[:, None], num_weight_bits=8,
                              weight_exp=int(arrays[f"{layer['name']}/current_bias_exp"][rows[0]]))
                always_on.s_out.connect(dense.s_in)
                dense.a_out.connect(lif.a_in)
        groups[layer["name"]] = processes
    clear_points = []
    for c, conn in enumerate(net["connections"]):
        weights = arrays[f"conn/{c}/weights"]
        exps = arrays[f"conn/{c}/weight_exp"]
        sources = [(source.s_out, np.arange(weights.shape[1]))] if conn["source"] == "input" else \
            [(lif.s_out, rows) for lif, rows in groups[conn["source"]]]
        for lif, rows in groups[conn["target"]]:
            block = weights[rows]
            explicit = {"sign_mode": determine_sign_mode(block)} if len(sources) > 1 else {}
            for port, cols in sources:
                dense = Dense(weights=block[:, cols], num_message_bits=conn["message_bits"],
                              weight_exp=int(exps[rows[0]]), num_weight_bits=conn["weight_bits"], **explicit)
                port.connect(dense.s_in)
                dense.a_out.connect(lif.a_in)
                if conn["recurrent"]:
                    clear_points.append((conn["depth"], dense))
    return source, recordings, total, clear_points


def run_batch(net: dict, arrays, inputs: np.ndarray, out_dir: Path, record: bool, report) -> dict:
    steps, samples = net["steps"], len(inputs)
    source, recordings, total, clear_points = build(net, arrays, inputs, out_dir, record)
    # before time step s*steps + depth + 1 a recurrent buffer must be empty (Lava counts from 1)
    pauses = {}
    for depth, dense in clear_points:
        for s in range(samples):
            pauses.setdefault(s * steps + depth, []).append(dense)
    stops = sorted(set(pauses) | set(range(PROGRESS_CHUNK_STEPS, total, PROGRESS_CHUNK_STEPS)) | {total})
    config = Loihi2SimCfg(select_tag="fixed_pt")
    done = 0
    try:
        for stop in stops:
            source.run(condition=RunSteps(num_steps=stop - done), run_cfg=config)
            done = stop
            for dense in pauses.get(stop, []):
                dense.a_buff.set(np.zeros(dense.a_buff.shape, dtype=np.int32))
            report(max(0, min(samples, (done - net["max_depth"]) // steps)))
    finally:
        source.stop()
    results = {}
    depth_of = {layer["name"]: layer["depth"] for layer in net["layers"]}
    size_of = {layer["name"]: layer["size"] for layer in net["layers"]}
    for name, entries in recordings.items():
        start = depth_of[name]
        for rows, path in entries:
            with np.load(path) as recorded:
                for kind in recorded.files:
                    window = recorded[kind][start:start + samples * steps].reshape(samples, steps, -1)
                    key = f"{kind}/{name}"
                    if key not in results:
                        results[key] = np.zeros((samples, steps, size_of[name]), dtype=window.dtype)
                    results[key][:, :, rows] = window
            path.unlink()
    return results


def main(work_dir: str) -> int:
    work = Path(work_dir)
    net = json.loads((work / "network.json").read_text())
    arrays = dict(np.load(work / "arrays.npz"))
    inputs = arrays.pop("inputs")
    steps, total = net["steps"], len(inputs)
    finished = 0
    for index, start in enumerate(range(0, total, net["batch_size"])):
        batch = inputs[start:start + net["batch_size"]]
        if batch.ndim == 2:  # held for every step
            batch = np.repeat(batch[:, None, :], steps, axis=1)

        def report(done_in_batch, offset=start):
            print(f"progress {offset + done_in_batch} {total}", flush=True)

        results = run_batch(net, arrays, batch, work, net["record"], report)
        np.savez(work / f"batch_{index:04d}.npz", **results)
        finished += len(batch)
    print(f"done {finished}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
