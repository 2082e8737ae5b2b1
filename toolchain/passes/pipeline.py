"""Pass objects with typed options, and the analyses they share.

Each pass is a frozen dataclass whose fields are exactly the options it runs
with, so ``describe()`` (what ``--print-passes`` and the report show) is
derived from what runs and cannot drift from it. A pass is called as
``pass_(ir, context)``; the ``Context`` holds the calibration inputs and
computes, lazily and once per IR object, the analyses passes read (the
float model's activity, Gram matrices, a calibration run of the program).
Running a program is the application's business: it hands the context a
``run_program`` function, so the compiler never imports a target.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from toolchain.calibration import calibrate
from toolchain.errors import UserError
from toolchain.ir import Graph
from toolchain.passes.core_budget import prune_to_fit
from toolchain.passes.partition import partition
from toolchain.passes.place import place
from toolchain.passes.prune import Calibration, PruneOptions, needs_calibration, needs_gram, prune
from toolchain.passes.quantize import QuantizeOptions, fake_quantize, needs_rates, quantize
from toolchain.program import Program


@dataclass
class Context:
    """Analyses shared by a pipeline's passes. ``calibration``: training inputs (None: no data,
    every analysis that needs it is refused); ``rates``: the calibration activity of the graph the
    quantizer sees, when the caller has it already; ``run_program``: runs a program on inputs
    bit-accurately (for the placement's activity)."""

    calibration: np.ndarray | None = None
    rates: dict | None = None
    run_program: Callable[[Program, np.ndarray], Any] | None = None
    notes: dict = field(default_factory=dict)
    """What passes report about their work (``prune-to-fit``: cores before and after), by pass name."""
    _statistics: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def statistics(self, graph: Graph, gram: bool = False) -> Calibration:
        """The float graph's calibration run (with Gram matrices if asked), once per graph."""
        cached = self._statistics.get(graph)
        if cached is None or (gram and cached.gram is None):
            if self.calibration is None:
                raise UserError("this pass needs calibration images: name a dataset (--dataset) and keep "
                                "--calibration above 0")
            cached = calibrate(graph, self.calibration, gram=gram)
            self._statistics[graph] = cached
        return cached

    def activity_rates(self, graph: Graph) -> dict:
        return self.rates if self.rates is not None else self.statistics(graph).rates

    def program_activity(self, program: Program):
        """The program's spikes on the calibration inputs (None without them: uniform rates)."""
        if self.calibration is None or self.run_program is None:
            return None
        return self.run_program(program, self.calibration).activity


@dataclass(frozen=True)
class CompilerPass:
    """Base of the pass objects: the name and ``describe()`` come from the class and its fields."""

    name = "pass"
    hidden = ("chip",)
    """Fields that are not options: the chip is the target's, and the report names it."""

    def describe(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.hidden:
                continue
            if dataclasses.is_dataclass(value):
                parts += [f"{k}={v}" for k, v in dataclasses.asdict(value).items()]
            else:
                parts.append(f"{f.name}={value}")
        return f"{self.name}({', '.join(parts)})"


@dataclass(frozen=True)
class Prune(CompilerPass):
    options: PruneOptions
    name = "prune"

    def __call__(self, graph: Graph, context: Context) -> Graph:
        statistics = context.statistics(graph, gram=needs_gram(self.options)) \
            if needs_calibration(self.options) else None
        return prune(graph, self.options, statistics)


@dataclass(frozen=True)
class PruneToFit(CompilerPass):
    """Structured pruning, chosen per layer, until the program ``quantize`` makes for ``chip`` maps
    within ``max_cores`` and ``chips`` (``toolchain.passes.core_budget``). ``deviation``: what a
    pruned graph's readout loses (the application measures it); each round then keeps the cut that
    loses least per core saved, not the one that saves most."""

    chip: Any
    quantize: QuantizeOptions
    max_cores: int | None
    chips: int | None
    options: PruneOptions
    deviation: Callable[[Graph], float] | None = field(default=None, compare=False)
    name = "prune-to-fit"
    hidden = ("chip", "deviation")

    def __call__(self, graph: Graph, context: Context) -> Graph:
        statistics = context.statistics(graph, gram=needs_gram(self.options)) \
            if needs_calibration(self.options) else None
        lower = Quantize(self.chip, self.quantize)
        fit = prune_to_fit(graph, lambda candidate: lower(candidate, context), self.chip, self.max_cores,
                           self.chips, self.options, statistics, deviation=self.deviation)
        context.notes[self.name] = fit.summary()
        return fit.graph


@dataclass(frozen=True)
class Quantize(CompilerPass):
    chip: Any
    options: QuantizeOptions
    name = "quantize"

    def __call__(self, graph: Graph, context: Context) -> Program:
        rates = context.activity_rates(graph) if needs_rates(self.options) else None
        return quantize(graph, self.chip, self.options, rates)


@dataclass(frozen=True)
class FakeQuantize(CompilerPass):
    options: QuantizeOptions
    name = "fake-quantize"

    def __call__(self, graph: Graph, context: Context) -> Graph:
        rates = context.activity_rates(graph) if needs_rates(self.options) else None
        return fake_quantize(graph, self.options, rates)


@dataclass(frozen=True)
class TakeProgram(CompilerPass):
    """A file already in the chip's integers (a netx network): its program is taken as it is."""

    program: Program = field(compare=False)
    source: str = ""
    name = "take-program"
    hidden = ("program",)

    def __call__(self, graph: Graph, context: Context) -> Program:
        return dataclasses.replace(self.program, metadata=dict(self.program.metadata))


@dataclass(frozen=True)
class Partition(CompilerPass):
    chip: Any
    max_cores: int | None = None
    chips: int | None = None
    name = "partition"

    def __call__(self, program: Program, context: Context) -> Program:
        return partition(program, self.chip, max_cores=self.max_cores, chips=self.chips)


@dataclass(frozen=True)
class Place(CompilerPass):
    """Places by the program's spikes on the calibration inputs, or by uniform rates without them."""

    chip: Any
    seed: int = 0
    by_activity: bool = False
    name = "place"

    def __call__(self, program: Program, context: Context) -> Program:
        activity = context.program_activity(program) if self.by_activity else None
        return place(program, self.chip, activity, seed=self.seed)


def run_passes(ir, passes: list[CompilerPass], context: Context):
    """Apply each pass in order to the previous one's result."""
    for compiler_pass in passes:
        ir = compiler_pass(ir, context)
    return ir
