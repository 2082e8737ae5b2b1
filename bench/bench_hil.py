"""Hardware-in-the-loop cost: stepping a chip over a socket against stepping it in process.

For two MLP-shaped programs (digits 64-128-10, Fashion-MNIST 784-128-10;
random weights, since the time does not depend on what was learned) and
three ways of driving them (closed loop: one step per request; blocks of 16
steps; a batch of 64 lanes for 18 steps), prints the median per-step latency
in process (``Chip``), over TCP on localhost and over a Unix socket (a
``snn-compile serve`` process each), their ratio to in process, and the
throughput in lane-steps per second. Everything runs on one torch thread,
as the server does.

    .venv/bin/python bench/bench_hil.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from targets.hil.client import Board
from targets.loihi2.chip import Chip
from toolchain.ir import INPUT
from toolchain.program import Layer, Program, Synapses

MODES = {"closed loop (1 step, 1 lane)": (1, 1), "block (16 steps, 1 lane)": (16, 1),
         "batch (18 steps, 64 lanes)": (18, 64)}


def mlp_program(inputs: int, hidden: int = 128, classes: int = 10) -> Program:
    rng = np.random.default_rng(0)

    def layer(name, n):
        return Layer(name, (n,), du=4095, dv=410, vth=2000, bias_mant=0, bias_exp=0, v_scale=1.0)
    synapses = [Synapses(INPUT, "hidden", rng.integers(-127, 128, (hidden, inputs)) * 2, np.zeros(hidden), 8,
                         message_bits=8),
                Synapses("hidden", "out", rng.integers(-127, 128, (classes, hidden)) * 2, np.full(classes, 2), 8)]
    return Program(chip="loihi2", input_shape=(inputs,), input_levels=255, steps=16,
                   layers=[layer("hidden", hidden), layer("out", classes)], synapses=synapses, output="out")


def per_step_latencies(board, program: Program, steps: int, lanes: int, repeats: int) -> list[float]:
    """Seconds per emulated step of each ``step`` request, as the host measures it."""
    board.load(program, lanes=lanes)
    shape = (steps,) + ((lanes,) if lanes > 1 else ()) + program.input_shape
    inputs = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    board.step(inputs)  # warm up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        board.step(inputs)
        timings.append((time.perf_counter() - started) / steps)
    return timings


def start_server(args: list[str]) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "snn_compile.cli", "serve", *args], stdout=subprocess.PIPE,
                               text=True)
    line = process.stdout.readline()
    if not line.startswith("serving"):
        process.kill()
        raise SystemExit(f"the server did not start: {line}")
    return process, line.split(" on ")[1].strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        programs = {"digits 64-128-10": mlp_program(64), "fmnist 784-128-10": mlp_program(784)}
        first = programs["digits 64-128-10"].save(Path(tmp) / "program.h5")
        servers = [start_server([str(first), "--port", "0"]),
                   start_server([str(first), "--unix", str(Path(tmp) / "board.sock")])]
        try:
            boards = {"in process": Chip(), "tcp": Board(servers[0][1]), "unix": Board(servers[1][1])}
            for program_name, program in programs.items():
                for mode, (steps, lanes) in MODES.items():
                    medians = {name: statistics.median(per_step_latencies(board, program, steps, lanes, args.repeats))
                               for name, board in boards.items()}
                    rows.append((program_name, mode, lanes, medians))
                    print(f"measured {program_name}, {mode}", file=sys.stderr, flush=True)
            for name in ("tcp", "unix"):
                boards[name].shutdown()
        finally:
            for process, _ in servers:
                if process.poll() is None:
                    process.terminate()
                process.wait(timeout=30)
    print("| program | mode | in process us/step | TCP us/step | TCP / in process | Unix us/step | "
          "Unix / in process | in process lane-steps/s | TCP lane-steps/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for program_name, mode, lanes, m in rows:
        local, tcp, unix = m["in process"], m["tcp"], m["unix"]
        print(f"| {program_name} | {mode} | {local * 1e6:.0f} | {tcp * 1e6:.0f} | {tcp / local:.2f} | "
              f"{unix * 1e6:.0f} | {unix / local:.2f} | {lanes / local:,.0f} | {lanes / tcp:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
