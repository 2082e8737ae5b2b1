"""Run a compiled program on Intel's Lava, through a worker in Lava's own environment.

The main process and Lava never share an interpreter (Lava needs Python 3.10
and numpy < 2). The narrow interface: the program's integer arrays and the
inputs go to a temporary directory as ``network.json`` + ``arrays.npz``;
``worker.py`` runs them under the Lava environment's Python and writes the
spike trains (and u, v) back per batch. Results have the same contract as
``targets.loihi2.run``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from targets.lava import environment
from targets.loihi2.emulator import neuron_weight_exp, process_groups
from toolchain.results import LayerActivity, RunResult
from toolchain.errors import UserError
from toolchain.ir import INPUT
from toolchain.program import Program, Synapses
from toolchain.synaptic import accumulate

WORKER = Path(__file__).with_name("worker.py")
STDERR_LINES = 6


def default_timeout(samples: int, steps: int) -> float:
    """Seconds: SNN_LAVA_TIMEOUT, else generous for Lava's few hundred steps per second."""
    if os.environ.get("SNN_LAVA_TIMEOUT"):
        return float(os.environ["SNN_LAVA_TIMEOUT"])
    return 300.0 + samples * steps / 20.0


def check_expressible(program: Program, inputs: np.ndarray):
    """Refuse, in one line, what the Lava mapping cannot run."""
    if program.chip != "loihi2":
        raise UserError(f"Lava runs Loihi programs; this one was compiled for {program.chip!r}")
    try:
        program.depth
    except (KeyError, ValueError):
        raise UserError("Lava needs every layer fed from the input: a layer is reachable only "
                        "through its own recurrent connection") from None
    program.check_inputs(inputs)
    if program.input_levels >= 2**31:
        raise UserError("Lava's RingBuffer carries int32 payloads; input levels must stay below 2^31")
    subtracting = [layer.name for layer in program.layers if layer.reset == "subtract"]
    if subtracting:
        raise UserError(f"layer {subtracting[0]!r} resets by subtraction and Lava 0.10 has no such process "
                        "(its LIF resets to zero); run it on --target loihi2 or compile with --reset zero")


def explicit_matrix(program: Program, syn: Synapses) -> np.ndarray:
    """Dense (target size, source size) weights; a convolution as its unfolded matrix."""
    if syn.kind == "dense":
        return syn.weights
    in_shape = program.shape_of(syn.source)
    n_in = int(np.prod(in_shape))
    basis = torch.eye(n_in, dtype=torch.float32)
    kernel = torch.as_tensor(syn.weights, dtype=torch.float32)
    columns = accumulate("conv", kernel, basis, in_shape, syn.stride, syn.padding)
    return columns.T.round().to(torch.int32).numpy()


def write_network(program: Program, inputs: np.ndarray, record: bool, batch_size: int, work: Path):
    depth = program.depth
    layers, connections, arrays = [], [], {}
    flat_inputs = inputs.reshape(inputs.shape[:-len(program.input_shape)] + (-1,))
    arrays["inputs"] = flat_inputs.astype(np.int32)
    for index, layer in enumerate(program.layers):
        groups = process_groups(program, layer)
        layers.append({"name": layer.name, "index": index, "size": layer.size, "depth": depth[layer.name],
                       "probe_v": layer.name == program.output and program.readout == "membrane",
                       "current_bias": layer.has_current_bias,
                       "groups": [{"du": int(layer.du[rows[0]]), "dv": int(layer.dv[rows[0]]),
                                   "vth": int(layer.vth[rows[0]])} for rows in groups]})
        for g, rows in enumerate(groups):
            arrays[f"{layer.name}/rows/{g}"] = rows
        arrays[f"{layer.name}/bias_mant"] = layer.bias_mant
        arrays[f"{layer.name}/bias_exp"] = layer.bias_exp
        arrays[f"{layer.name}/current_bias_mant"] = layer.current_bias_mant
        arrays[f"{layer.name}/current_bias_exp"] = layer.current_bias_exp
    for c, syn in enumerate(program.synapses):
        target = program.layer(syn.target)
        connections.append({"source": "input" if syn.source == INPUT else syn.source, "target": syn.target,
                             "depth": depth[syn.target], "message_bits": int(syn.message_bits),
                             "weight_bits": int(syn.weight_bits), "recurrent": syn.recurrent})
        arrays[f"conn/{c}/weights"] = explicit_matrix(program, syn)
        arrays[f"conn/{c}/weight_exp"] = neuron_weight_exp(syn, target)
    net = {"steps": program.steps, "max_depth": max(depth.values()), "batch_size": batch_size,
           "record": record, "layers": layers, "connections": connections}
    (work / "network.json").write_text(json.dumps(net))
    np.savez(work / "arrays.npz", **arrays)


