"""Run a netx network through lava-dl's own ``netx.hdf5.Network`` on ``Loihi2SimCfg(select_tag="fixed_pt")``.

Executed by the lava-dl environment's Python 3.10 (lava-nc 0.10.0, lava-dl
0.6.0). ``python netx_worker.py DIR`` reads ``DIR/network.net``,
``DIR/config.json`` and ``DIR/inputs.npy`` (written by
``targets.lava.netx_runner``) and writes ``DIR/result.npz``: per layer the
spikes, u and v of every sample step, in the program's (C, H, W) order.

netx reads the file and builds every process itself. The only substitution:
its ``LIFReset`` is replaced by a subclass whose model is Lava's
``PyLifResetModelBitAcc`` unchanged plus a copy of each step's state
(``worker.RecordingLifResetModel``, shared with the program worker), so the
states come back without probing Lava element by element.

Input. A network that starts with an input layer takes images through that
layer's ``bias_mant`` (set per sample, as netx's users do); otherwise a
RingBuffer sends the spikes (or graded payloads, ``input_message_bits``) into
``net.inp``. A recurrent synapse's buffer is emptied where a new sample starts
(the program's recurrence starts each sample empty, as ``worker.py`` does). Timing: layer i sees sample s step j at Lava time step
``s*steps + j + 1 + d_i`` with d_i = i, plus 1 without an input layer (the
first Dense's delay); ``reset_offset`` is chosen so that each layer's LIFReset
clears it at that step (netx adds one per layer).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from lava.lib.dl import netx
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.resources import CPU
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.io.source import RingBuffer
from lava.proc.lif.process import LIFReset
from worker import RecordingLifResetModel  # worker.py beside this file: both run as scripts from here


class RecordedLIFReset(LIFReset):
    """netx's LIFReset, numbered in the order netx creates its layers, recording every step."""

    total_steps = 0
    out_dir = ""
    created = 0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        index = RecordedLIFReset.created
        RecordedLIFReset.created += 1
        self.proc_params["total_steps"] = RecordedLIFReset.total_steps
        self.proc_params["path"] = str(Path(RecordedLIFReset.out_dir) / f"layer_{index}.npz")
        self.proc_params["record_state"] = True


@implements(proc=RecordedLIFReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRecordedLIFReset(RecordingLifResetModel):
    """The recording model of netx's layers."""


def to_program_order(trace: np.ndarray) -> np.ndarray:
    """(T, x, y, z) Lava order -> (T, z*y*x) in the program's C-order (C, H, W) flattening."""
    if trace.ndim == 4:
        trace = trace.transpose(0, 3, 2, 1)
    return trace.reshape(len(trace), -1)


def set_input_bias(net, drive: np.ndarray, transform, first_run: bool) -> None:
    """The input layer's bias_mant for one image, as netx's users set it (program drive + B - W)."""
    weight, bias = transform
    lava_shape = net.in_layer.neuron.bias_mant.shape
    program_order = drive.reshape(tuple(reversed(lava_shape))) + bias - weight
    bias_mant = program_order.transpose(tuple(reversed(range(len(lava_shape))))).astype(np.int32)
    if first_run:
        net.in_layer.neuron.bias_mant.init = bias_mant
    else:
        net.in_layer.neuron.bias_mant.set(bias_mant)


def main(work_dir: str) -> int:
    work = Path(work_dir)
    config = json.loads((work / "config.json").read_text())
    inputs = np.load(work / "inputs.npy")  # (samples, steps, inputs), program order
    samples, steps = inputs.shape[0], config["steps"]
    has_input_layer = config["input_transform"] is not None
    first_delay = 0 if has_input_layer else 1
    layers = config["layers"]
    total = samples * steps + first_delay + layers - 1
    RecordedLIFReset.total_steps, RecordedLIFReset.out_dir = total, str(work)
    netx.hdf5.LIFReset = RecordedLIFReset
    net = netx.hdf5.Network(net_config=str(work / "network.net"), reset_interval=steps,
                            reset_offset=first_delay, input_message_bits=config["message_bits"])
    config_run = Loihi2SimCfg(select_tag="fixed_pt")
    # before Lava time step s*steps + d_i + 1 a recurrent buffer must be empty, as at the first sample
    clear_at = {}
    for i, block in enumerate(net.layers):
        if hasattr(block, "synapse_rec"):
            for s in range(1, samples):
                clear_at.setdefault(s * steps + i + first_delay, []).append(block.synapse_rec)
    bias_at = {s * steps: s for s in range(samples)} if has_input_layer else {}
    if not has_input_layer:
        data = np.zeros((inputs.shape[-1], total), dtype=np.int32)
        data[:, :samples * steps] = inputs.reshape(samples * steps, -1).T
        source = RingBuffer(data=data)
        source.s_out.connect(net.inp)
    done = 0
    for stop in sorted(set(clear_at) | set(bias_at) | {total}):
        if stop > done:
            net.run(condition=RunSteps(num_steps=stop - done), run_cfg=config_run)
            done = stop
        for synapse in clear_at.get(stop, []):
            synapse.a_buff.set(np.zeros(synapse.a_buff.shape, dtype=np.int32))
        if stop in bias_at:
            set_input_bias(net, inputs[bias_at[stop], 0], config["input_transform"], first_run=stop == 0)
    net.stop()
    results = {}
    for i in range(layers):
        with np.load(work / f"layer_{i}.npz") as recorded:
            start = i + first_delay
            for kind in ("spikes", "u", "v"):
                window = to_program_order(recorded[kind])[start:start + samples * steps]
                results[f"{kind}/{i}"] = window.reshape(samples, steps, -1)
    np.savez(work / "result.npz", **results)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
