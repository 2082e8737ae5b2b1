"""Targets by name, each declaring what it runs and what it can do.

A target is data (this module) plus a module beside it with a ``run``
function. Adding one is an entry in ``TARGETS`` (or a ``register`` call) and
that module: the compile flow, compare, sweep and serve ask the target for
its chip, its bit range, whether it is bit-accurate and whether it can be
stepped, and change nothing.

A target with a ``chip`` runs that chip's integer ``Program`` (the compile
flow quantizes, partitions and places for it); one without runs the
compiler's float ``Graph``, with its weights fake-quantized to ``--bits``
when ``quantizes`` says so.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Literal

from targets.chips import load_chip
from toolchain.errors import UserError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    module: str
    """Module holding the target's ``run(model, inputs, batch_size=, progress=, record=)``."""
    chip: str | None = None
    """The chip spec whose programs the target runs; None: it runs the float graph."""
    bits: tuple[int, int] | None = None
    """Weight widths a graph target takes; a chip target takes what its chip spec says."""
    quantizes: bool = True
    """False: it runs the float model as trained, and --bits does not apply."""
    bit_accurate: bool = False
    """Its integers are the chip's: a recorded run can be compared with another one spike for spike."""
    steppable: bool = False
    """It can be driven step by step as a board (``snn-compile serve``)."""
    in_process: bool = True
    """It runs in this interpreter (Lava runs in its own Python 3.10 environment)."""
    devices: bool = False
    """Its ``run`` takes ``device`` ("cpu", "cuda" or "auto": a GPU when torch sees one), and its module
    has ``resolve_device(device)``, which refuses one the machine lacks."""
    lowering: str | None = None
    """For a chip target: module whose ``passes(chip, options, calibration, rates)`` lowers the float
    graph for the chip; None: the Loihi flow (quantize, partition, place)."""
    cost_model: tuple[str, str] | None = None
    """(report key, "module:function") of the chip's own estimate, ``function(program, activity,
    samples, chip) -> dict``; every run is also priced by the 45 nm digital model."""
    resets: tuple[str, ...] = ("zero", "subtract")
    """The reset rules its neurons can run; a graph needing another is refused before any work."""

    @property
    def runs(self) -> Literal["program", "graph"]:
        return "program" if self.chip else "graph"

    @property
    def bit_range(self) -> tuple[int, int] | None:
        if not self.quantizes:
            return None
        if self.chip:
            return 1, load_chip(self.chip).limit("weight_bits_max")
        return self.bits

    def runner(self) -> Callable:
        """The target's run function, imported only when it is used."""
        return importlib.import_module(self.module).run

    def check_device(self, device: str | None) -> None:
        """Refuse, before any work, a device this target or this machine does not have."""
        if device is not None and self.devices:
            importlib.import_module(self.module).resolve_device(device)
        elif device not in (None, "cpu", "auto"):
            raise UserError(f"--device {device}: target {self.name} runs on the CPU only")

    def run(self, model, inputs, device: str | None = None, **options):
        """Run ``model`` on ``inputs``; ``device`` is passed to a target that takes one, and anything but
        the CPU is refused by one that does not."""
        if device is not None and self.devices:
            options["device"] = device
        elif device not in (None, "cpu", "auto"):
            raise UserError(f"--device {device}: target {self.name} runs on the CPU only")
        return self.runner()(model, inputs, **options)

    def chip_costs(self) -> tuple[str, Callable] | None:
        """(report key, estimate function) of the chip's own cost model, if it has one."""
        if self.cost_model is None:
            return None
        key, where = self.cost_model
        module, function = where.split(":")
        return key, getattr(importlib.import_module(module), function)

    def check_graph(self, graph) -> None:
        """Refuse, before any pass runs, a graph whose neurons reset in a way this target cannot."""
        unheld = next((p for p in graph.populations if p.reset not in self.resets), None)
        if unheld is None:
            return
        instead = [t.name for t in TARGETS.values() if t.chip == self.chip and unheld.reset in t.resets]
        hint = f" or use --target {instead[0]}" if instead else ""
        raise UserError(f"layer {unheld.name!r} resets by {unheld.reset} and target {self.name} runs only reset "
                        f"{' or '.join(self.resets)}; compile with --reset {self.resets[0]}{hint}")

    def check_bits(self, bits: int) -> None:
        if self.bit_range is None:
            return
        low, high = self.bit_range
        if not isinstance(bits, int) or not low <= bits <= high:
            what = f"{self.chip} synapses hold" if self.chip else f"the {self.name} target takes"
            raise UserError(f"--bits {bits} is out of range: {what} {low}..{high} bit weights")


TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    """Add ``target`` (replacing one of the same name)."""
    TARGETS[target.name] = target
    return target


LOIHI_COSTS = ("loihi", "targets.loihi2.costs:loihi_costs")
register(Target("loihi2", "native bit-accurate Loihi 2 emulator", "targets.loihi2", chip="loihi2",
                bit_accurate=True, steppable=True, devices=True, cost_model=LOIHI_COSTS))
register(Target("digital45nm", "generic digital accelerator, k-bit weights (1..16), priced at 45 nm",
                "targets.digital45nm", bits=(1, 16)))
register(Target("reference", "float model as trained (zero delay)", "targets.reference", quantizes=False))
register(Target("lava", "Intel's Lava (lava-nc 0.10.0) fixed-point Loihi 2 simulation, in its own "
                "Python 3.10 environment", "targets.lava.runner", chip="loihi2", bit_accurate=True,
                in_process=False, cost_model=LOIHI_COSTS, resets=("zero",)))
XYLO_COSTS = ("xylo", "targets.xylo.costs:xylo_costs")
register(Target("xylo", "native bit-accurate SynSense Xylo Audio 2 (SYNS61201) emulator", "targets.xylo",
                chip="xylo", bit_accurate=True, lowering="targets.xylo.lowering", cost_model=XYLO_COSTS))
register(Target("xylo-imu", "native bit-accurate SynSense Xylo IMU (SYNS63300) emulator: 16 outputs, 496 hidden",
                "targets.xylo", chip="xylo_imu", bit_accurate=True, lowering="targets.xylo.lowering",
                cost_model=XYLO_COSTS))


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise UserError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}")
    return TARGETS[name]


def emulator(chip: str) -> Target:
    """The in-process bit-accurate target of ``chip``: what calibration runs of its programs use."""
    for target in TARGETS.values():
        if target.chip == chip and target.bit_accurate and target.in_process:
            return target
    raise UserError(f"no in-process emulator is registered for {chip!r}")


def for_bits(bits: int, preferred: str = "loihi2") -> Target:
    """``preferred`` if it takes ``bits``-bit weights, else the first registered target that does
    (weights wider than Loihi 2's 8 bits run on the digital target)."""
    def takes(target: Target) -> bool:
        return target.bit_range is not None and target.bit_range[0] <= bits <= target.bit_range[1]

    target = get_target(preferred)
    if not target.quantizes or takes(target):
        return target
    for other in TARGETS.values():
        if takes(other) and other.in_process:
            return other
    ranges = ", ".join(f"{t.name} {t.bit_range[0]}..{t.bit_range[1]}" for t in TARGETS.values()
                       if t.bit_range and t.in_process)
    raise UserError(f"--bits {bits} is out of range: no target takes {bits}-bit weights ({ranges})")
