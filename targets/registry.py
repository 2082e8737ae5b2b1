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


TARGETS = {
    "loihi2": Target("loihi2", "native bit-accurate Loihi 2 emulator", "program", _loihi2),
    "reference": Target("reference", "float model as trained (zero delay)", "graph", _reference),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise UserError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
    return TARGETS[name]
