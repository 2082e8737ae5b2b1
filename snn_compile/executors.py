"""Where independent tasks run: worker processes on this machine, or a Ray cluster.

Both executors take one ``task(shared, item)``, the ``shared`` value every
task reads (shipped to each worker once, not per item) and the items, and
yield one ``Outcome`` per item as it finishes, in the order they finish. A
task whose worker process dies (killed, out of memory, its machine lost) is
run once more; if its worker dies again the outcome carries the error and the
other items go on. An exception the task raises is its own result, the same
on every attempt: it ends the run and reaches the caller.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator

from toolchain.errors import UserError
from toolchain.files import deferred_signals, release_signals

ATTEMPTS = 2
"""Runs of an item whose worker dies: the first and one retry."""
PARENT_CHECK_S = 1.0
"""How often an idle local worker checks that the process that started it is still there."""


@dataclass(frozen=True)
class Outcome:
    """An item's end: its ``result``, or ``error`` (why its workers died) when it failed.
    ``index``: its position among the items."""

    index: int
    item: Any
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Retry:
    """An item whose worker died and that runs again: ``error`` says how it died."""

    index: int
    item: Any
    error: str


class LocalExecutor:
    """Up to ``workers`` processes on this machine (default: one per core). Each starts with
    ``shared`` (inherited when the process forks), runs with one thread (``one_thread``: the
    executor provides the parallelism, and a forked process must not start OpenMP threads) and
    ``start()`` once, then one item at a time;
    a dead one is replaced. Ctrl-C and SIGTERM reach the parent, which ends the workers."""

    def __init__(self, workers: int | None = None, start: Callable[[], None] | None = None):
        self.workers, self.start = workers or os.cpu_count() or 1, start

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.workers} local worker process{'es' if self.workers != 1 else ''}"

    def slots(self) -> int:
        return self.workers

    def run(self, task: Callable, shared: Any, items: list) -> Iterator[Outcome | Retry]:
        pending, attempts = deque(range(len(items))), [0] * len(items)
        busy: dict[_Worker, int] = {}
        idle: list[_Worker] = []
        started: list[_Worker] = []

        def hand_out() -> None:
            while pending and len(busy) < self.workers:
                worker = idle.pop() if idle else _Worker(task, shared, self.start, started)
                index = pending.popleft()
                attempts[index] += 1
                worker.send((index, items[index]))
                busy[worker] = index

        try:
            hand_out()
            while busy:
                ready = set(wait([w.connection for w in busy] + [w.process.sentinel for w in busy]))
                outcomes = []
                for worker in [w for w in busy if w.connection in ready or w.process.sentinel in ready]:
                    index = busy.pop(worker)
                    reply = worker.receive()
                    if reply is not None:
                        idle.append(worker)
                        outcomes.append(Outcome(index, items[index], result=_result(reply)))
                        continue
                    error = worker.death()
                    if attempts[index] < ATTEMPTS:
                        pending.appendleft(index)
                        outcomes.append(Retry(index, items[index], error))
                    else:
                        outcomes.append(Outcome(index, items[index], error=error))
                hand_out()  # the free workers go on while the caller handles the outcomes
                yield from outcomes
        finally:  # done, interrupted, or the caller stopped early: end every worker now
            for worker in started:
                if worker in idle:
                    worker.close()
                else:
                    worker.kill()


class _Worker:
    """One process of a ``LocalExecutor`` and its end of the pipe."""

    def __init__(self, task: Callable, shared: Any, start: Callable[[], None] | None, started: list):
        """``started``: where the worker lists itself before it starts, so that a Ctrl-C arriving
        as it starts still finds it to end. Daemonic: an exit never waits for it."""
        context = multiprocessing.get_context()
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, os.getpid(), task, shared, start), daemon=True)
        started.append(self)
        with deferred_signals():  # started with Ctrl-C held, until it has its own handlers
            self.process.start()
        child.close()

    def send(self, message) -> None:
        """Send ``message``; a process that died meanwhile shows as dead to ``wait`` and ``receive``."""
        try:
            self.connection.send(message)
        except OSError:
            pass

    def receive(self):
        """The reply to the item sent, or None when the process died before giving one."""
        try:
            return self.connection.recv() if self.connection.poll() else None
        except (EOFError, OSError):
            return None

    def death(self) -> str:
        self.process.join()
        code = self.process.exitcode
        self.connection.close()
        if code is not None and code < 0:
            return f"its worker process was killed by {signal.Signals(-code).name}"
        return f"its worker process exited with status {code}"

    def close(self) -> None:
        """End an idle worker: it reads the end of its items."""
        self.send(None)
        self.process.join()
        self.connection.close()

    def kill(self) -> None:
        """End a busy worker now, not after its item."""
        if self.process.pid is not None:
            self.process.terminate()
            self.process.join()
        self.connection.close()


def _serve(connection, parent: int, task: Callable, shared: Any, start: Callable[[], None] | None) -> None:
    """A worker's loop: an item in, ("ok", result) or ("raised", exception, traceback) out, until
    None comes or the parent is gone (killed: its siblings hold copies of the pipe, so it never
    reads as closed). It ignores Ctrl-C (the terminal sends it to every process; the parent
    decides) and dies on SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    release_signals()
    one_thread()  # GNU OpenMP is not fork-safe: a forked child using several threads after the parent did hangs
    if start is not None:
        start()
    while True:
        while not connection.poll(PARENT_CHECK_S):
            if os.getppid() != parent:
                return
        message = connection.recv()
        if message is None:
            return
        _, item = message
        try:
            reply = ("ok", task(shared, item))
        except Exception as exc:  # the task's own error: the parent raises it
            reply = ("raised", exc, traceback.format_exc())
        try:
            connection.send(reply)
        except OSError:  # the parent ended
            return
        except Exception as exc:  # the result or the exception does not pickle
            connection.send(("raised", RuntimeError(f"a worker's reply could not be sent back: {exc}"),
                             traceback.format_exc()))


