"""``snn-compile serve PROGRAM`` (an emulated board over a socket) and ``lava setup`` (its environment)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from snn_compile.cli.common import Parser


def parser() -> argparse.ArgumentParser:
    import dataclasses

    from targets.hil.server import LIMIT_OPTIONS, TOKEN_ENV, Limits

    p = Parser(prog="snn-compile serve", description="Run PROGRAM on an emulated board in this process and "
               "serve it over a socket (protocol, limits and trust model: docs/guides/hil.md); a host drives it with "
               "targets.hil.client.Board. Stops on a client's shutdown, SIGTERM or Ctrl-C.")
    p.add_argument("program", type=Path, help="compiled program (program.h5 from `snn-compile MODEL`)")
    p.add_argument("--target", default="loihi2", help="board to emulate: loihi2 (the bit-accurate emulator; "
                   "lava cannot be served: its runner is not step by step)")
    p.add_argument("--host", default="127.0.0.1", help="TCP address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7421, help="TCP port (default 7421; 0 picks a free one)")
    p.add_argument("--unix", type=Path, help="listen on this Unix socket path instead of TCP")
    p.add_argument("--step-period", type=float, default=1e-3, help="seconds of real time per chip step, for the "
                   "real-time factor in the counters (default 1e-3)")
    p.add_argument("--token-file", type=Path, help="a file (mode 0600) holding a shared token that every client "
                   f"must send first (default: the {TOKEN_ENV} environment variable, else no token)")
    limits = p.add_argument_group("limits", "what one client may ask; a request over one gets an error naming it")
    for field in dataclasses.fields(Limits):
        option, unit, bounds = LIMIT_OPTIONS[field.name]
        limits.add_argument(option, dest=field.name, type=type(field.default), default=field.default,
                            metavar={"bytes": "BYTES", "s": "SECONDS"}.get(unit, "N"),
                            help=f"{bounds} (default {field.default}"
                            + (f" = {Limits().shown(field.name)})" if unit == "bytes" else ")"))
    return p


def run(args) -> int:
    import dataclasses

    from targets.hil.server import TOKEN_ENV, Limits, read_token, serve

    limits = Limits(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Limits)})
    token = read_token(args.token_file) if args.token_file is not None else os.environ.get(TOKEN_ENV) or None
    serve(args.program, args.target, args.host, args.port, args.unix, args.step_period, limits=limits, token=token)
    return 0


def lava_parser() -> argparse.ArgumentParser:
    p = Parser(prog="snn-compile lava", description="Manage the Lava environment: lava-nc 0.10.0 "
                                "in its own Python 3.10 virtual environment (SNN_LAVA_VENV, default .lava-venv "
                                "in the repository; the interpreter from SNN_LAVA_PYTHON, PATH or pyenv).")
    p.add_argument("action", choices=("setup",), help="setup: create the environment if it is not complete")
    return p


def run_lava(args) -> int:
    from targets.lava.environment import create

    create()
    return 0
