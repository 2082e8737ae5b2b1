"""The board server against hostile and careless clients: malformed programs, oversized requests,
connection floods, idle and unauthenticated clients, SIGTERM while busy, bad serve options.

Every attack ends in an ERROR reply that names the limit or the problem (or, where the stream can no
longer be framed, a dropped connection); afterwards the server still answers a correct client with the
in-process emulator's integers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import resource
import signal
import socket
import stat
import struct
import subprocess
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from targets.hil import protocol
from targets.hil.client import Board, BoardError
from targets.hil.server import Limits, Server, board_bytes, serve, step_bytes
from targets.loihi2.chip import Chip, run_samples
from targets.loihi2.emulator import run
from tests.test_hil import _conv_skip_program, _start_serve
from toolchain.cli import main
from toolchain.errors import UserError
from toolchain.ir import INPUT
from toolchain.isolation import call_isolated
from toolchain.program import Layer, Program, Synapses

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def program() -> Program:
    return _conv_skip_program()


@pytest.fixture(scope="module")
def program_bytes(program) -> bytes:
    return program.to_bytes()


@pytest.fixture(scope="module")
def program_file(program, tmp_path_factory) -> Path:
    return program.save(tmp_path_factory.mktemp("hardening") / "program.h5")


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 16, (3, 7, 1, 4, 4))


def _dense_program(inputs: int, hidden: int, classes: int = 10) -> Program:
    """An MLP-shaped program with random weights: the time and memory do not depend on what was learned."""
    rng = np.random.default_rng(0)

    def layer(name, n):
        return Layer(name, (n,), du=4095, dv=410, vth=2000, bias_mant=0, bias_exp=0, v_scale=1.0)
    synapses = [Synapses(INPUT, "hidden", rng.integers(-127, 128, (hidden, inputs)) * 2, np.zeros(hidden), 8,
                         message_bits=8),
                Synapses("hidden", "out", rng.integers(-127, 128, (classes, hidden)) * 2, np.full(classes, 2), 8)]
    return Program(chip="loihi2", input_shape=(inputs,), input_levels=255, steps=16,
                   layers=[layer("hidden", hidden), layer("out", classes)], synapses=synapses, output="out")


# -- helpers -----------------------------------------------------------------------------


@contextmanager
def _server(program_file, **options):
    """An in-process board (one thread per connection) with ``options`` as its Limits or token."""
    token = options.pop("token", None)
    unix_path = options.pop("unix_path", None)
    server = Server(program_file, unix_path=unix_path, limits=Limits(**options), token=token)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=10)
        assert not thread.is_alive()


def _address(server: Server) -> str:
    return f"unix:{server.address}" if server.unix_path else f"{server.address[0]}:{server.address[1]}"


def _connect(address: str) -> socket.socket:
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(address[len("unix:"):])
        return sock
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _frame(kind: int, meta: dict, payload: bytes = b"") -> bytes:
    encoded = json.dumps(meta).encode()
    body = struct.pack("!I", len(encoded)) + encoded + payload
    return protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, kind, 0, len(body)) + body


def _ask(address: str, *frames: bytes) -> list[protocol.Message]:
    """Send raw frames on a fresh connection; the reply to each."""
    with _connect(address) as sock:
        replies = []
        for frame in frames:
            sock.sendall(frame)
            replies.append(protocol.receive(sock))
        return replies


def _error_then_closed(sock: socket.socket) -> str:
    """The ERROR the board sends before closing the connection, and the proof that it closed it."""
    reply = protocol.receive(sock)
    assert reply.kind == protocol.ERROR
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:  # closed with a request of ours unread
        pass
    return reply.meta["error"]


def _load(address: str, data: bytes) -> str:
    """The error a LOAD of the program file bytes ``data`` gets ("" when it loads)."""
    with Board(address) as board:
        try:
            board.load(data)
        except BoardError as exc:
            return str(exc)
    return ""


def _wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def _serves_the_emulators_integers(address: str, program: Program, samples: np.ndarray, **board_options) -> None:
    expected = run(program, samples)
    with Board(address, **board_options) as board:
        readout, _ = run_samples(board, samples)
    assert np.array_equal(readout, expected.output)
    assert np.array_equal(readout, run_samples(Chip(program), samples)[0])


def _edited(data: bytes, edit) -> bytes:
    """``data`` (a program file) with ``edit(h5py.File)`` applied, as a client could send it."""
    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as f:
        edit(f)
    return buffer.getvalue()


def _libhdf5_crash(data: bytes) -> bytes:
    """One changed byte: the "format" attribute's variable-length string type becomes an invalid one,
    which libhdf5 dereferences and crashes on (SIGSEGV) as h5py opens the attribute."""
    at = data.index(b"format\x00\x00\x19") + 9  # name padded to 8 bytes, then the datatype: version/class, type
    return data[:at] + bytes([2]) + data[at + 1:]


def _decompression_bomb(data: bytes, side: int = 16384, rows: int = 1024) -> bytes:
    """The first connection's weights replaced by a side x side int32 matrix of zeros (1 GiB for the default
    side) stored as gzip chunks of about 64 KiB each: written chunk by chunk, never held in memory."""
    chunk = zlib.compress(bytes(rows * side * 4), 9)

    def edit(f):
        del f["synapses/000/weights"]
        weights = f.create_dataset("synapses/000/weights", shape=(side, side), dtype="<i4", chunks=(rows, side),
                                   compression="gzip")
        for row in range(0, side, rows):
            weights.id.write_direct_chunk((row, 0), chunk)
    return _edited(data, edit)


def _huge_layer(data: bytes, neurons: int = 10**8) -> bytes:
    """The first layer declared with ``neurons`` neurons sharing one value per parameter: a reader that
    broadcasts them allocates about 28 bytes per neuron (2.8 GB for the default)."""
    def edit(f):
        layer = f["layers/000"]
        layer.attrs["meta"] = json.dumps({**json.loads(layer.attrs["meta"]), "shape": [neurons]})
        for name in list(layer):
            value = layer[name][0]
            del layer[name]
            layer[name] = value
    return _edited(data, edit)


def _status(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from the current RSS


def _stop(process: subprocess.Popen) -> tuple[int, float, str]:
    """SIGTERM: (exit status, seconds to exit, stderr)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    status = process.wait(timeout=30)
    seconds = time.monotonic() - started
    stderr = process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    return status, seconds, stderr


