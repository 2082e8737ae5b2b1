"""The Lava worker environment: lava-nc 0.10.0 needs Python 3.10 and numpy < 2.

Lava does not import on the main environment's Python (>= 3.11), so it lives
in its own virtual environment, created from whichever Python 3.10 can be
found. ``python -m targets.lava.environment`` (what ``make lava`` and
``snn-compile lava setup`` run) creates it; ``--if-available`` (``make
test``) turns a failure into a note, so the suite still runs and the Lava
tests skip with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from toolchain.errors import UserError

LAVA_REQUIREMENT = "lava-nc==0.10.0"
REQUIREMENTS = (LAVA_REQUIREMENT, "xylosim==0.1.3")
"""What the environment holds: Lava, and SynSense's Xylo simulator (C++, wheels for Python 3.10 only),
the external references of the Loihi and Xylo emulators."""
MARKER = ".snn-lava-installed"
OWNER_MARKER = ".snn-lava-environment"
"""Written into the environment as soon as it exists: only a directory holding it (or the
``MARKER`` of a complete one) is ever cleared and created again."""
REPO_ROOT = Path(__file__).resolve().parents[2]
HOW_TO_CREATE = "run `make lava` or `snn-compile lava setup`"
HOW_TO_PROVIDE_PYTHON = ("Lava (lava-nc 0.10.0) needs Python 3.10: install one (e.g. `pyenv install 3.10`) "
                         "or point SNN_LAVA_PYTHON at a python3.10 executable")


def venv_dir() -> Path:
    return Path(os.environ.get("SNN_LAVA_VENV") or REPO_ROOT / ".lava-venv")


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def is_ready() -> bool:
    """True when the environment was created completely (the marker is written last)."""
    marker = venv_dir() / MARKER
    return venv_python().exists() and marker.exists() and marker.read_text().split() == list(REQUIREMENTS)


def _is_python310(executable: str) -> bool:
    """pyenv shims exist on PATH even when they cannot run, so ask the interpreter itself."""
    try:
        out = subprocess.run([executable, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "True"


def find_python310() -> str | None:
    """SNN_LAVA_PYTHON, then python3.10 on PATH, then pyenv's installed 3.10 versions."""
    explicit = os.environ.get("SNN_LAVA_PYTHON")
    if explicit:
        return explicit if _is_python310(explicit) else None
    candidates = [shutil.which("python3.10")]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.10*", "bin", "python3.10")), reverse=True)
    return next((c for c in candidates if c and _is_python310(c)), None)


def check_replaceable(target: Path) -> None:
    """Refuse to clear a directory this module did not create: ``venv --clear`` empties it."""
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise UserError(f"SNN_LAVA_VENV={target} is a file, not a directory; point it at a new directory")
    try:
        empty = not any(target.iterdir())
    except OSError as exc:
        raise UserError(f"SNN_LAVA_VENV={target}: cannot read it ({exc.strerror})") from None
    if not (empty or (target / OWNER_MARKER).is_file() or (target / MARKER).is_file()):
        raise UserError(f"SNN_LAVA_VENV={target} exists and is not a Lava environment snn-compile created; "
                        "point SNN_LAVA_VENV at a new directory (nothing was changed)")


def create(quiet: bool = False) -> Path:
    """Create the environment unless it is complete already; returns its python."""
    if is_ready():
        return venv_python()
    check_replaceable(venv_dir())
    python = find_python310()
    if python is None:
        if os.environ.get("SNN_LAVA_PYTHON"):
            raise UserError(f"SNN_LAVA_PYTHON={os.environ['SNN_LAVA_PYTHON']} is not a working Python 3.10")
        raise UserError(f"no Python 3.10 found. {HOW_TO_PROVIDE_PYTHON}")
    target = venv_dir()
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    say(f"creating the Lava environment {target} from {python} (installs {', '.join(REQUIREMENTS)})")
    _run_step([python, "-m", "venv", "--clear", str(target)])
    (target / OWNER_MARKER).write_text(LAVA_REQUIREMENT + "\n")  # from now on the directory is ours to clear
    for command in ([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                    [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
                    [str(target / "bin" / "python"), "-c", "import lava.magma.core.run_configs, numpy, xylosim.v2"]):
        _run_step(command)
    (target / MARKER).write_text("\n".join(REQUIREMENTS) + "\n")
    say(f"Lava environment ready: {target}")
    return venv_python()


def _run_step(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"creating the Lava environment failed at `{' '.join(command[-3:])}`: {detail[0]}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        create()
    except UserError as exc:
        if "--if-available" in argv:
            print(f"note: no Lava environment ({exc}); the Lava tests will skip")
            return 0
        print(f"snn-compile: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