def _result(reply):
    if reply[0] == "ok":
        return reply[1]
    _, exc, trace = reply
    if not isinstance(exc, UserError):
        exc.add_note(f"raised in a worker process:\n{trace}")
    raise exc


def cluster_executor(cluster: str = "local", workers: int | None = None):
    """Where ``--cluster`` runs the tasks: "local", processes on this machine (``workers``, default
    one per core); else a Ray address ("auto", "ray://HOST:PORT", "HOST:PORT"), one Ray task each
    (at most ``workers`` at a time when given). Each worker runs with ``one_thread``."""
    if cluster == "local":
        return LocalExecutor(workers)
    if cluster != "auto" and ":" not in cluster:
        raise UserError(f"--cluster {cluster!r}: choose local, auto, HOST:PORT or ray://HOST:PORT")
    return RayExecutor(cluster, workers, one_thread)


def one_thread():
    """Each worker uses one core, the executor provides the parallelism: one torch thread and one
    BLAS thread (numpy's BLAS threads spin while they wait, and two workers' spinning on the same
    cores made a digits sweep several times slower; bench/bench_sweep_cluster.py)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


class RayExecutor:
    """Every item a Ray task (one CPU each) on the cluster at ``address`` ("auto": the one this
    machine belongs to; "ray://HOST:PORT": through the Ray client), or on the Ray this process has
    already started or joined. ``shared`` goes to the object store once; each machine fetches it
    once. ``workers``: at most that many tasks at a time (default: as many as the cluster takes)."""

    def __init__(self, address: str | None, workers: int | None = None, start: Callable[[], None] | None = None):
        _import_ray()  # before any work: a missing Ray is a one-line error up front
        self.address, self.workers, self.start = address, workers, start
        self._started = False

    def describe(self) -> str:
        import ray
        cpus = int(ray.cluster_resources().get("CPU", 0))
        return f"Ray at {self.address or 'the running instance'} ({cpus} CPUs)"

    def slots(self) -> int:
        import ray
        return self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

    def __enter__(self) -> RayExecutor:
        import ray
        if not ray.is_initialized():
            in_main_thread = threading.current_thread() is threading.main_thread()
            previous = signal.getsignal(signal.SIGTERM) if in_main_thread else None
            if self.address not in (None, "auto"):
                _token_auth()
            try:
                ray.init(address=self.address, logging_level="warning", log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(f"--cluster {self.address}: cannot connect to Ray ({_first_line(exc)})") from None
            finally:  # ray.init makes SIGTERM exit at once; the caller's handler saves the finished work first
                if in_main_thread:
                    signal.signal(signal.SIGTERM, previous)
            self._started = True
        return self

    def __exit__(self, *exc_info) -> bool:
        if self._started:
            import ray
            ray.shutdown()
            self._started = False
        return False

    def run(self, task: Callable, shared: Any, items: list) -> Iterator[Outcome]:
        import ray
        from ray.exceptions import RayError, RayTaskError

        remote = ray.remote(num_cpus=1, max_retries=ATTEMPTS - 1, retry_exceptions=False)(_ray_task)
        shared_ref = ray.put((task, shared, self.start))
        queue, running = deque(range(len(items))), {}
        limit = self.workers or len(items)

        def hand_out() -> None:
            while queue and len(running) < limit:
                index = queue.popleft()
                running[remote.remote(shared_ref, items[index])] = index

        try:
            hand_out()
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                index = running.pop(ready[0])
                hand_out()  # before the caller handles this outcome
                try:
                    outcome = Outcome(index, items[index], result=ray.get(ready[0]))
                except RayTaskError as exc:  # the task raised: the same error the local pool gives
                    raise (exc.cause if isinstance(exc.cause, BaseException) else exc) from None
                except RayError as exc:  # its worker or machine died, on every attempt
                    outcome = Outcome(index, items[index], error=f"its Ray worker died ({_first_line(exc)})")
                yield outcome
        finally:
            for ref in running:
                ray.cancel(ref, force=True)


def _ray_task(shared, item):
    task, value, start = shared
    if start is not None:
        start()
    return task(value, item)


def _token_auth() -> None:
    """Send this machine's Ray auth token to a cluster named by its address, as ``ray start`` and
    ``ray.init("auto")`` do for one they find themselves: when ``RAY_AUTH_MODE`` is unset and a
    token is at hand (``~/.ray/auth_token``, ``$RAY_AUTH_TOKEN`` or ``$RAY_AUTH_TOKEN_PATH``), Ray
    2.x turns token authentication on only for a cluster it finds, never for an explicit address,
    so a head holding a token refused this driver (``RAY_AUTH_MODE=disabled`` still opts out)."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--cluster needs Ray: pip install 'snn-compile[cluster]' (or pip install ray)") from None
    return ray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