@pytest.fixture(scope="module")
def board_process(program_file):
    """``snn-compile serve`` as its own process: its memory is the board's alone."""
    process, address = _start_serve(program_file, "--port", "0")
    assert process.stdout.readline() == f"limits: {Limits().describe()}\n"
    yield process, address
    status, _, stderr = _stop(process)
    assert status == 0, stderr


# -- defect 3: a malformed program cannot take the server down ----------------------------------


def test_a_program_that_crashes_libhdf5_gets_one_error_and_the_board_serves_on(board_process, program_bytes,
                                                                               program, samples):
    process, address = board_process
    error = _load(address, _libhdf5_crash(program_bytes))
    assert error == "board: the sent program: malformed file (its reader crashed with SIGSEGV)"
    assert process.poll() is None
    _serves_the_emulators_integers(address, program, samples)


def test_fuzzed_programs_end_in_a_loaded_program_or_one_error_and_never_kill_the_board(board_process,
                                                                                       program_bytes, program,
                                                                                       samples):
    process, address = board_process
    outcomes = {"loaded": 0, "error": 0}
    rng = random.Random(18)
    with Board(address) as board:
        for _ in range(200):
            mutant = bytearray(program_bytes)
            for _ in range(rng.randint(1, 10)):
                mutant[rng.randrange(len(mutant))] = rng.randrange(256)
            try:
                board.load(bytes(mutant))
                board.step(np.zeros((2, 1, 4, 4), dtype=np.uint8))
                outcomes["loaded"] += 1
            except BoardError as exc:
                message = str(exc)
                assert "\n" not in message and "closed the connection" not in message and "lost the board" \
                    not in message, message
                outcomes["error"] += 1
    assert sum(outcomes.values()) == 200 and outcomes["error"] > 0
    assert process.poll() is None
    _serves_the_emulators_integers(address, program, samples)


