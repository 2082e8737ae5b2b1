"""An emulated board as its own process: the chip behind the hardware-in-the-loop protocol.

Each connection gets its own chip (its own program, state and counters), so
two hosts never see each other's state; connections are served by one thread
each. Every failure a client can cause (a malformed or truncated frame, a bad
input, a program that does not load or does not fit, a request over one of
the board's ``Limits``) ends in an ERROR reply or, when the byte stream
cannot be framed any more, in that connection being dropped; the server
itself keeps serving.

A program sent with LOAD is untrusted bytes for libhdf5, a C library that a
few changed bytes can crash or make allocate gigabytes. It is parsed in a
forked child (``toolchain.isolation.call_isolated``) that first checks what
the file declares (neurons, synapses, array bytes) against the limits, then
reads it, checks its wiring and that it fits the board; only the checked
``Program`` comes back. The memory a chip built from it with the requested
lanes would need is estimated (``board_bytes``) before any of it is
allocated.

``SHUTDOWN``, SIGTERM or SIGINT stop it: the listening socket closes and a
Unix socket file is removed at once, every connection is shut down, and the
connection threads get ``SHUTDOWN_GRACE_SECONDS`` to finish.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import hmac
import io
import ipaddress
import json
import math
import os
import selectors
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py
import numpy as np

from targets.chips import ChipSpec, load_chip
from targets.hil import protocol
from targets.registry import TARGETS
from targets.hil.protocol import TOKEN_ENV, ConnectionClosed, Message, ProtocolError
from toolchain.errors import UserError
from toolchain.ir import INPUT, conv_output_shape
from toolchain.isolation import call_isolated
from toolchain.drc import check_fits, raise_if_any
from toolchain.passes.partition import map_in_order
from toolchain.program import FORMAT_NAME, Program

SERVABLE_TARGETS = tuple(name for name, target in TARGETS.items() if target.steppable)
ACCEPT_POLL_SECONDS = 0.2
ACCEPT_BACKOFF_SECONDS = 0.1
SHUTDOWN_GRACE_SECONDS = 0.5
MAX_UNIX_PATH_BYTES = 107  # sockaddr_un.sun_path holds 108 bytes with its terminating zero
MAX_LAYERS = 1024          # each layer takes at least one of a Loihi 2 board's 8 x 128 cores
MAX_CONNECTIONS_PER_PROGRAM = 4 * MAX_LAYERS
MAX_SECONDS = 1e7          # what a socket timeout holds
M_MMAP_THRESHOLD = -3      # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 4 << 20

# What the chip holds, over-estimated from what targets.loihi2.chip.Chip allocates (tests/targets/test_hil_hardening.py
# checks the estimate against the memory a chip really takes):
SYNAPSE_BYTES = 32         # program int32 weight, the chip's clipped int64 copy and float tensor, the counters' pattern
NEURON_BYTES = 128         # per-neuron parameters in the program and the chip's int64/float64 tensors
LANE_NEURON_BYTES = 16     # u and v of a neuron in one lane (int64 or float64)
LANE_HISTORY_BYTES = 4     # one delayed activity value (float32) in one lane
LANE_STEP_BYTES = 128      # one layer step's temporaries per neuron and lane (about 80 measured on the exact path)
INPUT_VALUE_BYTES = 13     # one received input value's checked copies: rounded (<= 8), compared (1), float32 (4)
PROBE_VALUE_BYTES = 9      # a probed neuron's spike (uint8), u and v (int32) per step and lane


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the board. A request over a limit gets an ERROR naming it, before
    anything of the requested size is allocated."""

    lanes: int = 1024
    steps: int = 65536
    message_bytes: int = 64 << 20
    program_bytes: int = 32 << 20
    neurons: int = 1 << 21
    synapses: int = 1 << 26
    board_bytes: int = 1 << 30
    memory_bytes: int = 4 << 30
    connections: int = 16
    idle_seconds: float = 300.0
    load_seconds: float = 30.0

    def __post_init__(self):
        for name, value in asdict(self).items():
            option = LIMIT_OPTIONS[name][0]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise UserError(f"{option} must be a positive number, got {value}")
            if isinstance(value, float) and value > MAX_SECONDS:
                raise UserError(f"{option} must be at most {MAX_SECONDS:g} seconds, got {value:g}")

    def shown(self, name: str) -> str:
        """The limit ``name`` with its unit: "1,024 lanes", "1 lane", "64 MiB", "300 s"."""
        unit, value = LIMIT_OPTIONS[name][1], getattr(self, name)
        if unit == "bytes":
            return f"{value / (1 << 20):,.4g} MiB"
        if unit == "s":
            return f"{value:g} s"
        if value == 1:  # the unit's first word in the singular: "1 step per request"
            first, _, rest = unit.partition(" ")
            unit = f"{first.removesuffix('s')} {rest}".rstrip()
        return f"{value:,} {unit}"

    def refusal(self, name: str, what: str) -> str:
        """One line: ``what`` is over the limit ``name``, with the limit's value and option."""
        return f"{what}: this board's limit is {self.shown(name)} (serve {LIMIT_OPTIONS[name][0]})"

    def describe(self) -> str:
        """Every limit with the option that sets it."""
        return ", ".join(f"{self.shown(name)} ({LIMIT_OPTIONS[name][0]})" for name in asdict(self))


