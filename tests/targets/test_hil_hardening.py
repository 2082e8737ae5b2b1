"""The board server against hostile and careless clients: malformed programs, oversized requests,
connection floods, idle and unauthenticated clients, SIGTERM while busy, bad serve options.

Every attack ends in an ERROR reply that names the limit or the problem (or, where the stream can no
longer be framed, a dropped connection); afterwards the server still answers a correct client with the
in-process emulator's integers.
"""

from __future__ import annotations

import dataclasses
import os
import random
import resource
import signal
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from bench.bench_hil import mlp_program
from targets.hil import protocol
from targets.hil.client import Board, BoardError
from targets.chips import load_chip
from targets.hil import server as server_module
from targets.hil.server import Limits, Server, board_bytes, serve, step_bytes
from tests.builders import conv_skip_program
from snn_compile.cli import main
from toolchain.errors import UserError
from toolchain.isolation import call_isolated
from toolchain.program import Program
from tests.board import (connect, decompression_bomb, error_then_closed, frame, huge_layer, libhdf5_crash, proc_status,
                         serves_the_emulators_integers, start_serve, stop, wait_for)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def program() -> Program:
    return conv_skip_program()


@pytest.fixture(scope="module")
def program_bytes(program) -> bytes:
    return program.to_bytes()


@pytest.fixture(scope="module")
def program_file(program, tmp_path_factory) -> Path:
    return program.save(tmp_path_factory.mktemp("hardening") / "program.h5")


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 16, (3, 7, 1, 4, 4))


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


def _ask(address: str, *frames: bytes) -> list[protocol.Message]:
    """Send raw frames on a fresh connection; the reply to each."""
    with connect(address) as sock:
        replies = []
        for message in frames:
            sock.sendall(message)
            replies.append(protocol.receive(sock))
        return replies


def _load(address: str, data: bytes) -> str:
    """The error a LOAD of the program file bytes ``data`` gets ("" when it loads)."""
    with Board(address) as board:
        try:
            board.load(data)
        except BoardError as exc:
            return str(exc)
    return ""


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from the current RSS


@pytest.fixture(scope="module")
def board_process(program_file):
    """``snn-compile serve`` as its own process: its memory is the board's alone."""
    process, address = start_serve(program_file, "--port", "0")
    assert process.stdout.readline() == f"limits: {Limits().describe()}\n"
    yield process, address
    status, _, stderr = stop(process)
    assert status == 0, stderr


# -- defect 3: a malformed program cannot take the server down ----------------------------------


def test_a_program_that_crashes_libhdf5_gets_one_error_and_the_board_serves_on(board_process, program_bytes,
                                                                               program, samples):
    process, address = board_process
    error = _load(address, libhdf5_crash(program_bytes))
    assert error == "board: the sent program: malformed file (its reader crashed with SIGSEGV)"
    assert process.poll() is None
    serves_the_emulators_integers(address, program, samples)


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
    serves_the_emulators_integers(address, program, samples)


# -- defect 4: requests that would cost memory are refused before it is allocated --------------------


def test_a_40_byte_load_of_200000_lanes_is_refused_without_allocating(board_process, program, samples):
    process, address = board_process
    request = frame(protocol.LOAD, {"lanes": 200000})
    assert len(request) <= 40
    _reset_peak(process.pid)
    before = proc_status(process.pid, "VmHWM")
    (reply,) = _ask(address, request)
    assert reply.kind == protocol.ERROR
    assert reply.meta["error"] == "load of 200,000 lanes: this board's limit is 1,024 lanes (serve --max-lanes)"
    assert proc_status(process.pid, "VmHWM") - before < 32 << 20
    serves_the_emulators_integers(address, program, samples)


