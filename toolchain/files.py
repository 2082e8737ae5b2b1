"""Reading inputs with clear errors; writing outputs so that a failure, Ctrl-C or SIGTERM never
leaves one half-written, and so that an output never replaces what the user did not ask to replace.

Files are written to a temporary sibling and renamed into place (``atomic_path``);
output directories are built in a hidden sibling and renamed into place
(``StagingDir``). Every output directory carries a marker file saying what wrote
it: only a directory with that marker is ever replaced, and only when asked.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from toolchain.errors import UserError

MARKER = ".snn-compile"
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


STOP = threading.Event()
"""Set by a handler of SIGINT/SIGTERM before it raises: the exception it raises can be lost (raised inside
an object's finalizer, Python only prints it), and no output is committed once a stop was asked for."""


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, so the steps inside it finish together.
    Threads and processes started inside inherit the held signals."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def release_signals() -> None:
    """Undo ``deferred_signals`` in a process forked inside it, once it has its own handlers."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED_SIGNALS)


def public_mode(directory: bool = False) -> int:
    """The mode a plain ``open`` or ``mkdir`` would give: temporary files are created private
    (0600, 0700), outputs must respect the user's umask like any other file."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with deferred_signals():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
            os.close(fd)
        yield tmp
        os.chmod(tmp, public_mode())
        os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through ``atomic_path``. Formats built in memory first (torch.save,
    HDF5) leave nothing to a C library on a failing disk: the write fails as a plain ``OSError``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


@contextmanager
def _input_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def read_input(path: str | Path) -> bytes:
    """The bytes of an input file, or a ``UserError`` that says why they cannot be read."""
    with _input_errors(Path(path)):
        return Path(path).read_bytes()


def check_readable(path: str | Path) -> None:
    """A ``UserError`` that says why an input file cannot be read, before a reader misreports it."""
    with _input_errors(Path(path)):
        with open(path, "rb"):
            pass


def check_output_file(path: str | Path, inputs: tuple = ()) -> None:
    """Refuse, before any work, an output file that cannot be written or would replace an input."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output {path} is a directory; name a file with -o")
    for given in inputs:
        if path.resolve() == Path(given).resolve():
            raise UserError(f"output {path} is the input file; choose another name with -o")
    _check_parent(path)


def read_marker(directory: str | Path) -> dict | None:
    """What wrote ``directory`` (the marker's record), or None when snn-compile did not."""
    try:
        record = json.loads((Path(directory) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class StagingDir:
    """Build an output directory in a hidden sibling and move it into place when the block succeeds.

    The checks run when the object is created, so a command makes them before
    any work: an existing directory is replaced only if snn-compile wrote it
    (its marker) and ``force`` says so, never the working directory or one
    above it, the home directory, or a directory holding one of ``inputs``.
    Replacing renames the old directory aside, the new one in, then deletes
    the old one, so a concurrent writer of the same directory finds either
    output complete; the one that loses the race says so in one line.
    ``record``: what the marker says about the output (the command that wrote it).
    """

    def __init__(self, out_dir: str | Path, record: dict, force: bool = False, inputs: tuple = (),
                 partial: bool = False):
        self.out_dir = Path(out_dir)
        self.record = {"written_by": "snn-compile", **record}
        self.force = force
        self.partial = partial
        """True: what is written is valid however the run ends (a sweep's finished rows), so it is
        committed after a stop was asked for too."""
        self.staging: Path | None = None
        _refuse_protected(self.out_dir, inputs)
        self._check_replaceable()
        _check_parent(self.out_dir)

    def __enter__(self) -> Path:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        try:  # a signal held while the staging directory is made arrives as the block ends: clean up then too
            with deferred_signals():
                self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", suffix=".tmp",
                                                     dir=self.out_dir.parent))
                (self.staging / MARKER).write_text(json.dumps(self.record, indent=2) + "\n")
        except BaseException:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
            raise
        return self.staging

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._commit()
        finally:
            with deferred_signals():
                shutil.rmtree(self.staging, ignore_errors=True)
        return False

    def _check_replaceable(self) -> None:
        """Whether ``out_dir`` may be written: absent, empty, or snn-compile's and ``force``."""
        path = self.out_dir
        if path.is_symlink():
            raise UserError(f"output directory {path} is a symbolic link; name a new directory with -o")
        if not path.exists():
            return
        if not path.is_dir():
            raise UserError(f"output directory {path}: a file of that name exists; choose another name with -o")
        try:
            if not any(path.iterdir()):
                return
        except OSError as exc:
            raise UserError(f"output directory {path}: cannot read it ({exc.strerror})") from None
        record = read_marker(path)
        if record is None:
            raise UserError(f"output directory {path} exists and was not written by snn-compile; choose another "
                            "name with -o (nothing was changed)")
        if not self.force:
            raise UserError(f"output directory {path} exists (written by {_writer(record)}); pass --force to "
                            "replace it")

    def _commit(self) -> None:
        os.chmod(self.staging, public_mode(directory=True))
        with deferred_signals():
            if STOP.is_set() and not self.partial:
                raise KeyboardInterrupt("stop requested")
            if _rename_into_place(self.staging, self.out_dir):
                return
            try:  # another writer finished first, or the directory was ours and force said to replace it
                self._check_replaceable()
            except UserError:
                raise UserError(f"output directory {self.out_dir} was written by another snn-compile while this "
                                "one ran; kept it and discarded this output (pass --force to replace it)") from None
            aside = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", suffix=".old", dir=self.out_dir.parent))
            try:
                try:
                    os.rename(self.out_dir, aside)
                except FileNotFoundError:  # a concurrent writer moved it aside first
                    pass
                if not _rename_into_place(self.staging, self.out_dir):
                    raise UserError(f"output directory {self.out_dir} was replaced by another snn-compile at the "
                                    "same time; kept its output and discarded this one")
            finally:
                shutil.rmtree(aside, ignore_errors=True)


def _rename_into_place(source: Path, target: Path) -> bool:
    """Rename the directory ``source`` to ``target``; False when a non-empty ``target`` is in the way."""
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def _writer(record: dict) -> str:
    command = record.get("command")
    return f"snn-compile {command}" if command else "snn-compile"


def _refuse_protected(out_dir: Path, inputs) -> None:
    """Directories no output may replace, whatever the options."""
    target = out_dir.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise UserError(f"output directory {out_dir} is the working directory or holds it; name a new directory "
                        "with -o")
    home = Path.home().resolve()
    if target == home or target in home.parents:
        raise UserError(f"output directory {out_dir} is the home directory or holds it; name a new directory "
                        "with -o")
    for given in inputs:
        if target in Path(given).resolve().parents:
            raise UserError(f"output directory {out_dir} holds the input {given}; name another directory with -o")


def _check_parent(path: Path) -> None:
    """The nearest existing directory above ``path`` must be a directory this process may write in."""
    ancestor = path.absolute().parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"output {path}: {ancestor} is a file, not a directory; choose another -o")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"output {path}: cannot write in {ancestor} (permission denied); choose another -o")
