"""A soak of the board server: a few hundred clients of every kind against one `snn-compile serve`.

Bounded in count (and so in time, about 20 s): short-lived correct clients, slow clients that send their
request a few bytes at a time, idle clients, malformed, oversized and hostile requests, large legal
requests that the board buffers and frees, and clients killed with SIGKILL mid-request. Afterwards the
board holds the threads, descriptors and (within RSS_TOLERANCE) memory it started with, a correct client
gets the emulator's integers, and SIGTERM ends it with status 0 within 2 s, leaving no process and no
socket file.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from targets.hil import protocol
from targets.hil.client import Board, BoardError
from targets.loihi2.chip import run_samples
from targets.loihi2.emulator import run
from tests.board import (connect, decompression_bomb, error_then_closed, frame, gone, huge_layer, libhdf5_crash,
                         proc_status, serves_the_emulators_integers, start_serve, stop, wait_for)
from tests.builders import conv_skip_program

pytestmark = pytest.mark.usefixtures("one_thread")

RSS_TOLERANCE = 24 << 20  # allocator slack; one leaked 32 MiB request buffer would already exceed it
KILLED_CLIENT = """\
import socket, sys, time
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sock.sendall(sys.stdin.buffer.read())
print("sent", flush=True)
time.sleep(60)
"""


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise KeyError("Threads")


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled(pid: int) -> tuple[int, int]:
    """(threads, descriptors) of the board once its last connection has ended."""
    last = None
    for _ in range(50):
        now = (_threads(pid), _descriptors(pid))
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    raise AssertionError(f"the board's threads and descriptors do not settle: {now}")


def test_the_board_survives_a_soak_of_short_slow_hostile_and_killed_clients(tmp_path):
    program = conv_skip_program()
    program_bytes = program.to_bytes()
    samples = np.random.default_rng(1).integers(0, 16, (2, 7, 1, 4, 4))
    expected = run(program, samples).output
    socket_path = tmp_path / "board.sock"
    process, address = start_serve(program.save(tmp_path / "program.h5"), "--unix", str(socket_path),
                                    "--max-connections", "64", "--idle-timeout", "2")
    path = str(socket_path)
    bomb, huge, crash = decompression_bomb(program_bytes), huge_layer(program_bytes), libhdf5_crash(program_bytes)
    large_step = frame(protocol.STEP, {"arrays": [{"name": "inputs", "dtype": "|u1", "shape": [1, 1, 4, 4]}]},
                        bytes(32 << 20))  # 32 MiB buffered by the board, then refused: 16 bytes were declared

    def correct_client(_):
        with Board(address) as board:
            readout, _ = run_samples(board, samples)
        assert np.array_equal(readout, expected)

    def short_lived(i):
        with connect(address) as sock:
            sock.sendall(frame(protocol.INFO, {}) if i % 2 else frame(protocol.COUNTERS, {}))
            assert protocol.receive(sock).kind == protocol.OK

    def slow(_):
        frame = protocol.encode(protocol.Message(protocol.STEP, {}, {"inputs": samples[0]}))
        with connect(address) as sock:
            for start in range(0, len(frame), 16):
                sock.sendall(frame[start:start + 16])
                time.sleep(0.01)
            assert protocol.receive(sock).kind == protocol.OK

    def idle(_):
        with connect(address) as sock:
            assert "--idle-timeout" in error_then_closed(sock)

    def hostile(i):
        kind = i % 8
        with connect(address) as sock:
            if kind == 0:
                sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
                assert "bad magic" in error_then_closed(sock)
            elif kind == 1:
                sock.sendall(protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, protocol.STEP, 0, 1 << 27))
                assert "--max-message-bytes" in error_then_closed(sock)
            elif kind == 2:
                sock.sendall(frame(protocol.LOAD, {"lanes": 200000}))
                assert "--max-lanes" in protocol.receive(sock).meta["error"]
            elif kind == 3:
                sock.sendall(frame(protocol.STEP, {}, random.Random(i).randbytes(200)))
                assert protocol.receive(sock).kind == protocol.ERROR
            elif kind == 4:
                sock.sendall(large_step)
                assert "bytes after the last array" in protocol.receive(sock).meta["error"]
            else:
                data = (bomb, huge, crash)[kind - 5]
                message = protocol.Message(protocol.LOAD, {}, {"program": np.frombuffer(data, np.uint8)})
                sock.sendall(protocol.encode(message))
                reply = protocol.receive(sock)
                assert reply.kind == protocol.ERROR and ("--max-" in reply.meta["error"]
                                                         or "SIGSEGV" in reply.meta["error"])

    def killed(i):
        """A client process killed while the board reads its request, or while the board computes its reply."""
        full = protocol.encode(protocol.Message(protocol.STEP, {}, {"inputs": np.zeros((3000, 1, 4, 4), np.uint8)}))
        client = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)
        client.stdin.write(full[:len(full) // 2] if i % 2 else full)
        client.stdin.close()
        assert client.stdout.readline() == b"sent\n"
        client.kill()
        client.wait()
        client.stdout.close()

    correct_client(0)  # the board's lazy imports and first chip, before the baseline is taken
    with Board(address) as board, pytest.raises(BoardError, match="--max-lanes"):
        board.load(program, lanes=200000)
    threads, descriptors = _settled(process.pid)
    rss_start = proc_status(process.pid, "VmRSS")

    tasks = ([(correct_client, i) for i in range(12)] + [(short_lived, i) for i in range(150)]
             + [(slow, i) for i in range(6)] + [(idle, i) for i in range(4)] + [(hostile, i) for i in range(48)]
             + [(killed, i) for i in range(4)])
    random.Random(0).shuffle(tasks)
    with ThreadPoolExecutor(max_workers=12) as pool:
        for outcome in [pool.submit(task, i) for task, i in tasks]:
            outcome.result(timeout=60)

    wait_for(lambda: _threads(process.pid) == threads and _descriptors(process.pid) == descriptors)
    rss_end = proc_status(process.pid, "VmRSS")
    print(f"board RSS {rss_start / 2**20:.1f} MiB before the soak, {rss_end / 2**20:.1f} MiB after")
    assert rss_end - rss_start < RSS_TOLERANCE
    serves_the_emulators_integers(address, program, samples)

    busy = Board(address)
    busy.step(samples[0])
    status, seconds, stderr = stop(process)
    busy.close()
    print(f"SIGTERM to exit: {seconds:.2f} s")
    assert status == 0 and seconds < 2 and stderr == "", (status, seconds, stderr)
    assert gone(process.pid) and not socket_path.exists()
    with socket.socket(socket.AF_UNIX) as late, pytest.raises(FileNotFoundError):
        late.connect(path)