def _kill_group(process: subprocess.Popen):
    """The worker's whole session: Lava forks one OS process per Lava process."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _last_lines(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(ln.strip() for ln in lines[-STDERR_LINES:]) or "no output"


def run_worker(work: Path, samples: int, steps: int, progress: str | None) -> None:
    """Run the worker to completion, feeding a progress bar; never leaves a process behind."""
    if not environment.is_ready():
        raise UserError(f"the Lava environment is missing ({environment.venv_dir()}); {environment.HOW_TO_CREATE}")
    timeout = default_timeout(samples, steps)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=samples, desc=progress, unit="sample", leave=False, disable=None)
    stderr_path = work / "worker.stderr"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen([str(environment.venv_python()), str(WORKER), str(work)],
                                   stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(ln) for ln in process.stdout], daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    done = 0

    def handle(line: str):
        nonlocal done
        if line.startswith("progress "):
            current = int(line.split()[1])
            if bar is not None:
                bar.update(current - done)
            done = current

    try:
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise UserError(f"the Lava worker timed out after {timeout:.0f} s ({done} of {samples} "
                                "samples done); raise SNN_LAVA_TIMEOUT for long runs")
            try:
                handle(lines.get(timeout=0.2))
            except queue.Empty:
                pass
        returncode = process.returncode
        _kill_group(process)  # children may hold stdout open; the reader ends when they are gone
        reader.join(timeout=5)
        while not lines.empty():
            handle(lines.get_nowait())
    finally:
        _kill_group(process)
        if bar is not None:
            bar.close()
    if returncode != 0:
        detail = _last_lines(stderr_path)
        if "ModuleNotFoundError" in detail or "ImportError" in detail:
            raise UserError(f"the Lava environment {environment.venv_dir()} is broken ({detail}); remove it "
                            f"and {environment.HOW_TO_CREATE}")
        raise UserError(f"the Lava worker failed after {done} of {samples} samples (exit status {returncode}): "
                        f"{detail}")


def run(program: Program, inputs: np.ndarray, record: bool = False, batch_size: int = 256,
        progress: str | None = None) -> RunResult:
    """Run ``inputs`` (samples, *input_shape) held for every step, or (samples, steps,
    *input_shape) per step, on Lava; the same contract as ``targets.loihi2.run``."""
    inputs = np.asarray(inputs)
    check_expressible(program, inputs)
    samples, steps = len(inputs), program.steps
    work = Path(tempfile.mkdtemp(prefix="snn-lava-"))
    try:
        write_network(program, inputs, record, batch_size, work)
        run_worker(work, samples, steps, progress)
        parts = [dict(np.load(path)) for path in sorted(work.glob("batch_*.npz"))]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if sum(len(p[f"spikes/{program.output}"]) for p in parts) != samples:
        raise UserError("the Lava worker ended without returning every sample")
    return _result(program, inputs, parts, record)


def _result(program: Program, inputs: np.ndarray, parts: list[dict], record: bool) -> RunResult:
    samples, steps = len(inputs), program.steps
    flat = inputs.reshape(samples, -1, int(np.prod(program.input_shape)))
    nonzero = np.broadcast_to(flat != 0, (samples, steps, flat.shape[-1]))
    activity = {INPUT: LayerActivity(nonzero.sum((0, 1)).astype(np.int64), nonzero.sum((0, 2)).astype(np.int64))}
    trains, us, vs = {}, {}, {}
    for layer in program.layers:
        spikes = np.concatenate([p[f"spikes/{layer.name}"] for p in parts])
        activity[layer.name] = LayerActivity(spikes.sum((0, 1)).astype(np.int64),
                                             spikes.sum((0, 2)).astype(np.int64))
        if record:
            trains[layer.name] = spikes
            us[layer.name] = np.concatenate([p[f"u/{layer.name}"] for p in parts])
            vs[layer.name] = np.concatenate([p[f"v/{layer.name}"] for p in parts])
    out = program.layer(program.output)
    if program.readout == "spike_count":
        output = np.concatenate([p[f"spikes/{out.name}"] for p in parts]).sum(1).astype(np.float64)
    else:
        v_last = np.concatenate([p[f"v/{out.name}"][:, -1] for p in parts]).astype(np.float64)
        output = v_last / out.v_scale
    return RunResult(output=output, activity=activity, samples=samples, steps=steps,
                     trains=trains, u=us, v=vs)