# -- defect 4: requests that would cost memory are refused before it is allocated --------------------


def test_a_40_byte_load_of_200000_lanes_is_refused_without_allocating(board_process, program, samples):
    process, address = board_process
    request = _frame(protocol.LOAD, {"lanes": 200000})
    assert len(request) <= 40
    _reset_peak(process.pid)
    before = _status(process.pid, "VmHWM")
    (reply,) = _ask(address, request)
    assert reply.kind == protocol.ERROR
    assert reply.meta["error"] == "load of 200,000 lanes: this board's limit is 1,024 lanes (serve --max-lanes)"
    assert _status(process.pid, "VmHWM") - before < 32 << 20
    _serves_the_emulators_integers(address, program, samples)


def test_a_decompression_bomb_is_refused_from_its_declared_size(board_process, program_bytes, program, samples):
    process, address = board_process
    bomb = _decompression_bomb(program_bytes)
    assert len(bomb) < 2 << 20  # 1 GiB of weights in under 2 MiB
    _reset_peak(process.pid)
    before = _status(process.pid, "VmHWM")
    declared = 16384**2 + sum(syn.weights.size for syn in program.synapses[1:])
    assert _load(address, bomb) == (f"board: the sent program declares {declared:,} synapses: this board's limit "
                                    "is 67,108,864 synapses (serve --max-synapses)")
    assert _status(process.pid, "VmHWM") - before < 64 << 20
    _serves_the_emulators_integers(address, program, samples)


def test_a_bomb_under_the_synapse_limit_is_refused_by_the_memory_limit(program_file, program_bytes, program,
                                                                       samples):
    bomb = _decompression_bomb(program_bytes, side=4096, rows=512)  # 64 MiB of zeros
    with _server(program_file, board_bytes=32 << 20) as server:
        assert _load(_address(server), bomb) == ("board: the sent program declares 64 MiB of arrays: this board's "
                                                 "limit is 32 MiB (serve --max-board-memory)")
        _serves_the_emulators_integers(_address(server), program, samples)


def test_a_program_declaring_a_huge_layer_is_refused_before_it_is_read(board_process, program_bytes, program,
                                                                       samples):
    process, address = board_process
    _reset_peak(process.pid)
    before = _status(process.pid, "VmHWM")
    declared = 10**8 + sum(layer.size for layer in program.layers[1:])
    assert _load(address, _huge_layer(program_bytes)) == (
        f"board: the sent program declares {declared:,} neurons: this board's limit is 2,097,152 neurons "
        "(serve --max-neurons)")
    assert _status(process.pid, "VmHWM") - before < 32 << 20
    _serves_the_emulators_integers(address, program, samples)


def test_a_chip_too_large_for_the_memory_limit_is_refused_and_the_estimate_bounds_real_memory(board_process,
                                                                                              program, samples):
    process, address = board_process
    large = _dense_program(64, 4096)
    lanes = 256
    estimate = board_bytes(large, lanes) + step_bytes(large, lanes, 2, False)
    with Board(address) as board:
        _reset_peak(process.pid)
        before = _status(process.pid, "VmRSS")
        board.load(large, lanes=lanes)
        board.step(np.full((2, lanes, 64), 255, dtype=np.uint8))
        used = _status(process.pid, "VmHWM") - before
        assert estimate / 4 < used <= estimate, (used, estimate)
    with _server(None, board_bytes=64 << 20) as small:
        with Board(_address(small)) as other:
            with pytest.raises(BoardError, match=r"^board: load of 1,024 lanes of this program needs about \d+ "
                               r"MiB: this board's limit is 64 MiB \(serve --max-board-memory\)$"):
                other.load(large, lanes=1024)
    _serves_the_emulators_integers(address, program, samples)


