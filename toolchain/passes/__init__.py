"""Backend passes: small named functions over the graph or the program.

A pipeline is a printable list; the report records which passes ran and with
which options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Pass:
    name: str
    run: Callable[..., Any]
    options: dict = field(default_factory=dict)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}({opts})"


def run_pipeline(value, passes: list[Pass]):
    """Apply each pass in order; each takes the previous result and its options."""
    for p in passes:
        value = p.run(value, **p.options)
    return value
