"""Chips described by data: every number in a spec file carries its source."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from toolchain.errors import UserError
from toolchain.program import WIDTHS

SPEC_DIR = Path(__file__).parent


@dataclass(frozen=True)
class ChipSpec:
    """A chip's limits, read from ``targets/chips/<name>.json``.

    Each entry there is ``{"value": ..., "source": "..."}`` so a report can
    say where a number comes from. ``costs``: per-operation energy and time.
    ``measured``: figures measured on the chip's silicon (static power).
    """

    name: str
    description: str
    limits: dict
    costs: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)

    def limit(self, key: str):
        return self.limits[key]["value"]

    def cost(self, key: str) -> float:
        """Per-operation energy (pJ) or time (ns) for the chip's cost model."""
        if key not in self.costs:
            raise UserError(f"chip {self.name}: its spec has no cost figure {key!r}")
        return float(self.costs[key]["value"])

    def measured_value(self, key: str) -> float:
        """A figure measured on silicon (e.g. static power in W), for the chip's cost model."""
        if key not in self.measured:
            raise UserError(f"chip {self.name}: its spec has no measured figure {key!r}")
        return float(self.measured[key]["value"])

    def source(self, key: str) -> str:
        return self.limits[key]["source"]


def available_chips() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.json"))


def load_chip(name: str) -> ChipSpec:
    """The spec ``targets/chips/<name>.json``, read once per process (it is asked for per run, per row
    and per bit check; a spec is frozen and its tables are never written)."""
    return _read_spec(name, SPEC_DIR)


@functools.lru_cache(maxsize=None)
def _read_spec(name: str, spec_dir: Path) -> ChipSpec:
    path = spec_dir / f"{name}.json"
    if not path.is_file():
        raise UserError(f"unknown chip {name!r}; known chips: {', '.join(available_chips())}")
    try:
        data = json.loads(path.read_text())
        spec = ChipSpec(name=data["name"], description=data["description"], limits=data["limits"],
                        costs=data.get("costs", {}), measured=data.get("measured", {}))
    except (json.JSONDecodeError, KeyError) as exc:
        raise UserError(f"{path}: malformed chip spec ({exc})") from None
    check_program_widths(spec, path)
    return spec


def check_program_widths(spec: ChipSpec, where) -> None:
    """A spec that states the neuron widths of the program format must state the ones it holds."""
    for key, width in WIDTHS.items():
        if key in spec.limits and spec.limit(key) != width:
            raise UserError(f"{where}: {key} is {spec.limit(key)}, but programs hold {width} (toolchain/program.py)")