def test_oversized_messages_steps_and_programs_get_errors_naming_their_limit(program_file, program_bytes,
                                                                             program, samples):
    limits = dict(message_bytes=1 << 20, steps=100, program_bytes=len(program_bytes) - 1, board_bytes=2 << 20)
    with _server(program_file, **limits) as server:
        address = _address(server)
        with _connect(address) as sock:  # the header announces 2 MiB: refused before any body byte is read
            sock.sendall(protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, protocol.STEP, 0, 2 << 20))
            assert _error_then_closed(sock) == ("a message of 2,097,152 bytes: this board's limit is 1 MiB "
                                                "(serve --max-message-bytes); closing the connection")
        with Board(address) as board:
            with pytest.raises(BoardError, match=r"^board: a step request of 101 steps: this board's limit is 100 "
                               r"steps per request \(serve --max-steps\)$"):
                board.step(np.zeros((101, 1, 4, 4), dtype=np.uint8))
            with pytest.raises(BoardError, match=r"^board: the sent program has [\d,]+ bytes: this board's limit "
                               r"is [\d.]+ MiB \(serve --max-program-bytes\)$"):
                board.load(program)
            board.load(lanes=64)
            with pytest.raises(BoardError, match=r"^board: a step request of 100 steps x 64 lanes needs about \d+ "
                               r"MiB with its chip: this board's limit is 2 MiB \(serve --max-board-memory\)$"):
                board.step(np.zeros((100, 64, 1, 4, 4), dtype=np.uint8), probe=True)
            assert board.info()["lanes"] == 64  # refused requests leave the board as it was
        _serves_the_emulators_integers(address, program, samples)


# -- defect 5: connection limits -----------------------------------------------------------


def test_connections_over_the_cap_get_an_error_and_are_closed(program_file, program, samples):
    with _server(program_file, connections=2) as server:
        address = _address(server)
        first, second = Board(address), Board(address)
        first.info(), second.info()
        with _connect(address) as third:
            assert _error_then_closed(third) == ("the board is busy: this board's limit is 2 connections "
                                                 "(serve --max-connections); try again later")
        first.close()
        _wait_for(lambda: len(server.connections) == 1)
        _serves_the_emulators_integers(address, program, samples)
        second.close()


def test_idle_and_stalled_connections_are_closed_after_the_idle_timeout(program_file, program, samples):
    with _server(program_file, idle_seconds=0.5) as server:
        address = _address(server)
        expected = ("closing the connection: no complete request in time: this board's limit is 0.5 s "
                    "(serve --idle-timeout)")
        with _connect(address) as idle, _connect(address) as stalled:
            stalled.sendall(_frame(protocol.INFO, {})[:7])  # half a header, then nothing
            assert _error_then_closed(idle) == expected
            assert _error_then_closed(stalled) == expected
        _serves_the_emulators_integers(address, program, samples)
        _wait_for(lambda: not server.connections)


def test_at_the_descriptor_limit_the_board_answers_closes_and_does_not_spin(program_file, program, samples):
    process, address = _start_serve(program_file, "--port", "0", "--max-connections", "1000")
    out_of_descriptors = "the board is out of file descriptors; try again later"
    try:
        with Board(address) as board:
            board.info()  # the board's own descriptors are all open now
        descriptors = _descriptors(process.pid)
        _, hard = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (max(descriptors) + 4, hard))
        held = []
        for _ in range(20):  # fill every free descriptor with a connection the board serves
            sock = _connect(address)
            sock.sendall(_frame(protocol.HELLO, {}))  # answered without opening a file
            reply = protocol.receive(sock)
            if reply.kind == protocol.ERROR:
                assert reply.meta["error"] == out_of_descriptors
                sock.close()
                break
            held.append(sock)
        assert 3 <= len(held) < 20
        for _ in range(5):
            with _connect(address) as refused:
                assert _error_then_closed(refused) == out_of_descriptors
        waiting = _connect(address)  # a connection the board cannot accept must not make its accept loop spin
        cpu = _cpu_seconds(process.pid)
        time.sleep(2)
        assert _cpu_seconds(process.pid) - cpu < 0.5
        assert _error_then_closed(waiting) == out_of_descriptors
        waiting.close()
        for sock in held:
            sock.close()
        _wait_for(lambda: _descriptors(process.pid) <= descriptors)  # every accepted socket was closed
        _serves_the_emulators_integers(address, program, samples)
    finally:
        status, _, stderr = _stop(process)
    assert status == 0, stderr


