"""Targets by name: what the CLI and the evaluator may run a compiled model on.

Adding a target means adding an entry here and a module beside it; no pass
changes. A target runs either the integer ``Program`` or, for the float
reference, the compiler's float ``Graph``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from toolchain.errors import UserError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    runs: Literal["program", "graph"]
    load: Callable[[], Callable]

    def runner(self) -> Callable:
        return self.load()


def _loihi2():
    from targets.loihi2 import run
    return run


def _reference():
    from targets.reference import run
    return run


def _lava():
    from targets.lava.runner import run
    return run


def _digital45nm():
    from targets.digital45nm import run
    return run


TARGETS = {
    "loihi2": Target("loihi2", "native bit-accurate Loihi 2 emulator", "program", _loihi2),
    "digital45nm": Target("digital45nm", "generic digital accelerator, k-bit weights (1..16), priced at 45 nm",
                          "graph", _digital45nm),
    "reference": Target("reference", "float model as trained (zero delay)", "graph", _reference),
    "lava": Target("lava", "Intel's Lava (lava-nc 0.10.0) fixed-point Loihi 2 simulation, in its own "
                   "Python 3.10 environment", "program", _lava),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise UserError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
    return TARGETS[name]
