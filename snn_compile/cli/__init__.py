"""``snn-compile``: compile a model for a chip, run it, report cost and accuracy.

Errors a user can cause end in one line on stderr and exit status 2. One module per command;
this one dispatches.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
import warnings

from snn_compile.cli.common import one_line
from toolchain.errors import UserError
from toolchain.files import STOP

COMMANDS = {
    "compile": ("compile", "parser", "run"),
    "train": ("train", "parser", "run"),
    "sweep": ("sweep", "parser", "run"),
    "train-ann": ("train", "ann_parser", "run_ann"),
    "convert": ("convert", "parser", "run"),
    "serve": ("serve", "parser", "run"),
    "compare": ("compare", "parser", "run"),
    "lava": ("serve", "lava_parser", "run_lava"),
}
"""Command -> (module under snn_compile.cli, its parser, its handler): a module is imported only
when its command runs, so ``--help`` and option errors answer at once."""


DESCRIPTION = """\
Compile a spiking neural network for a neuromorphic chip, run it bit-accurately, and report
accuracy, spikes and model size.

commands:
  snn-compile MODEL [options]         compile MODEL (a checkpoint .pt or a NIR graph .nir) and
                                      evaluate it (same as `snn-compile compile MODEL`)
  snn-compile train [options]         train a spiking network in snnTorch and save a checkpoint
  snn-compile sweep MODEL [options]   accuracy, size and cost across weight bits x pruning ratios
  snn-compile train-ann [options]     train a ReLU network (an ANN) to convert
  snn-compile convert ANN [options]   convert a ReLU network into a spiking one, as a NIR graph
                                      that `snn-compile OUT.nir` compiles without further options
  snn-compile serve PROGRAM [options] run a compiled program.h5 as an emulated board that a host
                                      drives over a socket (hardware in the loop)

  snn-compile compare MODEL [options] accuracy per backend, label agreement, and spike-exact
                                      agreement of the loihi2 emulator with Lava (exit 1 if they differ)
  snn-compile lava setup              create the Lava environment (lava-nc 0.10.0, needs Python 3.10)

Run `snn-compile COMMAND --help` for the options of each command.

examples:
  snn-compile train --dataset digits --arch mlp -o model.pt
  snn-compile model.pt --target loihi2 --bits 8
  snn-compile graph.nir --target loihi2 --steps 16 --input-shape 1,8,8 --dataset digits
  snn-compile sweep model.pt --bits 16,8,4 --prune 0.1,0.2,0.3
  snn-compile train-ann --dataset fmnist -o ann.pt
  snn-compile convert ann.pt --method qffs --steps 8 -o snn.nir && snn-compile snn.nir --bits 8
  snn-compile serve model-loihi2-8b/program.h5 --port 7421
  snn-compile compare model.pt --targets reference,loihi2,lava --bits 8 --samples 200
"""


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken the way Ctrl-C is: outputs in progress are removed on the way out."""


_TERMINATED = threading.Event()
"""SIGTERM (not Ctrl-C) asked the run to stop: its exit status is 143."""


def _terminate(signum, frame):
    _TERMINATED.set()
    STOP.set()
    raise Terminated()


def _interrupt(signum, frame):
    STOP.set()
    raise KeyboardInterrupt()


def _quiet_stop(unraisable) -> None:
    """A stop raised inside a finalizer cannot propagate, and Python would print it as "Exception
    ignored"; ``main`` still ends the run as stopped (``STOP``), so only other errors are shown."""
    if not (STOP.is_set() and issubclass(unraisable.exc_type, KeyboardInterrupt)):
        sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(DESCRIPTION)
        return 0
    command = argv.pop(0) if argv[0] in COMMANDS else "compile"
    in_main_thread = threading.current_thread() is threading.main_thread()
    STOP.clear()
    _TERMINATED.clear()
    previous = {sig: signal.signal(sig, handler) for sig, handler in ((signal.SIGTERM, _terminate),
                                                                     (signal.SIGINT, _interrupt))} \
        if in_main_thread else {}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _quiet_stop
    try:
        with warnings.catch_warnings():  # library warnings are noise on a command line; real problems are errors
            warnings.simplefilter("ignore")
            status = _run(command, argv)
        if STOP.is_set():  # the handler's exception was lost in a finalizer: still a stopped run
            raise KeyboardInterrupt()
        return status
    except UserError as exc:
        print(f"snn-compile: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the system refused a read or write the checks could not foresee (a full disk)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"snn-compile: error: {where}{one_line(exc.strerror or exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated) or _TERMINATED.is_set()
        print(f"snn-compile: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        sys.unraisablehook = previous_hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(command: str, argv: list[str]) -> int:
    module, parser, handler = COMMANDS[command]
    commands = importlib.import_module(f"snn_compile.cli.{module}")
    return getattr(commands, handler)(getattr(commands, parser)().parse_args(argv))