def _descriptors(pid: int) -> set[int]:
    return {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- defect 6: SIGTERM while clients are busy -----------------------------------------------------


def test_sigterm_with_busy_clients_exits_0_within_2_seconds_and_removes_the_socket(tmp_path):
    large = _dense_program(64, 4096).save(tmp_path / "large.h5")
    socket_path = tmp_path / "board.sock"
    process, address = _start_serve(large, "--unix", socket_path)
    step = protocol.encode(protocol.Message(protocol.STEP, {}, {"inputs": np.full((400, 256, 64), 255, np.uint8)}))
    busy = []
    for _ in range(3):
        sock = _connect(address)
        protocol.send(sock, protocol.Message(protocol.LOAD, {"lanes": 256}))
        assert protocol.receive(sock).kind == protocol.OK
        sock.sendall(step)  # each request keeps its thread inside torch for seconds
        busy.append(sock)
    time.sleep(1.0)
    status, seconds, stderr = _stop(process)
    assert status == 0 and seconds < 2, (status, seconds, stderr)
    assert "terminate called" not in stderr
    assert not socket_path.exists()
    for sock in busy:
        sock.close()


def test_a_program_still_being_read_at_shutdown_has_its_reader_killed_at_once():
    children = _children(os.getpid())
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(UserError, match="^the sent program: reading it was cancelled$"):
        call_isolated(time.sleep, 30, what="the sent program", cancel=cancel)
    assert time.monotonic() - started < 5
    assert _children(os.getpid()) == children  # no reader left behind, not even a zombie


def _children(pid: int) -> set[int]:
    children = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.add(int(entry.name))
        except (OSError, IndexError):  # a process that ended while listed
            pass
    return children


def _open_channels() -> list[int]:
    """The pipes and sockets this process holds (past stdin, stdout and stderr)."""
    channels = []
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:  # the listing's own descriptor
            continue
        if fd > 2 and (stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode)):
            channels.append(fd)
    return channels


def test_a_programs_reader_holds_none_of_the_boards_sockets(program_file):
    with _server(program_file) as server, Board(_address(server)) as board:
        board.info()
        channels = call_isolated(_open_channels, what="the sent program")
    assert len(channels) == 1  # its own pipe to the board, not the listener or a client's connection


# -- defect 7: authentication, socket permissions, exposed binds ----------------------------------


def test_a_board_with_a_token_refuses_clients_without_it(program_file, program, samples, monkeypatch):
    monkeypatch.delenv("SNN_BOARD_TOKEN", raising=False)
    with _server(program_file, token="s3cret-token") as server:
        address = _address(server)
        with pytest.raises(BoardError, match="^board: this board requires a token: connect with "
                           r"Board\(..., token=...\) or set SNN_BOARD_TOKEN$"):
            Board(address, lanes=2)
        with pytest.raises(BoardError, match="^board: wrong token; closing the connection$"):
            Board(address, token="guess")
        with _connect(address) as sock:  # any request before the HELLO ends the connection
            sock.sendall(_frame(protocol.SHUTDOWN, {}))
            assert _error_then_closed(sock).startswith("this board requires a token")
        assert not server.stopping.is_set()
        _serves_the_emulators_integers(address, program, samples, token="s3cret-token")
        monkeypatch.setenv("SNN_BOARD_TOKEN", "s3cret-token")
        with Board(address) as board:
            assert board.limits == dataclasses.asdict(Limits())
        _serves_the_emulators_integers(address, program, samples)


