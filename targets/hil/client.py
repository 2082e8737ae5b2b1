"""The host side of hardware-in-the-loop: a ``Board`` with the calls of the in-process ``Chip``.

Switching between the emulated chip in this process and a board behind a
socket is one line::

    board = Chip(program)                         # in process
    board = Board("127.0.0.1:7421", program)      # snn-compile serve ..., same calls below

    board.reset()
    out = board.step(inputs, probe=["b0_lif"])    # (steps, [lanes,] neurons) output spikes, probes
    board.counters()                              # steps, spikes, synaptic ops, timing

Besides the board's own counters, the client measures what the host sees:
the round trip of every ``step`` request, per emulated step, and the
real-time factor (emulated time at ``step_period`` per step over wall-clock
time; above 1 the board keeps up with a real chip running at that period).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from targets.hil import protocol
from targets.hil.protocol import TOKEN_ENV, Message
from targets.loihi2.chip import StepOutput
from toolchain.errors import UserError
from toolchain.program import Program


class BoardError(UserError):
    """The board answered a request with an error."""


def connect(address: str | tuple[str, int] | Path, timeout: float) -> socket.socket:
    """``"unix:/path"``, a Path (Unix socket), ``"host:port"`` or ``(host, port)``."""
    if isinstance(address, Path) or (isinstance(address, str) and address.startswith("unix:")):
        path = str(address)[len("unix:"):] if isinstance(address, str) else str(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = path
    else:
        if isinstance(address, str):
            host, _, port = address.rpartition(":")
            address = (host or "127.0.0.1", int(port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = address
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot reach the board at {address}: {exc.strerror or exc}") from None
    return sock


class Board:
    """A connection to an emulated board (``snn-compile serve``). Loads ``program`` when given.

    ``token``: the board's shared token (default: the ``SNN_BOARD_TOKEN``
    environment variable), sent in a HELLO before any other request.
    ``limits`` is then what the board allows a client (lanes, steps, sizes).
    """

    def __init__(self, address: str | tuple[str, int] | Path, program: Program | str | Path | None = None,
                 lanes: int = 1, reset_interval: int | None = None, step_period: float = 1e-3,
                 timeout: float = 60.0, token: str | None = None):
        self.step_period = step_period
        self.sock = connect(address, timeout)
        self.round_trips: list[tuple[int, float]] = []
        self._info = None
        self.limits = None
        try:
            token = token if token is not None else os.environ.get(TOKEN_ENV)
            if token:
                self.limits = self._request(Message(protocol.HELLO, {"token": token})).meta["limits"]
            if program is not None or lanes != 1 or reset_interval is not None:
                self.load(program, lanes, reset_interval)
        except BaseException:
            self.close()
            raise

    # -- the chip's calls ------------------------------------------------------

    def load(self, program: Program | str | Path | bytes | None = None, lanes: int = 1,
             reset_interval: int | None = None) -> dict:
        """Load ``program`` (a Program, a program file or its bytes; None: the one the board was started
        with); returns its info."""
        arrays = {} if program is None else {"program": np.frombuffer(_program_bytes(program), dtype=np.uint8)}
        reply = self._request(Message(protocol.LOAD, {"lanes": lanes, "reset_interval": reset_interval}, arrays))
        self._info = reply.meta
        return self._info

    def info(self) -> dict:
        if self._info is None:
            self._info = self._request(Message(protocol.INFO)).meta
        return self._info

    def step(self, inputs, probe: bool | Iterable[str] = False) -> StepOutput:
        inputs = np.asarray(inputs)
        if inputs.dtype.kind == "f" or inputs.dtype.str not in protocol.ARRAY_DTYPES:
            inputs = inputs.astype(np.int32)
        started = time.perf_counter()
        reply = self._request(Message(protocol.STEP, {"probe": probe if isinstance(probe, bool) else list(probe)},
                                      {"inputs": inputs}))
        self.round_trips.append((len(inputs), time.perf_counter() - started))
        result = StepOutput(output=reply.arrays["output"])
        for key, array in reply.arrays.items():
            kind, _, layer = key.partition("/")
            if kind in ("spikes", "u", "v"):
                getattr(result, kind)[layer] = array
        return result

    def reset(self) -> None:
        self._request(Message(protocol.RESET))

    def counters(self) -> dict:
        """The board's counters plus ``host``: what this client measured over the socket."""
        counters = self._request(Message(protocol.COUNTERS)).meta
        counters["host"] = self.timing()
        return counters

    def timing(self) -> dict:
        """Round-trip timing of the step requests so far: per-step latency (median over
        requests of round trip / steps), throughput and real-time factor."""
        steps = sum(n for n, _ in self.round_trips)
        wall = sum(seconds for _, seconds in self.round_trips)
        per_step = [seconds / n for n, seconds in self.round_trips if n]
        return {"requests": len(self.round_trips), "steps": steps, "wall_seconds": wall,
                "step_latency_median": float(np.median(per_step)) if per_step else None,
                "steps_per_second": steps / wall if wall > 0 else None,
                "real_time_factor": steps * self.step_period / wall if wall > 0 else None,
                "step_period": self.step_period}

    def shutdown(self) -> None:
        """Stop the server (every connection to it), then close this one."""
        try:
            self._request(Message(protocol.SHUTDOWN))
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, message: Message) -> Message:
        try:
            protocol.send(self.sock, message)
            reply = protocol.receive(self.sock)
        except protocol.ConnectionClosed:
            raise BoardError("the board closed the connection") from None
        except OSError as exc:
            raise BoardError(f"lost the board: {exc}") from None
        if reply.kind == protocol.ERROR:
            raise BoardError(f"board: {reply.meta.get('error')}")
        return reply


def _program_bytes(program: Program | str | Path | bytes) -> bytes:
    if isinstance(program, bytes):
        return program
    return program.to_bytes() if isinstance(program, Program) else Path(program).read_bytes()