def test_a_decompression_bomb_is_refused_from_its_declared_size(board_process, program_bytes, program, samples):
    process, address = board_process
    bomb = decompression_bomb(program_bytes)
    assert len(bomb) < 2 << 20  # 1 GiB of weights in under 2 MiB
    _reset_peak(process.pid)
    before = proc_status(process.pid, "VmHWM")
    declared = 16384**2 + sum(syn.weights.size for syn in program.synapses[1:])
    assert _load(address, bomb) == (f"board: the sent program declares {declared:,} synapses: this board's limit "
                                    "is 67,108,864 synapses (serve --max-synapses)")
    assert proc_status(process.pid, "VmHWM") - before < 64 << 20
    serves_the_emulators_integers(address, program, samples)


def test_a_bomb_under_the_synapse_limit_is_refused_by_the_memory_limit(program_file, program_bytes, program,
                                                                       samples):
    bomb = decompression_bomb(program_bytes, side=4096, rows=512)  # 64 MiB of zeros
    with _server(program_file, board_bytes=32 << 20) as server:
        assert _load(_address(server), bomb) == ("board: the sent program declares 64 MiB of arrays: this board's "
                                                 "limit is 32 MiB (serve --max-board-memory)")
        serves_the_emulators_integers(_address(server), program, samples)


def test_a_program_declaring_a_huge_layer_is_refused_before_it_is_read(board_process, program_bytes, program,
                                                                       samples):
    process, address = board_process
    _reset_peak(process.pid)
    before = proc_status(process.pid, "VmHWM")
    declared = 10**8 + sum(layer.size for layer in program.layers[1:])
    assert _load(address, huge_layer(program_bytes)) == (
        f"board: the sent program declares {declared:,} neurons: this board's limit is 2,097,152 neurons "
        "(serve --max-neurons)")
    assert proc_status(process.pid, "VmHWM") - before < 32 << 20
    serves_the_emulators_integers(address, program, samples)


def test_a_chip_too_large_for_the_memory_limit_is_refused_and_the_estimate_bounds_real_memory(board_process,
                                                                                              program, samples):
    process, address = board_process
    large = mlp_program(64, 4096)
    lanes = 256
    estimate = board_bytes(large, lanes) + step_bytes(large, lanes, 2, False)
    with Board(address) as board:
        _reset_peak(process.pid)
        before = proc_status(process.pid, "VmRSS")
        board.load(large, lanes=lanes)
        board.step(np.full((2, lanes, 64), 255, dtype=np.uint8))
        used = proc_status(process.pid, "VmHWM") - before
        assert estimate / 4 < used <= estimate, (used, estimate)
    with _server(None, board_bytes=64 << 20) as small:
        with Board(_address(small)) as other:
            with pytest.raises(BoardError, match=r"^board: load of 1,024 lanes of this program needs about \d+ "
                               r"MiB: this board's limit is 64 MiB \(serve --max-board-memory\)$"):
                other.load(large, lanes=1024)
    serves_the_emulators_integers(address, program, samples)