def test_the_unix_socket_is_0600_whatever_the_umask(program_file, tmp_path):
    previous = os.umask(0)
    try:
        with _server(program_file, unix_path=tmp_path / "board.sock") as server:
            assert stat.S_IMODE(os.stat(server.address).st_mode) == 0o600
    finally:
        os.umask(previous)
    assert not (tmp_path / "board.sock").exists()


def test_start_up_states_the_limits_and_warns_about_a_non_loopback_bind(program_file, capsys):
    lines = []

    def announce(text, flush=False):
        lines.append(text)
        if text.startswith("serving"):
            threading.Thread(target=lambda: Board(text.split(" on ")[1]).shutdown()).start()
    serve(program_file, host="0.0.0.0", port=0, announce=announce, limits=Limits(lanes=8))
    port = lines[0].rsplit(":", 1)[1]
    assert lines == [f"serving loihi2 on 0.0.0.0:{port}", f"limits: {Limits(lanes=8).describe()}",
                     "access: no token; anyone who can connect can load programs and stop the board",
                     "board stopped"]
    assert "8 lanes (--max-lanes)" in lines[1] and "300 s (--idle-timeout)" in lines[1]
    assert capsys.readouterr().err == (f"snn-compile: warning: 0.0.0.0:{port} is reachable from other machines, "
                                       "unencrypted; no token is set, so anyone who reaches it can load programs "
                                       "and stop the board (use --token-file)\n")


def test_serve_reads_its_token_from_a_private_file_and_refuses_an_open_one(program_file, program, samples,
                                                                           tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    token_file.chmod(0o644)
    assert main(["serve", str(program_file), "--token-file", str(token_file)]) == 2
    assert capsys.readouterr().err == (f"snn-compile: error: the token file {token_file} is open to other users "
                                       f"(mode 0644); chmod 600 {token_file}\n")
    token_file.chmod(0o600)
    process, address = _start_serve(program_file, "--port", "0", "--token-file", token_file)
    try:
        assert process.stdout.readline().startswith("limits: ")
        assert process.stdout.readline() == "access: a client must send the shared token\n"
        with Board(address, token="") as board, pytest.raises(BoardError, match="requires a token"):
            board.info()
        _serves_the_emulators_integers(address, program, samples, token="file-token")
    finally:
        status, _, stderr = _stop(process)
    assert status == 0 and stderr == ""


# -- defects 9 and 11: serve's options ------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (["--port", "-1"], "--port -1 is not a TCP port: choose 0..65535 (0 picks a free one)"),
    (["--port", "70000"], "--port 70000 is not a TCP port: choose 0..65535 (0 picks a free one)"),
    (["--unix", "/no/such/directory/board.sock"],
     "cannot listen on unix:/no/such/directory/board.sock: No such file or directory"),
    (["--unix", "/tmp/" + "b" * 120], f"--unix /tmp/{'b' * 120}: 125 bytes, longer than the 107 a socket address "
                                     "holds; choose a shorter path"),
    (["--step-period", "nan"], "--step-period must be a positive number of seconds, got nan"),
    (["--step-period", "inf"], "--step-period must be a positive number of seconds, got inf"),
    (["--step-period", "0"], "--step-period must be a positive number of seconds, got 0.0"),
    (["--max-lanes", "0"], "--max-lanes must be a positive number, got 0"),
    (["--idle-timeout", "nan"], "--idle-timeout must be a positive number, got nan"),
    (["--idle-timeout", "1e12"], "--idle-timeout must be at most 1e+07 seconds, got 1e+12"),
    (["--token-file", "/no/such/token"], "cannot read the token file /no/such/token: No such file or directory"),
])
def test_bad_serve_options_end_in_one_line_and_exit_2(program_file, options, message, capsys):
    assert main(["serve", str(program_file), *options]) == 2
    assert capsys.readouterr().err == f"snn-compile: error: {message}\n"


def test_a_unix_path_that_is_a_directory_is_refused(program_file, tmp_path, capsys):
    assert main(["serve", str(program_file), "--unix", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"snn-compile: error: {tmp_path} already exists; remove it or choose "
                                       "another --unix path\n")
    assert tmp_path.is_dir()
