"""A board server in a subprocess, and the raw-socket pieces the HIL tests build requests from."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np

from targets.hil import protocol
from targets.hil.client import Board
from targets.loihi2.chip import Chip, run_samples
from targets.loihi2.emulator import run
from tests.paths import ROOT
from toolchain.program import Program


def start_serve(program_file, *extra) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "snn_compile.cli", "serve", str(program_file), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = process.stdout.readline()
    assert line.startswith("serving loihi2 on "), line + process.stderr.read()
    return process, line.split(" on ")[1].strip()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def connect(address: str) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(address[len("unix:"):])
        return sock
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=30)


def frame(kind: int, meta: dict, payload: bytes = b"") -> bytes:
    encoded = json.dumps(meta).encode()
    body = struct.pack("!I", len(encoded)) + encoded + payload
    return protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, kind, 0, len(body)) + body


def error_then_closed(sock: socket.socket) -> str:
    """The ERROR the board sends before closing the connection, and the proof that it closed it."""
    reply = protocol.receive(sock)
    assert reply.kind == protocol.ERROR
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:  # closed with a request of ours unread
        pass
    return reply.meta["error"]


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def serves_the_emulators_integers(address: str, program: Program, samples: np.ndarray, **board_options) -> None:
    expected = run(program, samples)
    with Board(address, **board_options) as board:
        readout, _ = run_samples(board, samples)
    assert np.array_equal(readout, expected.output)
    assert np.array_equal(readout, run_samples(Chip(program), samples)[0])


def libhdf5_crash(data: bytes) -> bytes:
    """One changed byte: the "format" attribute's variable-length string type becomes an invalid one,
    which libhdf5 dereferences and crashes on (SIGSEGV) as h5py opens the attribute."""
    at = data.index(b"format\x00\x00\x19") + 9  # name padded to 8 bytes, then the datatype: version/class, type
    return data[:at] + bytes([2]) + data[at + 1:]


def decompression_bomb(data: bytes, side: int = 16384, rows: int = 1024) -> bytes:
    """The first connection's weights replaced by a side x side int32 matrix of zeros (1 GiB for the default
    side) stored as gzip chunks of about 64 KiB each: written chunk by chunk, never held in memory."""
    chunk = zlib.compress(bytes(rows * side * 4), 9)

    def edit(f):
        del f["synapses/000/weights"]
        weights = f.create_dataset("synapses/000/weights", shape=(side, side), dtype="<i4", chunks=(rows, side),
                                   compression="gzip")
        for row in range(0, side, rows):
            weights.id.write_direct_chunk((row, 0), chunk)
    return edited(data, edit)


def huge_layer(data: bytes, neurons: int = 10**8) -> bytes:
    """The first layer declared with ``neurons`` neurons sharing one value per parameter: a reader that
    broadcasts them allocates about 28 bytes per neuron (2.8 GB for the default)."""
    def edit(f):
        layer = f["layers/000"]
        layer.attrs["meta"] = json.dumps({**json.loads(layer.attrs["meta"]), "shape": [neurons]})
        for name in list(layer):
            value = layer[name][0]
            del layer[name]
            layer[name] = value
    return edited(data, edit)


def proc_status(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def stop(process: subprocess.Popen) -> tuple[int, float, str]:
    """SIGTERM: (exit status, seconds to exit, stderr)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    status = process.wait(timeout=30)
    seconds = time.monotonic() - started
    stderr = process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    return status, seconds, stderr


def edited(data: bytes, edit) -> bytes:
    """``data`` (a program file) with ``edit(h5py.File)`` applied, as a client could send it."""
    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as f:
        edit(f)
    return buffer.getvalue()
