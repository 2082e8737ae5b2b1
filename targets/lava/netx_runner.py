"""Run a netx ``.net`` file through lava-dl's own netx (lava-dl 0.6.0), in its own environment.

This is the external check of ``frontends.netx``: lava-dl reads the file
itself and builds its Lava network, which runs on
``Loihi2SimCfg(select_tag="fixed_pt")``; the spikes, u and v of every layer
come back in the contract of ``targets.loihi2.run`` (sample-local steps,
(C, H, W) order), so they compare one to one with the emulator's run of
``frontends.netx.read_netx(path)``. The input layer's u is 0 there (netx
drives it through its bias) and holds the drive in the program.

lava-dl's netx imports torch (< 2.4), for which Python 3.10 gets only the
CUDA-linked wheel from the registry: the environment is large (measured
5.6 GB, 2 min 40 s to install here) and opt-in: ``make lava-netx`` or
``python -m targets.lava.netx_runner setup``. It lives at ``.lava-dl-venv``
(``SNN_LAVA_DL_VENV``), apart from the Lava environment of
``targets.lava.environment``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from targets.lava import environment
from toolchain.results import LayerActivity, RunResult
from toolchain.errors import UserError
from toolchain.ir import INPUT
from toolchain.program import Program

WORKER = Path(__file__).with_name("netx_worker.py")
REQUIREMENTS = ("lava-nc==0.10.0", "lava-dl==0.6.0")
MARKER = ".snn-netx-installed"
HOW_TO_CREATE = "run `make lava-netx` (about 5.6 GB: lava-dl's torch)"


def venv_dir() -> Path:
    return Path(os.environ.get("SNN_LAVA_DL_VENV") or environment.REPO_ROOT / ".lava-dl-venv")


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def is_ready() -> bool:
    marker = venv_dir() / MARKER
    return venv_python().exists() and marker.exists() and marker.read_text().split() == list(REQUIREMENTS)


def create() -> Path:
    """Create the lava-dl environment unless it is complete already; returns its python."""
    if is_ready():
        return venv_python()
    python = environment.find_python310()
    if python is None:
        raise UserError(f"no Python 3.10 found. {environment.HOW_TO_PROVIDE_PYTHON}")
    target = venv_dir()
    print(f"creating the lava-dl environment {target} from {python} (installs {' '.join(REQUIREMENTS)}; "
          "about 5.6 GB)", flush=True)
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    for command in ([python, "-m", "venv", "--clear", str(target)], pip + ["--upgrade", "pip"],
                    pip + list(REQUIREMENTS), [str(target / "bin" / "python"), "-c", "import lava.lib.dl.netx"]):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"creating the lava-dl environment failed at `{' '.join(command[-3:])}`: {detail[0]}")
    (target / MARKER).write_text(" ".join(REQUIREMENTS) + "\n")
    print(f"lava-dl environment ready: {target}", flush=True)
    return venv_python()


def run_netx(path: str | Path, program: Program, inputs: np.ndarray, timeout: float | None = None) -> RunResult:
    """Run ``inputs`` through lava-dl's netx reading of ``path``; ``program`` is ``read_netx(path)``
    (for the input contract and the layer names). ``inputs``: (samples, *input_shape) held for every
    step or (samples, steps, *input_shape); an input layer takes one image per sample."""
    if not is_ready():
        raise UserError(f"the lava-dl environment is missing ({venv_dir()}); {HOW_TO_CREATE}")
    inputs = np.asarray(inputs)
    samples, steps = len(inputs), program.steps
    per_step = inputs.ndim == 2 + len(program.input_shape)
    flat = inputs.reshape(samples, steps if per_step else 1, int(np.prod(program.input_shape)))
    flat = np.broadcast_to(flat, (samples, steps, flat.shape[-1])).astype(np.int32)
    transform = program.metadata.get("netx", {}).get("input_transform")
    message_bits = max(s.message_bits for s in program.synapses if s.source == INPUT)
    if transform is not None and np.any(flat != flat[:, :1]):
        raise UserError("netx feeds its input layer one image per sample (through the bias); hold the input")
    work = Path(tempfile.mkdtemp(prefix="snn-netx-"))
    try:
        shutil.copyfile(path, work / "network.net")
        np.save(work / "inputs.npy", flat)
        (work / "config.json").write_text(json.dumps({
            "steps": steps, "layers": len(program.layers), "message_bits": 0 if transform else message_bits,
            "input_transform": transform}))
        limit = timeout or 300.0 + samples * steps / 20.0
        try:
            done = subprocess.run([str(venv_python()), str(WORKER), str(work)], capture_output=True, text=True,
                                  timeout=limit)
        except subprocess.TimeoutExpired:
            raise UserError(f"lava-dl's netx run timed out after {limit:.0f} s") from None
        if done.returncode != 0:
            lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()][-3:]
            raise UserError(f"lava-dl's netx run failed (exit status {done.returncode}): {' | '.join(lines)}")
        with np.load(work / "result.npz") as result:
            recorded = {key: result[key] for key in result.files}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _result(program, flat, recorded)


def _result(program: Program, flat: np.ndarray, recorded: dict) -> RunResult:
    samples, steps = flat.shape[:2]
    nonzero = flat != 0
    activity = {INPUT: LayerActivity(nonzero.sum((0, 1)).astype(np.int64), nonzero.sum((0, 2)).astype(np.int64))}
    trains, us, vs = {}, {}, {}
    for index, layer in enumerate(program.layers):
        spikes = recorded[f"spikes/{index}"].astype(np.uint8)
        trains[layer.name], us[layer.name], vs[layer.name] = spikes, recorded[f"u/{index}"], recorded[f"v/{index}"]
        activity[layer.name] = LayerActivity(spikes.sum((0, 1)).astype(np.int64), spikes.sum((0, 2)).astype(np.int64))
    output = trains[program.output].sum(1).astype(np.float64)
    return RunResult(output=output, activity=activity, samples=samples, steps=steps, trains=trains, u=us, v=vs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["setup"]:
        print("usage: python -m targets.lava.netx_runner setup", file=sys.stderr)
        return 2
    try:
        create()
    except UserError as exc:
        print(f"snn-compile: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