LIMIT_OPTIONS = {  # limit -> (serve option, unit, what it bounds)
    "lanes": ("--max-lanes", "lanes", "lanes one load may ask for"),
    "steps": ("--max-steps", "steps per request", "steps in one step request"),
    "message_bytes": ("--max-message-bytes", "bytes", "bytes of one request, the most the board buffers for a "
                      "client; a longer frame is answered with an error and the connection closed"),
    "program_bytes": ("--max-program-bytes", "bytes", "bytes of a program file sent with load, compressed as it "
                      "is sent"),
    "neurons": ("--max-neurons", "neurons", "neurons a program may declare"),
    "synapses": ("--max-synapses", "synapses", "synapse weights a program may declare"),
    "board_bytes": ("--max-board-memory", "bytes", "bytes of memory one connection's board may need: its "
                    "program, the state of every lane and one step request's inputs and results"),
    "memory_bytes": ("--max-memory", "bytes", "bytes of memory all connections' boards may need together; a load "
                     "or step request that would pass it is refused while the others hold it"),
    "connections": ("--max-connections", "connections", "connections served at once; more are answered with an "
                    "error and closed"),
    "idle_seconds": ("--idle-timeout", "s", "seconds a connection may wait for its next request, or inside one, "
                     "before it is closed"),
    "load_seconds": ("--load-timeout", "s", "seconds reading a sent program may take"),
}
assert list(LIMIT_OPTIONS) == [f.name for f in fields(Limits)]


def check_target(target: str) -> None:
    if target == "lava":
        raise UserError("lava serving is not supported: the Lava runner runs whole batches, not one step at a "
                        "time; serve --target loihi2 (bit-identical to Lava's fixed-point models)")
    if target not in SERVABLE_TARGETS:
        raise UserError(f"cannot serve target {target!r}; servable targets: {', '.join(SERVABLE_TARGETS)}")