def test_connections_share_one_memory_budget_and_a_closed_one_gives_its_share_back(program, samples):
    """Each board is under --max-board-memory, but together they may not pass --max-memory; what a
    connection held is free again once it closes."""
    large = mlp_program(64, 4096)
    need, step = board_bytes(large, 1), step_bytes(large, 1, 1, False)
    assert step < need // 2
    with _server(None, board_bytes=need + step, memory_bytes=need + need // 2) as server:
        address = _address(server)
        with Board(address) as first, Board(address) as second:
            first.load(large)
            with pytest.raises(BoardError, match=r"^board: load of 1 lanes of this program needs about \d+ MiB "
                               r"while the other connections hold \d+ MiB: this board's limit is [\d.]+ MiB "
                               r"\(serve --max-memory\)$"):
                second.load(large)
            first.step(np.zeros((1, 1, 64), dtype=np.uint8))
            assert server.reserved_bytes == need  # a step's share is given back when it ends
        with Board(address) as third:
            third.load(large)
            third.step(np.zeros((1, 1, 64), dtype=np.uint8))
    assert server.reserved_bytes == 0


def test_a_served_program_over_the_memory_limit_at_one_lane_is_refused_at_start_up(program_file, program):
    need = board_bytes(program, 1)
    limits = Limits(board_bytes=need - 1)
    with pytest.raises(UserError) as err:
        Server(program_file, limits=limits)
    assert str(err.value) == (f"one lane of {program_file} needs about {need >> 20:,} MiB: this board's limit is "
                              f"{limits.shown('board_bytes')} (serve --max-board-memory)")


def test_the_chip_spec_is_read_once_per_server_not_per_program(program_file, program, samples, tmp_path,
                                                               monkeypatch):
    """Every LOAD is checked against the board's chip spec; the server reads it once. The readers are
    forked children, so the calls are counted in a file."""
    calls = tmp_path / "load_chip.calls"

    def counted(name):
        with calls.open("a") as log:
            log.write(f"{name}\n")
        return load_chip(name)
    monkeypatch.setattr(server_module, "load_chip", counted)
    with _server(program_file) as server, Board(_address(server)) as board:
        board.load(program)
        board.load(program_file)
        serves_the_emulators_integers(_address(server), program, samples)
    assert calls.read_text() == "loihi2\n"


def test_oversized_messages_steps_and_programs_get_errors_naming_their_limit(program_file, program_bytes,
                                                                             program, samples):
    limits = dict(message_bytes=1 << 20, steps=100, program_bytes=len(program_bytes) - 1, board_bytes=2 << 20)
    with _server(program_file, **limits) as server:
        address = _address(server)
        with connect(address) as sock:  # the header announces 2 MiB: refused before any body byte is read
            sock.sendall(protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, protocol.STEP, 0, 2 << 20))
            assert error_then_closed(sock) == ("a message of 2,097,152 bytes: this board's limit is 1 MiB "
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
        serves_the_emulators_integers(address, program, samples)


# -- defect 5: connection limits -----------------------------------------------------------


@pytest.mark.parametrize("cap, shown", [(1, "1 connection"), (2, "2 connections")])
def test_connections_over_the_cap_get_an_error_and_are_closed(program_file, program, samples, cap, shown):
    with _server(program_file, connections=cap) as server:
        address = _address(server)
        boards = [Board(address) for _ in range(cap)]
        for board in boards:
            board.info()
        with connect(address) as extra:
            assert error_then_closed(extra) == (f"the board is busy: this board's limit is {shown} "
                                                 "(serve --max-connections); try again later")
        boards.pop(0).close()
        wait_for(lambda: len(server.connections) == cap - 1)
        serves_the_emulators_integers(address, program, samples)
        for board in boards:
            board.close()


def test_a_limit_of_one_reads_in_the_singular():
    limits = Limits(lanes=1, steps=1, neurons=1)
    assert [limits.shown(name) for name in ("lanes", "steps", "neurons")] == \
        ["1 lane", "1 step per request", "1 neuron"]
    assert [Limits().shown(name) for name in ("lanes", "steps")] == ["1,024 lanes", "65,536 steps per request"]


def test_idle_and_stalled_connections_are_closed_after_the_idle_timeout(program_file, program, samples):
    with _server(program_file, idle_seconds=0.5) as server:
        address = _address(server)
        expected = ("closing the connection: no complete request in time: this board's limit is 0.5 s "
                    "(serve --idle-timeout)")
        with connect(address) as idle, connect(address) as stalled:
            stalled.sendall(frame(protocol.INFO, {})[:7])  # half a header, then nothing
            assert error_then_closed(idle) == expected
            assert error_then_closed(stalled) == expected
        serves_the_emulators_integers(address, program, samples)
        wait_for(lambda: not server.connections)


def test_at_the_descriptor_limit_the_board_answers_closes_and_does_not_spin(program_file, program, samples):
    process, address = start_serve(program_file, "--port", "0", "--max-connections", "1000")
    out_of_descriptors = "the board is out of file descriptors; try again later"
    try:
        with Board(address) as board:
            board.info()  # the board's own descriptors are all open now
        descriptors = _descriptors(process.pid)
        _, hard = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(process.pid, resource.RLIMIT_NOFILE, (max(descriptors) + 4, hard))
        held = []
        for _ in range(20):  # fill every free descriptor with a connection the board serves
            sock = connect(address)
            sock.sendall(frame(protocol.HELLO, {}))  # answered without opening a file
            reply = protocol.receive(sock)
            if reply.kind == protocol.ERROR:
                assert reply.meta["error"] == out_of_descriptors
                sock.close()
                break
            held.append(sock)
        assert 3 <= len(held) < 20
        for _ in range(5):
            with connect(address) as refused:
                assert error_then_closed(refused) == out_of_descriptors
        waiting = connect(address)  # a connection the board cannot accept must not make its accept loop spin
        cpu = _cpu_seconds(process.pid)
        time.sleep(2)
        assert _cpu_seconds(process.pid) - cpu < 0.5
        assert error_then_closed(waiting) == out_of_descriptors
        waiting.close()
        for sock in held:
            sock.close()
        wait_for(lambda: _descriptors(process.pid) <= descriptors)  # every accepted socket was closed
        serves_the_emulators_integers(address, program, samples)
    finally:
        status, _, stderr = stop(process)
    assert status == 0, stderr


def _descriptors(pid: int) -> set[int]:
    return {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- defect 6: SIGTERM while clients are busy -----------------------------------------------------


def test_sigterm_with_busy_clients_exits_0_within_2_seconds_and_removes_the_socket(tmp_path):
    large = mlp_program(64, 4096).save(tmp_path / "large.h5")
    socket_path = tmp_path / "board.sock"
    process, address = start_serve(large, "--unix", socket_path)
    step = protocol.encode(protocol.Message(protocol.STEP, {}, {"inputs": np.full((400, 256, 64), 255, np.uint8)}))
    busy = []
    for _ in range(3):
        sock = connect(address)
        protocol.send(sock, protocol.Message(protocol.LOAD, {"lanes": 256}))
        assert protocol.receive(sock).kind == protocol.OK
        sock.sendall(step)  # each request keeps its thread inside torch for seconds
        busy.append(sock)
    time.sleep(1.0)
    status, seconds, stderr = stop(process)
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


def test_an_interrupted_wait_kills_and_reaps_the_reader_before_the_interrupt_goes_on(tmp_path):
    """Ctrl-C while a file is read: the interrupt reaches the caller, and the reader is gone by then."""
    children, pid_file = _children(os.getpid()), tmp_path / "reader.pid"
    main_thread = threading.main_thread().ident

    def interrupt_once_the_reader_runs():
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(main_thread, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_once_the_reader_runs, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call_isolated(_sleep_once_started, str(pid_file), what="the sent program")
    finally:
        signal.signal(signal.SIGINT, previous)
    pid = int(pid_file.read_text())
    leftover = _children(os.getpid()) - children
    for child in leftover:  # only where the check below fails: do not leave its sleeper running
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert not leftover
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _sleep_once_started(pid_file: str) -> None:
    staged = f"{pid_file}.part"
    Path(staged).write_text(str(os.getpid()))
    os.replace(staged, pid_file)
    time.sleep(30)


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
        with connect(address) as sock:  # any request before the HELLO ends the connection
            sock.sendall(frame(protocol.SHUTDOWN, {}))
            assert error_then_closed(sock).startswith("this board requires a token")
        assert not server.stopping.is_set()
        serves_the_emulators_integers(address, program, samples, token="s3cret-token")
        monkeypatch.setenv("SNN_BOARD_TOKEN", "s3cret-token")
        with Board(address) as board:
            assert board.limits == dataclasses.asdict(Limits())
        serves_the_emulators_integers(address, program, samples)


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
    process, address = start_serve(program_file, "--port", "0", "--token-file", token_file)
    try:
        assert process.stdout.readline().startswith("limits: ")
        assert process.stdout.readline() == "access: a client must send the shared token\n"
        with Board(address, token="") as board, pytest.raises(BoardError, match="requires a token"):
            board.info()
        serves_the_emulators_integers(address, program, samples, token="file-token")
    finally:
        status, _, stderr = stop(process)
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
