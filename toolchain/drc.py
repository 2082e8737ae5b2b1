"""Design rules: every limit a mapped program breaks on a chip, as data.

A ``Violation`` names the layer, the limit, the worst value, the allowed
value and a hint; ``check_fits`` returns all of them (not the first), and
``raise_if_any`` turns them into the one-line error the commands print.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolchain.errors import UserError
from toolchain.mapping import USAGE_OF_LIMIT, Mapping

LIMIT_LABELS = {"neurons_per_core": "neurons", "synapse_memory_bits_per_core": "synapse memory bits",
                "fan_in_axons_per_core": "fan-in axons", "fan_out_axons_per_core": "fan-out axons",
                "max_cores": "cores", "chips": "chips"}

HINTS = {"neurons_per_core": "partition the program again",
         "synapse_memory_bits_per_core": "use fewer weight bits or prune synapses",
         "fan_in_axons_per_core": "prune the layer's inputs so each neuron listens to fewer sources",
         "fan_out_axons_per_core": "prune outgoing synapses so each neuron reaches fewer cores",
         "max_cores": "allow more cores or chips, or shrink the network (fewer weight bits, pruning)",
         "chips": "allow more chips, or shrink the network (fewer weight bits, pruning)"}


@dataclass(frozen=True)
class Violation:
    """A broken limit: per core of ``layer`` (worst core's ``value``, ``cores`` over it), or of a layer
    or the whole network (``layer`` None) on a chip without cores or for a budget (``max_cores``,
    ``chips``). ``label`` and ``hint`` default to the Loihi limits' own; another chip's rules pass
    theirs."""

    layer: str | None
    limit: str
    value: int
    allowed: int
    cores: int = 0
    label: str = ""
    hint: str = ""

    def __post_init__(self):
        if not (self.label and self.hint) and self.limit not in LIMIT_LABELS:
            raise ValueError(f"unknown limit {self.limit!r}")
        if self.value <= self.allowed:
            raise ValueError(f"{self.limit}: {self.value} is within the limit {self.allowed}")
        object.__setattr__(self, "label", self.label or LIMIT_LABELS[self.limit])
        object.__setattr__(self, "hint", self.hint or HINTS[self.limit])

    @property
    def excess(self) -> int:
        return self.value - self.allowed

    def __str__(self) -> str:
        share = f"{self.excess / self.allowed:.0%}" if self.allowed else "no capacity"
        if self.cores:
            return (f"layer {self.layer}: {self.value} {self.label} on a core, over the per-core limit of "
                    f"{self.allowed} by {self.excess} ({share}, {self.cores} core{'s' if self.cores != 1 else ''}); "
                    f"{self.hint}")
        where = "network" if self.layer is None else f"layer {self.layer}"
        return (f"{where}: needs {self.value} {self.label}, over the limit of {self.allowed} by {self.excess} "
                f"({share}); {self.hint}")


def check_fits(mapping: Mapping, chip, max_cores: int | None = None, chips: int | None = None) -> list[Violation]:
    """Every limit ``mapping`` breaks on ``chip``: per-core limits per layer, then the core and
    chip budgets."""
    violations = []
    for layer in dict.fromkeys(c.layer for c in mapping.cores):
        layer_cores = [c for c in mapping.cores if c.layer == layer]
        for limit, field in USAGE_OF_LIMIT.items():
            values = np.array([getattr(c.usage, field) for c in layer_cores])
            over = values > chip.limit(limit)
            if over.any():
                violations.append(Violation(layer, limit, int(values.max()), chip.limit(limit), int(over.sum())))
    if max_cores is not None and len(mapping.cores) > max_cores:
        violations.append(Violation(None, "max_cores", len(mapping.cores), max_cores))
    if chips is not None and mapping.chips_used > chips:
        violations.append(Violation(None, "chips", mapping.chips_used, chips))
    return violations


def raise_if_any(violations: list[Violation], what: str) -> None:
    """One ``UserError`` line for the first violation, counting the others."""
    if violations:
        others = ", ".join(dict.fromkeys(v.label for v in violations[1:]))
        more = f" (and {len(violations) - 1} more limits broken: {others})" if len(violations) > 1 else ""
        raise UserError(f"{what}: {violations[0]}{more}")