def read_token(path: str | Path) -> str:
    """The shared token in ``path``: one line, in a file only its owner can read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"the token file {path} is open to other users (mode {stat.S_IMODE(mode):04o}); "
                        f"chmod 600 {path}")
    if not token or "\n" in token:
        raise UserError(f"the token file {path} must hold one line, the token")
    return token


# -- programs ------------------------------------------------------------------


def load_checked_program(path: str | Path, limits: Limits, chip: ChipSpec) -> Program:
    """Load a program file (in a child process) and make sure it fits a board of ``chip`` and ``limits``
    (all but the size of a sent program: this one is the operator's)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such program file")
    return _isolated_program(path.read_bytes(), str(path), limits, chip)


def checked_program(program: Program, name: str, chip: ChipSpec) -> Program:
    """``program`` if it fits a board of ``chip``; ``UserError`` naming ``name`` otherwise."""
    if program.chip != chip.name:
        raise UserError(f"{name}: the program is compiled for {program.chip!r}, the board is {chip.name}")
    mapping = program.mapping or map_in_order(program, chip)
    raise_if_any(check_fits(mapping, chip, chips=chip.limit("chips_per_board")),
                 f"the program does not fit a {chip.name} board")
    return program


def read_program(data: bytes, name: str, limits: Limits, chip: ChipSpec) -> Program:
    """The program in ``data``, checked: its declared sizes against ``limits`` before anything is read,
    then its wiring and that it fits the board. Runs in ``call_isolated``'s child."""
    neurons, synapses, array_bytes = _declared_sizes(data, name)
    if neurons > limits.neurons:
        raise UserError(limits.refusal("neurons", f"{name} declares {neurons:,} neurons"))
    if synapses > limits.synapses:
        raise UserError(limits.refusal("synapses", f"{name} declares {synapses:,} synapses"))
    if array_bytes + NEURON_BYTES * neurons > limits.board_bytes:
        raise UserError(limits.refusal("board_bytes", f"{name} declares {array_bytes >> 20:,} MiB of arrays"))
    program = Program.from_bytes(data, name)
    _check_wiring(program, name)
    return checked_program(program, name, chip)


def _isolated_program(data: bytes, name: str, limits: Limits, chip: ChipSpec,
                      cancel: threading.Event | None = None) -> Program:
    return call_isolated(read_program, data, name, limits, chip, what=name, timeout=limits.load_seconds, cancel=cancel,
                         memory_bytes=2 * limits.board_bytes + (256 << 20))  # the reader's copies of its arrays


def _declared_sizes(data: bytes, name: str) -> tuple[int, int, int]:
    """(neurons, synapses, bytes of every array) a program file declares, from its metadata alone."""
    try:
        file = h5py.File(io.BytesIO(data), "r")
    except OSError:
        raise UserError(f"{name}: not an snn-compile program (not HDF5)") from None
    with file:
        if file.attrs.get("format") != FORMAT_NAME:
            raise UserError(f"{name}: not an snn-compile program")
        datasets = []
        file.visititems(lambda _, item: datasets.append(item) if isinstance(item, h5py.Dataset) else None)
        array_bytes = sum((dataset.size or 0) * dataset.dtype.itemsize for dataset in datasets)
        layers = list(file.get("layers", {}).values())
        connections = list(file.get("synapses", {}).values())
        if len(layers) > MAX_LAYERS or len(connections) > MAX_CONNECTIONS_PER_PROGRAM:
            raise UserError(f"{name} has {len(layers)} layers and {len(connections)} synapse connections; a board "
                            f"takes at most {MAX_LAYERS} and {MAX_CONNECTIONS_PER_PROGRAM}")
        neurons = sum(math.prod(json.loads(group.attrs["meta"])["shape"]) for group in layers)
        synapses = sum(group["weights"].size or 0 for group in connections)
    return neurons, synapses, array_bytes


def _check_wiring(program: Program, name: str) -> None:
    """Every connection feeds forward (or onto itself) with weights of the shape its layers give, so
    building and stepping the chip allocates only what ``board_bytes`` and ``step_bytes`` count."""
    order = {INPUT: -1, **{layer.name: i for i, layer in enumerate(program.layers)}}
    if len(order) != len(program.layers) + 1:
        raise UserError(f"{name}: layer names must be unique and not {INPUT!r}")
    if any(d < 1 for d in program.input_shape) or any(d < 1 for layer in program.layers for d in layer.shape):
        raise UserError(f"{name}: every input and layer dimension must be at least 1")
    for syn in program.synapses:
        if syn.target not in order or syn.source not in order or (not syn.recurrent
                                                                  and order[syn.source] >= order[syn.target]):
            raise UserError(f"{name}: synapses {syn.name} do not feed forward")
        source, target = program.shape_of(syn.source), program.shape_of(syn.target)
        if syn.kind == "dense":
            fits = syn.weights.shape == (math.prod(target), math.prod(source))
        else:
            fits = (syn.kind == "conv" and len(source) == 3 and len(target) == 3 and syn.weights.ndim == 4
                    and syn.weights.shape[1] == source[0] and min(syn.stride) >= 1 and min(syn.padding) >= 0
                    and conv_output_shape(source, syn.weights.shape, syn.stride, syn.padding) == target)
        if not fits or syn.weight_exp.size != math.prod(target):
            raise UserError(f"{name}: synapses {syn.name} ({syn.kind}, weights {syn.weights.shape}) do not connect "
                            f"{source} to {target}")


def _history_lengths(program: Program) -> dict[str, int]:
    """Steps of activity the chip keeps per source, as ``Chip`` computes them."""
    depth = program.depth
    history = {INPUT: 1, **{layer.name: 1 for layer in program.layers}}
    for syn in program.synapses:
        if not syn.recurrent:
            history[syn.source] = max(history[syn.source], depth[syn.target] - depth[syn.source])
    return history


def board_bytes(program: Program, lanes: int) -> int:
    """Memory a chip of ``lanes`` lanes running ``program`` holds (an over-estimate)."""
    neurons = sum(layer.size for layer in program.layers)
    synapses = sum(syn.weights.size for syn in program.synapses)
    history = sum(length * math.prod(program.shape_of(source))
                  for source, length in _history_lengths(program).items())
    per_lane = LANE_NEURON_BYTES * neurons + LANE_HISTORY_BYTES * history
    return SYNAPSE_BYTES * synapses + NEURON_BYTES * neurons + lanes * per_lane


def checked_board_bytes(program: Program, lanes: int, limits: Limits, what: str) -> int:
    """``board_bytes(program, lanes)``; ``UserError`` naming ``what`` if it is over ``limits.board_bytes``."""
    need = board_bytes(program, lanes)
    if need > limits.board_bytes:
        raise UserError(limits.refusal("board_bytes", f"{what} needs about {need >> 20:,} MiB"))
    return need


def step_bytes(program: Program, lanes: int, steps: int, probe) -> int:
    """Memory one step request needs besides the chip: its inputs' checked copies, the output and the
    probed traces, one layer step's temporaries and a convolution's unfolded input patches."""
    probed = [layer for layer in program.layers if probe is True or (isinstance(probe, list) and layer.name in probe)]
    per_step = (INPUT_VALUE_BYTES * math.prod(program.input_shape) + program.layer(program.output).size
                + PROBE_VALUE_BYTES * sum(layer.size for layer in probed))
    patches = sum(syn.weights[0].size * program.layer(syn.target).size // syn.weights.shape[0] * 8
                  for syn in program.synapses if syn.kind == "conv")
    largest = max((layer.size for layer in program.layers), default=0)
    return steps * lanes * per_step + lanes * (LANE_STEP_BYTES * largest + patches)


# -- the server ----------------------------------------------------------------


class Server:
    """Listens on TCP ``host:port`` (port 0 picks a free one) or on ``unix_path`` (mode 0600)."""

    def __init__(self, program_path: str | Path | None = None, target: str = "loihi2", host: str = "127.0.0.1",
                 port: int = 0, unix_path: str | Path | None = None, step_period: float = 1e-3,
                 limits: Limits | None = None, token: str | None = None):
        check_target(target)
        if isinstance(step_period, bool) or not isinstance(step_period, (int, float)) \
                or not 0 < step_period < math.inf:
            raise UserError(f"--step-period must be a positive number of seconds, got {step_period}")
        if unix_path is None and not (isinstance(port, int) and 0 <= port <= 65535):
            raise UserError(f"--port {port} is not a TCP port: choose 0..65535 (0 picks a free one)")
        self.limits = limits or Limits()
        self.token = token.encode() if token else None
        self.chip_spec = load_chip(TARGETS[target].chip)
        self.program = None
        if program_path is not None:
            self.program = load_checked_program(program_path, self.limits, self.chip_spec)
            checked_board_bytes(self.program, 1, self.limits, f"one lane of {program_path}")
        self.step_period = step_period
        self.unix_path = Path(unix_path) if unix_path is not None else None
        if self.unix_path is not None:
            self.listener, self.address = self._listen_unix(self.unix_path), str(self.unix_path)
        else:
            self.listener = self._listen_tcp(host, port)
            self.address = self.listener.getsockname()
        self.exposed = self.unix_path is None and not ipaddress.ip_address(self.address[0]).is_loopback
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.connections: dict[socket.socket, threading.Thread] = {}
        self.reserved_bytes = 0  # what the connections' boards and running steps need together
        self.reserve_fd: int | None = os.open(os.devnull, os.O_RDONLY)

    @staticmethod
    def _listen_tcp(host: str, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
            listener.listen()
        except (OSError, OverflowError) as exc:
            listener.close()
            raise UserError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
        listener.setblocking(False)
        return listener

    @staticmethod
    def _listen_unix(path: Path) -> socket.socket:
        if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
            raise UserError(f"--unix {path}: {len(os.fsencode(path))} bytes, longer than the "
                            f"{MAX_UNIX_PATH_BYTES} a socket address holds; choose a shorter path")
        if path.exists() or path.is_symlink():
            raise UserError(f"{path} already exists; remove it or choose another --unix path")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous_umask = os.umask(0o177)  # the socket file is created 0600, never briefly open to others
        try:
            listener.bind(str(path))
            os.chmod(path, 0o600)
            listener.listen()
        except OSError as exc:
            listener.close()
            raise UserError(f"cannot listen on unix:{path}: {exc.strerror or exc}") from None
        finally:
            os.umask(previous_umask)
        listener.setblocking(False)
        return listener

    def serve_forever(self) -> bool:
        """Accept connections until ``shutdown``; then close everything. True when every connection
        thread finished within the grace period."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.listener, selectors.EVENT_READ)
                while not self.stopping.is_set():
                    if selector.select(ACCEPT_POLL_SECONDS):
                        self._accept()
        finally:
            finished = self._close()
        return finished

    def shutdown(self) -> None:
        self.stopping.set()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._refuse_waiting_connection()
            else:
                self.stopping.wait(ACCEPT_BACKOFF_SECONDS)
            return
        try:
            with self.lock:
                busy = len(self.connections) >= self.limits.connections
            if busy:
                self._refuse(conn, self.limits.refusal("connections", "the board is busy") + "; try again later")
                return
            thread = threading.Thread(target=self._serve_connection, args=(conn,), daemon=True)
            with self.lock:
                self.connections[conn] = thread
            thread.start()
        except (RuntimeError, MemoryError, OSError):  # no thread to serve it: answer, close, keep serving
            with self.lock:
                self.connections.pop(conn, None)
            self._refuse(conn, "the board cannot serve another connection now; try again later")
        except BaseException:
            with self.lock:
                self.connections.pop(conn, None)
            conn.close()
            raise

    def _refuse_waiting_connection(self) -> None:
        """Out of file descriptors: free the reserve one to accept, answer and close a waiting
        connection, so the listening socket stops being readable instead of spinning the loop."""
        if self.reserve_fd is not None:
            os.close(self.reserve_fd)
            try:
                conn, _ = self.listener.accept()
                self._refuse(conn, "the board is out of file descriptors; try again later")
            except OSError:
                pass
        else:
            self.stopping.wait(ACCEPT_BACKOFF_SECONDS)
        try:
            self.reserve_fd = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self.reserve_fd = None

    @staticmethod
    def _refuse(conn: socket.socket, message: str, kind: str = "busy") -> None:
        """Send ``message`` as an ERROR and close, never blocking the caller."""
        try:
            conn.setblocking(False)
            protocol.send(conn, protocol.error(message, kind))
            conn.recv(1 << 16)  # closing with the client's request unread would reset the connection
        except OSError:
            pass
        finally:
            conn.close()

    def _close(self) -> bool:
        self.stopping.set()
        self.listener.close()
        if self.unix_path is not None and self.unix_path.exists():
            self.unix_path.unlink()
        if self.reserve_fd is not None:
            os.close(self.reserve_fd)
            self.reserve_fd = None
        with self.lock:
            open_connections = dict(self.connections)
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for thread in open_connections.values():
            if thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in open_connections.values())

    # -- one connection --------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        session = None
        try:
            conn.settimeout(self.limits.idle_seconds)
            if conn.family == socket.AF_INET:  # a reply's last partial segment must not wait for the host's ACK
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = _Session(self)
            authenticated = self.token is None
            while not self.stopping.is_set():
                try:
                    request = self._receive(conn)
                except ProtocolError as exc:
                    protocol.send(conn, protocol.error(str(exc), "malformed"))
                    if exc.fatal:
                        return
                    continue
                if not authenticated:
                    refusal = self._authenticate(request)
                    if refusal is not None:
                        protocol.send(conn, refusal)
                        return
                    authenticated = True
                reply = session.handle(request)
                try:
                    protocol.send(conn, reply)
                except ProtocolError as exc:
                    protocol.send(conn, protocol.error(str(exc), "request"))
                if request.kind == protocol.SHUTDOWN:
                    self.shutdown()
                    return
        except TimeoutError:
            self._refuse(conn, self.limits.refusal("idle_seconds", "closing the connection: no complete request "
                                                   "in time"), "idle")
        except (ConnectionClosed, OSError):
            return
        except Exception as exc:  # whatever one connection does, the board keeps serving the others
            self._refuse(conn, f"internal error, closing the connection: {exc!r}", "internal")
        finally:
            with self.lock:
                self.connections.pop(conn, None)
            if session is not None:
                session.close()
            conn.close()

    def reserve(self, need: int, what: str) -> None:
        """Count ``need`` bytes against the limit of all connections together, or refuse ``what``."""
        with self.lock:
            if self.reserved_bytes + need > self.limits.memory_bytes:
                raise UserError(self.limits.refusal("memory_bytes", f"{what} needs about {need >> 20:,} MiB while "
                                                    f"the other connections hold {self.reserved_bytes >> 20:,} MiB"))
            self.reserved_bytes += need

    def release(self, amount: int) -> None:
        with self.lock:
            self.reserved_bytes -= amount

    def _receive(self, conn: socket.socket) -> Message:
        """The next request; a frame over the message limit is refused before its body is read."""
        kind, length = protocol.decode_header(protocol.receive_exactly(conn, protocol.HEADER.size))
        if length > self.limits.message_bytes:
            raise ProtocolError(self.limits.refusal("message_bytes", f"a message of {length:,} bytes")
                                + "; closing the connection", fatal=True)
        return protocol.decode_body(kind, protocol.receive_exactly(conn, length))

    def _authenticate(self, request: Message) -> Message | None:
        """None when ``request`` is a HELLO with the board's token; else the ERROR that closes the connection."""
        token = request.meta.get("token") if request.kind == protocol.HELLO else None
        if not isinstance(token, str):
            return protocol.error(f"this board requires a token: connect with Board(..., token=...) or set "
                                  f"{TOKEN_ENV}", "auth")
        if not hmac.compare_digest(token.encode(), self.token):
            return protocol.error("wrong token; closing the connection", "auth")
        return None


class _Session:
    """One connection's board: its own chip, built from the server's program on first use unless the
    client loads another."""

    def __init__(self, server: Server):
        self.server = server
        self.limits = server.limits
        self.chip = None
        self.chip_bytes = 0

    def handle(self, request: Message) -> Message:
        handler = {protocol.INFO: self.info, protocol.LOAD: self.load, protocol.STEP: self.step,
                   protocol.RESET: self.reset, protocol.COUNTERS: self.counters, protocol.HELLO: self.hello,
                   protocol.SHUTDOWN: lambda _: Message(protocol.OK)}.get(request.kind)
        if handler is None:
            return protocol.error(f"unknown request type {request.kind}", "malformed")
        try:
            return handler(request)
        except UserError as exc:
            return protocol.error(str(exc), "request")
        except (ProtocolError, ValueError, TypeError, KeyError) as exc:
            return protocol.error(f"bad {protocol.REQUESTS[request.kind]} request: {exc}", "malformed")
        except Exception as exc:  # a board answers every request; the host decides what to do
            return protocol.error(f"internal error in {protocol.REQUESTS[request.kind]}: {exc!r}", "internal")

    def hello(self, _request: Message) -> Message:
        return Message(protocol.OK, {"protocol": protocol.VERSION, "limits": asdict(self.limits)})

    def info(self, _request: Message) -> Message:
        return Message(protocol.OK, self._loaded().info())

    def load(self, request: Message) -> Message:
        lanes = _whole_number(request.meta.get("lanes", 1), "lanes")
        reset_interval = request.meta.get("reset_interval")
        reset_interval = None if reset_interval is None else _whole_number(reset_interval, "reset_interval")
        if lanes > self.limits.lanes:
            raise UserError(self.limits.refusal("lanes", f"load of {lanes:,} lanes"))
        if "program" in request.arrays:
            data = request.arrays["program"]
            if data.dtype != np.uint8 or data.ndim != 1:
                raise ProtocolError("the program must be a one-dimensional uint8 array of a program file's bytes")
            if data.size > self.limits.program_bytes:
                raise UserError(self.limits.refusal("program_bytes", f"the sent program has {data.size:,} bytes"))
            program = _isolated_program(data.tobytes(), "the sent program", self.limits, self.server.chip_spec,
                                        self.server.stopping)
        elif self.server.program is not None:
            program = self.server.program
        else:
            raise UserError("the server was started without a program; send one with load")
        self.chip = self._new_chip(program, lanes, reset_interval)
        return self.info(request)

    def step(self, request: Message) -> Message:
        if "inputs" not in request.arrays:
            raise ProtocolError("step needs an 'inputs' array")
        probe = request.meta.get("probe", False)
        if not isinstance(probe, (bool, list)):
            raise ProtocolError("probe must be true, false or a list of layer names")
        chip = self._loaded()
        inputs = request.arrays["inputs"]
        steps = inputs.shape[0] if inputs.ndim else 0
        if steps > self.limits.steps:
            raise UserError(self.limits.refusal("steps", f"a step request of {steps:,} steps"))
        need = self.chip_bytes + step_bytes(chip.program, chip.lanes, steps, probe)
        if need > self.limits.board_bytes:
            raise UserError(self.limits.refusal("board_bytes", f"a step request of {steps:,} steps x {chip.lanes:,} "
                                                f"lanes needs about {need >> 20:,} MiB with its chip"))
        request_bytes = need - self.chip_bytes
        self.server.reserve(request_bytes, f"a step request of {steps:,} steps x {chip.lanes:,} lanes")
        try:
            result = chip.step(inputs, probe=probe)
        finally:
            self.server.release(request_bytes)
        arrays = {"output": result.output}
        for name in result.spikes:
            arrays.update({f"spikes/{name}": result.spikes[name], f"u/{name}": result.u[name],
                           f"v/{name}": result.v[name]})
        return Message(protocol.OK, {"t": chip.t, "compute_seconds": chip.last_step_seconds}, arrays)

    def reset(self, _request: Message) -> Message:
        self._loaded().reset()
        return Message(protocol.OK)

    def counters(self, _request: Message) -> Message:
        return Message(protocol.OK, self._loaded().counters())

    def _loaded(self):
        if self.chip is None:
            if self.server.program is None:
                raise UserError("no program loaded on the board; send one with load")
            self.chip = self._new_chip(self.server.program, lanes=1, reset_interval=None)
        return self.chip

    def _new_chip(self, program: Program, lanes: int, reset_interval: int | None):
        """A chip for ``program``, once its memory is known to be within the limit; the previous chip
        stays loaded when this one is refused."""
        from targets.loihi2.chip import Chip

        need = checked_board_bytes(program, lanes, self.limits, f"load of {lanes:,} lanes of this program")
        self.server.reserve(need, f"load of {lanes:,} lanes of this program")
        try:
            chip = Chip(program, lanes=lanes, reset_interval=reset_interval, step_period=self.server.step_period)
        except BaseException:
            self.server.release(need)
            raise
        self.server.release(self.chip_bytes)
        self.chip_bytes = need
        return chip

    def close(self) -> None:
        """The connection ended: its board's memory is free for the others."""
        self.server.release(self.chip_bytes)
        self.chip, self.chip_bytes = None, 0


def _whole_number(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def _return_freed_memory() -> None:
    """Blocks of 4 MiB and more come from mmap and go back to the system when freed. glibc's default
    raises its mmap threshold after each large free, from then on serving large blocks from per-thread
    arenas, so a long-running board would keep the memory of every peak a client caused."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc: its own allocator's policy stands
        pass


def serve(program_path: str | Path | None, target: str = "loihi2", host: str = "127.0.0.1", port: int = 0,
          unix_path: str | Path | None = None, step_period: float = 1e-3, announce=print,
          limits: Limits | None = None, token: str | None = None) -> None:
    """Run a board until a client sends SHUTDOWN or the process gets SIGTERM/SIGINT.

    The process exits at once (status 0) when a connection thread is still
    inside a step after the grace period: letting the interpreter finalize
    would end such a thread with pthread_exit through torch's C++ frames,
    which aborts the process ("terminate called without an active exception").
    """
    import torch

    import targets.loihi2.chip  # noqa: F401 - numba loads now, not in the first LOAD, whose memory is limited
    torch.set_num_threads(1)  # a step is small; threads only add contention with the host
    _return_freed_memory()
    server = Server(program_path, target, host, port, unix_path, step_period, limits, token)
    gc.freeze()  # what is loaded now lives until exit; the final collection would walk all of torch (~1 s)
    stop = lambda *_: server.shutdown()  # noqa: E731
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        where = f"unix:{server.address}" if unix_path is not None else f"{server.address[0]}:{server.address[1]}"
        announce(f"serving {target} on {where}", flush=True)
        announce(f"limits: {server.limits.describe()}", flush=True)
        announce("access: " + ("a client must send the shared token" if server.token else
                               "no token; anyone who can connect can load programs and stop the board"), flush=True)
        if server.exposed:
            print(f"snn-compile: warning: {where} is reachable from other machines, unencrypted; "
                  + ("a client must send the shared token" if server.token else
                     "no token is set, so anyone who reaches it can load programs and stop the board "
                     "(use --token-file)"), file=sys.stderr, flush=True)
        finished = server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    announce("board stopped", flush=True)
    if not finished:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
