"""An emulated board as its own process: the chip behind the hardware-in-the-loop protocol.

Each connection gets its own chip (its own program, state and counters), so
two hosts never see each other's state; connections are served by one thread
each. Every failure a client can cause (a malformed or truncated frame, a bad
input, a program that does not load or does not fit) ends in an ERROR reply
or, when the byte stream cannot be framed any more, in that connection being
dropped; the server itself keeps serving. ``SHUTDOWN``, SIGTERM or SIGINT
stop it: the listening socket closes, every connection is closed and joined,
a Unix socket file is removed.
"""

from __future__ import annotations

import selectors
import signal
import socket
import threading
from pathlib import Path

import numpy as np

from targets.hil import protocol
from targets.hil.protocol import ConnectionClosed, Message, ProtocolError
from toolchain.errors import UserError
from toolchain.program import Program

SERVABLE_TARGETS = ("loihi2",)
ACCEPT_POLL_SECONDS = 0.2


def check_target(target: str) -> None:
    if target == "lava":
        raise UserError("lava serving is not supported: the Lava runner runs whole batches, not one step at a "
                        "time; serve --target loihi2 (bit-identical to Lava's fixed-point models)")
    if target not in SERVABLE_TARGETS:
        raise UserError(f"cannot serve target {target!r}; servable targets: {', '.join(SERVABLE_TARGETS)}")


def load_checked_program(path: str | Path) -> Program:
    """Load a program and make sure it fits the board it names; ``UserError`` otherwise."""
    return checked_program(Program.load(path), str(path))


def checked_program(program: Program, name: str) -> Program:
    """``program`` if it fits the board; ``UserError`` naming ``name`` otherwise."""
    from targets.chips import load_chip
    from toolchain.mapping import check_fits

    if program.chip != "loihi2":
        raise UserError(f"{name}: the program is compiled for {program.chip!r}, the board is loihi2")
    chip = load_chip(program.chip)
    violations = check_fits(program, chip, chips=chip.limit("chips_per_board"))
    if violations:
        more = f" (and {len(violations) - 1} more limits broken)" if len(violations) > 1 else ""
        raise UserError(f"the program does not fit a {chip.name} board: {violations[0]}{more}")
    return program


class Server:
    """Listens on TCP ``host:port`` (port 0 picks a free one) or on ``unix_path``."""

    def __init__(self, program_path: str | Path | None = None, target: str = "loihi2", host: str = "127.0.0.1",
                 port: int = 0, unix_path: str | Path | None = None, step_period: float = 1e-3):
        check_target(target)
        self.program = load_checked_program(program_path) if program_path is not None else None
        self.step_period = step_period
        self.unix_path = Path(unix_path) if unix_path is not None else None
        if self.unix_path is not None:
            if self.unix_path.exists():
                raise UserError(f"{self.unix_path} already exists; remove it or choose another --unix path")
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(str(self.unix_path))
            self.address = str(self.unix_path)
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.listener.bind((host, port))
            except OSError as exc:
                self.listener.close()
                raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            self.address = self.listener.getsockname()
        self.listener.listen()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.connections: dict[socket.socket, threading.Thread] = {}

    def serve_forever(self) -> None:
        """Accept connections until ``shutdown``; then close everything."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            while not self.stopping.is_set():
                if not selector.select(ACCEPT_POLL_SECONDS):
                    continue
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    continue
                thread = threading.Thread(target=self._serve_connection, args=(conn,), daemon=True)
                with self.lock:
                    self.connections[conn] = thread
                thread.start()
        self._close()

    def shutdown(self) -> None:
        self.stopping.set()

    def _close(self) -> None:
        self.listener.close()
        with self.lock:
            open_connections = dict(self.connections)
        for conn, thread in open_connections.items():
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        if self.unix_path is not None and self.unix_path.exists():
            self.unix_path.unlink()

    # -- one connection --------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        session = _Session(self)
        try:
            while not self.stopping.is_set():
                try:
                    request = protocol.receive(conn)
                except ProtocolError as exc:
                    protocol.send(conn, protocol.error(str(exc), "malformed"))
                    if exc.fatal:
                        return
                    continue
                try:
                    reply = protocol.encode(session.handle(request))
                except ProtocolError as exc:
                    reply = protocol.encode(protocol.error(str(exc), "request"))
                conn.sendall(reply)
                if request.kind == protocol.SHUTDOWN:
                    self.shutdown()
                    return
        except (ConnectionClosed, OSError):
            return
        except Exception as exc:  # whatever one connection does, the board keeps serving the others
            try:
                protocol.send(conn, protocol.error(f"internal error, closing the connection: {exc!r}", "internal"))
            except OSError:
                pass
        finally:
            with self.lock:
                self.connections.pop(conn, None)
            conn.close()


class _Session:
    """One connection's board: its own chip, loaded with the server's program until it loads another."""

    def __init__(self, server: Server):
        self.server = server
        self.chip = None
        if server.program is not None:
            self.chip = self._new_chip(server.program, lanes=1, reset_interval=None)

    def handle(self, request: Message) -> Message:
        handler = {protocol.INFO: self.info, protocol.LOAD: self.load, protocol.STEP: self.step,
                   protocol.RESET: self.reset, protocol.COUNTERS: self.counters,
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

    def info(self, _request: Message) -> Message:
        return Message(protocol.OK, self._loaded().info())

    def load(self, request: Message) -> Message:
        lanes = int(request.meta.get("lanes", 1))
        reset_interval = request.meta.get("reset_interval")
        if "program" in request.arrays:
            program = self._program_from_bytes(request.arrays["program"])
        elif self.server.program is not None:
            program = self.server.program
        else:
            raise UserError("the server was started without a program; send one with load")
        self.chip = self._new_chip(program, lanes, None if reset_interval is None else int(reset_interval))
        return self.info(request)

    def step(self, request: Message) -> Message:
        if "inputs" not in request.arrays:
            raise ProtocolError("step needs an 'inputs' array")
        probe = request.meta.get("probe", False)
        if not isinstance(probe, (bool, list)):
            raise ProtocolError("probe must be true, false or a list of layer names")
        chip = self._loaded()
        result = chip.step(request.arrays["inputs"], probe=probe)
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
            raise UserError("no program loaded on the board; send one with load")
        return self.chip

    def _new_chip(self, program: Program, lanes: int, reset_interval: int | None):
        from targets.loihi2.chip import Chip

        return Chip(program, lanes=lanes, reset_interval=reset_interval, step_period=self.server.step_period)

    @staticmethod
    def _program_from_bytes(data: np.ndarray) -> Program:
        program = Program.from_bytes(np.ascontiguousarray(data, dtype=np.uint8).tobytes(), "the sent program")
        return checked_program(program, "the sent program")


def serve(program_path: str | Path | None, target: str = "loihi2", host: str = "127.0.0.1", port: int = 0,
          unix_path: str | Path | None = None, step_period: float = 1e-3, announce=print) -> None:
    """Run a board until a client sends SHUTDOWN or the process gets SIGTERM/SIGINT."""
    import torch

    torch.set_num_threads(1)  # a step is small; threads only add contention with the host
    server = Server(program_path, target, host, port, unix_path, step_period)
    stop = lambda *_: server.shutdown()  # noqa: E731
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        where = f"unix:{server.address}" if unix_path is not None else f"{server.address[0]}:{server.address[1]}"
        announce(f"serving {target} on {where}", flush=True)
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    announce("board stopped", flush=True)
