"""What every command shares: one-line option errors, validators, help texts."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from snn_compile.compile import MAX_STEPS
from toolchain.errors import UserError


DATA_HELP = ("your own data instead of --dataset: an .npz with x_train/y_train/x_test/y_test (or x/y, "
             "split 80/20 by seed 0); frames [N,C,H,W] or [N,F], or spike trains [N,T,...]; integers 0..levels "
             "or floats in [0, 1]; integer labels or float regression targets (frontends/user_data.py)")


FORCE_HELP = "replace the output directory if an earlier snn-compile run wrote it (never any other directory)"


FRAMEWORK_HELP = ("framework that wrote the NIR file: its conventions give dt, reset and IF stepping when the file "
                  "does not say (snntorch, norse, sinabs, rockpool, lava-dl, spinnaker2, nir; default: named in the "
                  "file's metadata, else snn-compile's)")


RESET_HELP = "neuron reset, overriding the file and --framework (default: the file's, else the framework's, else zero)"


WORKERS_HELP = ("split the test samples across N parallel processes, one batch (--batch-size) per task, with the "
                "numbers of one process (default: none, every sample in this process); with --cluster, at most N "
                "batches at a time (default: as many as the cluster has CPUs)")
CLUSTER_HELP = ("where the split's batches run: local (default: processes on this machine, with --workers), auto "
                "(the Ray cluster this machine joined with `ray start`), HOST:PORT (a Ray cluster's head) or "
                "ray://HOST:PORT (its client port); the model shipped once, each batch's samples with it (needs "
                "pip install 'snn-compile[cluster]')")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of commands that run a model on test samples: where, how many at once, and
    whether the samples are split across workers."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the loihi2 emulator "
                   "runs: auto (default: a CUDA GPU when torch sees one, else the CPU), cpu, or cuda; the integers "
                   "are the same")
    p.add_argument("--batch-size", type=int, default=256, help="samples run at once (default 256)")
    p.add_argument("--workers", type=int, help=WORKERS_HELP)
    p.add_argument("--cluster", default="local", help=CLUSTER_HELP)


class Parser(argparse.ArgumentParser):
    """Option errors are user errors like any other: one line, exit status 2, no usage block."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog.replace(' [compile]', ' compile')} --help`)")


def output_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("the output path is empty; name a file or directory")
    return Path(text)


def one_line(message) -> str:
    """Messages from libraries (HDF5, torch) may span lines; an error is one."""
    return " ".join(str(message).split())


def positive(**values):
    for name, value in values.items():
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def number_list(text: str, kind, option: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} {text!r}: expected comma-separated numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{option} {text!r}: expected finite numbers")
    return values


SEED_MAX = 2**32 - 1  # numpy's generators take seeds in 0..2**32 - 1


def check_seed(seed: int, option: str) -> None:
    if not 0 <= seed <= SEED_MAX:
        raise UserError(f"{option} must be in 0..{SEED_MAX}, got {seed}")


def check_learning_rate(rate: float) -> None:
    if not (math.isfinite(rate) and rate > 0):
        raise UserError(f"--lr must be a finite number above 0, got {rate}")


def check_steps(steps: int | None) -> None:
    if steps is not None and steps > MAX_STEPS:
        raise UserError(f"--steps {steps} is over the maximum of {MAX_STEPS} time steps")


def require_memory(needed: int, what: str, fix: str) -> None:
    """Refuse work that would exhaust this machine's memory, before it starts."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise UserError(f"{what} needs about {needed / 2**30:.3g} GiB of memory, more than this machine's "
                        f"{available / 2**30:.3g} GiB; {fix}")


def require_run_memory(graph, batch_size: int) -> None:
    from snn_compile.evaluate import run_memory_bytes

    require_memory(run_memory_bytes(graph, batch_size), f"running {graph.steps} steps in batches of "
                   f"{batch_size}", "lower --batch-size (or --steps)")


def model_with_data(args, command: str):
    """(model source, dataset) for a command that evaluates on a test split: ``--data FILE.npz`` (checked for
    what ``command`` takes) or ``--dataset`` / the dataset the model names."""
    from frontends.datasets import load_dataset
    from snn_compile.compile import load_model
    from toolchain.nir_import import ImportOptions

    user_data = None
    if args.data:
        from frontends.user_data import read_user_data
        user_data = read_user_data(args.data, args.dataset).require(command)
    import_options = ImportOptions(steps=args.steps, framework=args.framework, reset=args.reset)
    source = load_model(args.model, user_data.import_hints(import_options) if user_data else import_options)
    if user_data:
        return source, user_data.for_model(source.graph)
    dataset_name = args.dataset or source.dataset
    if not dataset_name:
        raise UserError(f"a NIR model needs --dataset (or --data FILE.npz) to {command} on")
    return source, load_dataset(dataset_name, args.data_dir)

