"""Run a file reader in a child process, so that a malformed file cannot take this process down.

HDF5 files (program.h5, NIR graphs, netx networks) are parsed by libhdf5, a C
library: a few changed bytes can make it crash with a segmentation fault or
ask for gigabytes. Reading such a file in a forked child turns every one of
those outcomes into a ``UserError`` in the parent: the child's crash, its
memory cap (an address-space limit over what it already uses) and a time
limit. Only the reader's result, pickled by the child from objects it built,
comes back; the parent never touches the untrusted bytes.
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import stat
import threading
import time
from typing import Any, Callable

from toolchain.errors import UserError

DEFAULT_MEMORY_BYTES = 2 << 30
DEFAULT_TIMEOUT_SECONDS = 60.0
_CHUNK = 1 << 20
_CANCEL_POLL_SECONDS = 0.05


def call_isolated(reader: Callable[..., Any], *args, what: str, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                  timeout: float = DEFAULT_TIMEOUT_SECONDS, cancel: threading.Event | None = None) -> Any:
    """``reader(*args)`` computed in a forked child; ``UserError`` naming ``what`` if the child fails.

    A ``UserError`` the reader raises comes back as itself; any other exception
    becomes ``UserError("{what}: ...")`` with the exception's first line; a
    child that crashes, exceeds ``memory_bytes`` of new address space or
    ``timeout`` seconds is killed and reported the same way. Setting
    ``cancel`` (a server shutting down) kills the child at once; an
    interrupt while waiting (Ctrl-C) kills and reaps it before it goes on.
    """
    read_end, write_end = os.pipe()
    # Ctrl-C waits until each side is inside its try: the parent must not lose the child's pid, nor the
    # child run the parent's code
    interrupts = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, interrupts)
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:  # the child: read, send the pickled outcome, leave without running the parent's cleanup
        status = 0
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, interrupts)
            _close_inherited_channels(keep=write_end)
            _limit_memory(memory_bytes)
            try:
                outcome = ("ok", reader(*args))
            except UserError as exc:
                outcome = ("user", str(exc))
            except MemoryError:
                outcome = ("error", f"reading it needs more than {memory_bytes >> 20} MiB of memory")
            except BaseException as exc:  # noqa: BLE001 - every failure of the reader is reported, none escapes
                outcome = ("error", _first_line(exc))
            payload = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        except BaseException:  # noqa: BLE001 - a child that cannot even report exits non-zero
            status = 1
        finally:
            os._exit(status)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, interrupts)
        os.close(write_end)
        payload, timed_out = _read_all(read_end, timeout, cancel)
        if timed_out:
            os.kill(pid, signal.SIGKILL)  # not yet reaped, so the pid is still the child's
        _, wait_status = os.waitpid(pid, 0)
    except BaseException:  # interrupted while waiting (Ctrl-C): no reader outlives the call, not even a zombie
        _kill(pid)
        raise
    finally:
        os.close(read_end)
    if cancel is not None and cancel.is_set():
        raise UserError(f"{what}: reading it was cancelled")
    if timed_out:
        raise UserError(f"{what}: reading it took longer than {timeout:g} s; the file is malformed or too large")
    if os.WIFSIGNALED(wait_status):
        name = signal.Signals(os.WTERMSIG(wait_status)).name
        raise UserError(f"{what}: malformed file (its reader crashed with {name})")
    if not payload:
        raise UserError(f"{what}: malformed file (its reader ran out of memory or failed without a message)")
    kind, value = pickle.loads(payload)
    if kind == "ok":
        return value
    if kind == "user":
        raise UserError(value)
    raise UserError(f"{what}: malformed file ({value})")


def _close_inherited_channels(keep: int) -> None:
    """Close the pipes and sockets the child inherited, but ``keep``: a child forked by another thread
    must not hold this call's pipe (its end of file would wait for both children), nor a server's client
    sockets (their peers would not see them close while the child reads)."""
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd <= 2 or fd == keep:
            continue
        try:
            mode = os.fstat(fd).st_mode
        except OSError:  # the descriptor of the listing itself, closed by now
            continue
        if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
            os.close(fd)


def _limit_memory(memory_bytes: int) -> None:
    """Cap the child's address space at what it maps now plus ``memory_bytes``."""
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + memory_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _read_all(fd: int, timeout: float, cancel: threading.Event | None) -> tuple[bytes, bool]:
    """Everything written to ``fd`` until it closes, or ``(partial, True)`` after ``timeout`` seconds
    or once ``cancel`` is set."""
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (cancel is not None and cancel.is_set()):
            return b"".join(chunks), True
        wait = remaining if cancel is None else min(remaining, _CANCEL_POLL_SECONDS)
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            continue
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)


def _kill(pid: int) -> None:
    """Kill and reap ``pid`` (already reaped: nothing to do)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
