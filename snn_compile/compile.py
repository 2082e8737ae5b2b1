"""The one compile flow: model file -> NIR -> graph -> prune -> quantize -> map -> program.

``compile_model`` is what the CLI's compile and compare, the sweep, the
examples and the board server's programs go through, so every command
prices, places and reports the same program the same way. Which passes run
is the target's to say (``targets.registry.Target``): a chip target gets
quantize -> partition -> place for its chip, a quantizing graph target
fake-quantizes the float graph, the float reference runs the graph as it is.
"""

from __future__ import annotations

import importlib
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path

import nir
import numpy as np

from targets import reference
from targets.chips import load_chip
from targets.registry import Target, emulator
from toolchain.errors import UserError
from toolchain.files import check_readable
from toolchain.ir import Graph
from toolchain.nir_import import ImportOptions, graph_from_nir, read_nir_file
from toolchain.passes.pipeline import (CompilerPass, Context, FakeQuantize, Partition, Place, Prune, PruneToFit,
                                       Quantize, TakeProgram, run_passes)
from toolchain.passes.prune import PruneOptions, needs_calibration
from toolchain.passes.quantize import QuantizeOptions, needs_rates
from toolchain.program import Program


MAX_STEPS = 10_000
"""Time steps a model may run: the emulator holds a batch's activity for every step at once."""
_INTEGER_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Float graphs that view a file already in chip integers (netx .net) -> that file's program, which the
quantize pass takes as it is."""


@dataclass
class ModelSource:
    """What the user handed us, as a NIR graph plus what the file said about itself."""

    path: Path
    nir_graph: nir.NIRGraph
    graph: Graph
    dataset: str | None
    info: dict = field(default_factory=dict)
    program: Program | None = None  # the file's own integers (netx .net): no pass re-quantizes them
    trained: object | None = None  # the torch model as trained (a checkpoint's): counts defined on its layers


def load_model(path: str | Path, import_options: ImportOptions | None = None) -> ModelSource:
    """Read a checkpoint (.pt, via NIR) or a NIR file (.nir) into the internal graph."""
    path = Path(path)
    check_readable(path)
    if path.suffix == ".net":
        from frontends.netx import load_netx

        program, graph, nir_graph = load_netx(path, import_options.steps if import_options else None)
        check_runnable(graph, str(path))
        _INTEGER_PROGRAMS[graph] = program
        return ModelSource(path=path, nir_graph=nir_graph, graph=graph, dataset=None,
                           info={"format": "lava-dl netx"}, program=program)
    if path.suffix == ".nir":
        nir_graph, dataset, info, model = read_nir_file(path), None, {"format": "nir"}, None
    else:
        from frontends.checkpoint import load_checkpoint
        from frontends.nir_export import to_nir

        model, meta = load_checkpoint(path)
        levels = meta["encoding"]["input_levels"]
        nir_graph = to_nir(model, input_levels=levels, dt=meta["dt"], coding=meta.get("coding"))
        dataset = meta["dataset"]
        info = {"format": "snntorch checkpoint", "arch": meta["config"]["arch"], "config": meta["config"],
                "trained_metrics": meta.get("metrics", {})}
    graph = graph_from_nir(nir_graph, import_options)
    check_runnable(graph, str(path))
    dataset = dataset or graph.metadata.get("dataset")  # NIR files may name theirs in the metadata
    return ModelSource(path=path, nir_graph=nir_graph, graph=graph, dataset=dataset, info=info,
                       trained=model)


def check_runnable(graph: Graph, what: str) -> None:
    """Refuse a graph whose numbers no target can run: non-finite parameters (a diverged training,
    a damaged file) compile into nonsense, and more than ``MAX_STEPS`` steps run for hours."""
    if not 1 <= graph.steps <= MAX_STEPS:
        raise UserError(f"{what}: runs {graph.steps} time steps; snn-compile runs 1..{MAX_STEPS} (pass --steps "
                        "N, or train with fewer)")
    for connection in graph.connections:
        if not np.all(np.isfinite(connection.weight)):
            raise UserError(f"{what}: the weights {connection.name} hold NaN or infinite values; the training "
                            "diverged or the file is damaged")
    for population in graph.populations:
        for name in ("alpha", "beta", "threshold", "bias"):
            if not np.all(np.isfinite(getattr(population, name))):
                raise UserError(f"{what}: the {name} of {population.name} holds NaN or infinite values; the "
                                "file is damaged")


@dataclass(frozen=True)
class NetxGrid(CompilerPass):
    """The program re-quantized onto netx's grid (``frontends.netx.netx_grid``)."""

    name = "netx-grid"

    def __call__(self, program: Program, context: Context) -> Program:
        from frontends.netx import netx_grid

        return netx_grid(program)


@dataclass(frozen=True)
class CompileOptions:
    """What to compile a graph into, independent of the target: the target decides which of these
    apply (a float target ignores the quantization, a graph target the mapping)."""

    quantize: QuantizeOptions = field(default_factory=lambda: QuantizeOptions(8))
    prune: PruneOptions | None = None
    max_cores: int | None = None
    chips: int | None = None
    placement_seed: int = 0
    prune_to_fit: bool = False
    """Prune, layer by layer, until the program fits ``max_cores`` and ``chips`` (a chip target)."""
    netx: bool = False
    """Lower onto what lava-dl netx holds (one weight scale per layer, biases on netx's step), so the
    program is exactly the one ``--export netx`` writes."""


@dataclass
class Compiled:
    """A graph compiled for a target: ``graph`` is the float graph after the graph passes (what
    the reference runs), ``program`` the chip program (chip targets), ``target_graph`` what a
    graph target runs; ``passes`` describe what ran, in order."""

    target: Target
    graph: Graph
    program: Program | None
    target_graph: Graph | None
    passes: list[str]
    notes: dict = field(default_factory=dict)
    """What passes reported about their work, by pass name (``prune-to-fit``: cores before and after)."""

    @property
    def model(self):
        """What ``target.run`` takes."""
        return self.program if self.target.runs == "program" else (self.target_graph or self.graph)


def pipeline(graph: Graph, target: Target, options: CompileOptions, calibration: np.ndarray | None = None,
             rates: dict | None = None) -> tuple[list[CompilerPass], list[CompilerPass]]:
    """(graph passes, lowering passes) that compile ``graph`` for ``target``: every option is
    checked here, before any work. ``rates``: the calibration activity of ``graph``, when the
    caller has it already."""
    if target.quantizes:
        target.check_bits(options.quantize.bits)
    graph_passes = _prune_passes(graph, options.prune, calibration)
    if options.prune_to_fit:
        graph_passes.append(_prune_to_fit(graph, target, options, calibration))
    if rates is None and target.quantizes and not target.lowering:
        _require_rates(options.quantize, calibration)
    if target.lowering:
        lowering = importlib.import_module(target.lowering).passes(load_chip(target.chip), options, calibration,
                                                                    rates)
    elif target.chip:
        chip = load_chip(target.chip)
        integers = _INTEGER_PROGRAMS.get(graph)
        if integers is not None:
            if options.quantize.bits < max(s.weight_bits for s in integers.synapses):
                _refuse_requantizing(graph, f"--bits {options.quantize.bits}")
            first = TakeProgram(integers, source="lava-dl netx")
        else:
            first = Quantize(chip, options.quantize)
        lowering = [first] + ([NetxGrid()] if options.netx and integers is None else []) + [
            Partition(chip, options.max_cores, options.chips),
            Place(chip, options.placement_seed, by_activity=calibration is not None)]
    elif target.quantizes:
        lowering = [FakeQuantize(options.quantize)]
    else:
        lowering = []
    return graph_passes, lowering


def compile_model(graph: Graph, target: Target, options: CompileOptions = CompileOptions(),
                  calibration: np.ndarray | None = None, rates: dict | None = None) -> Compiled:
    """Compile ``graph`` for ``target``. ``calibration``: training inputs whose float activity
    calibrates pruning and quantization and whose spikes on the program weight the placement;
    ``rates``: that activity for ``graph``, when the caller has it already (it is used only when
    nothing is pruned)."""
    target.check_graph(graph)
    graph_passes, lowering = pipeline(graph, target, options, calibration, rates)
    run_program = emulator(target.chip).run if target.chip and not target.lowering else None
    context = Context(calibration, rates if not graph_passes else None, run_program)
    pruned = run_passes(graph, graph_passes, context)
    lowered = run_passes(pruned, lowering, context)
    described = [p.describe() for p in graph_passes + lowering]
    if target.chip:
        lowered.metadata["passes"] = described
        lowered.metadata.update(context.notes)
        return Compiled(target, pruned, lowered, None, described, context.notes)
    return Compiled(target, pruned, None, lowered if lowering else None, described, context.notes)


def _prune_passes(graph: Graph, prune_options: PruneOptions | None, calibration) -> list[CompilerPass]:
    """Pruning, when ``prune_options`` remove anything; refused without the calibration it reads."""
    if prune_options is None or prune_options.ratio == 0:
        return []
    _refuse_requantizing(graph, "--prune")
    if needs_calibration(prune_options) and calibration is None:
        reasons = [f"--prune-rank {prune_options.rank}"] if prune_options.rank != "l1" else []
        if prune_options.compensation != "none":
            reasons.append(f"--prune-compensation {prune_options.compensation}")
        _refuse_without_calibration(reasons, "or prune with --prune-rank l1 --prune-compensation none")
    return [Prune(prune_options)]


def _prune_to_fit(graph: Graph, target: Target, options: CompileOptions, calibration) -> PruneToFit:
    if not target.chip or target.lowering:
        raise UserError(f"--prune-to-fit prunes to a Loihi core budget; target {target.name} has no cores")
    if options.max_cores is None and options.chips is None:
        raise UserError("--prune-to-fit needs a budget: give --max-cores N or --chips N")
    _refuse_requantizing(graph, "--prune-to-fit")
    recipe = options.prune or PruneOptions(0.0)
    if needs_calibration(recipe) and calibration is None:
        _refuse_without_calibration([f"--prune-to-fit with --prune-rank {recipe.rank} and --prune-compensation "
                                     f"{recipe.compensation}"], "or prune with --prune-rank l1 "
                                    "--prune-compensation none")
    return PruneToFit(load_chip(target.chip), options.quantize, options.max_cores, options.chips,
                      replace(recipe, ratio=0.0), None if calibration is None else ReadoutDeviation(graph, calibration))


class ReadoutDeviation:
    """How far a pruned graph's float readout moves from ``graph``'s on ``images`` (mean squared
    distance): what prune-to-fit weighs against the cores a cut saves. The sweep scores its pruning
    candidates the same way; the unpruned readout is run once, when first needed."""

    def __init__(self, graph: Graph, images: np.ndarray):
        self.graph, self.images, self._unpruned = graph, images, None

    def _readout(self, graph: Graph) -> np.ndarray:
        return np.asarray(reference.run(graph, self.images).output, dtype=np.float64)

    def __call__(self, candidate: Graph) -> float:
        if candidate is self.graph:
            return 0.0
        if self._unpruned is None:
            self._unpruned = self._readout(self.graph)
        return float(np.mean((self._readout(candidate) - self._unpruned) ** 2))


def _refuse_requantizing(graph: Graph, option: str) -> None:
    if graph in _INTEGER_PROGRAMS:
        raise UserError(f"{option} would re-quantize a netx network from its float view; its integers are "
                        "compiled as they are (leave the option out)")


def _require_rates(options: QuantizeOptions, calibration) -> None:
    if needs_rates(options) and calibration is None:
        reasons = [f"--weight-scale {options.weight_scale}"] if options.weight_scale == "output-mse" else []
        _refuse_without_calibration(reasons + (["--bias-correction"] if options.bias_correction else []))


def _refuse_without_calibration(reasons: list[str], alternative: str = "") -> None:
    raise UserError(f"{' and '.join(reasons)} {'need' if len(reasons) > 1 else 'needs'} calibration images: name "
                    f"a dataset (--dataset) and keep --calibration above 0{', ' + alternative if alternative else ''}")


def compile_for_targets(graph: Graph, targets: list[Target], options: CompileOptions = CompileOptions(),
                        calibration: np.ndarray | None = None) -> dict[str, Compiled]:
    """``graph`` compiled for each target, once per distinct pipeline: targets of one chip share
    one program, so their runs can be compared spike for spike."""
    by_pipeline: dict[tuple, Compiled] = {}
    compiled = {}
    for target in targets:
        key = (target.chip, target.quantizes and not target.chip)
        if key not in by_pipeline:
            by_pipeline[key] = compile_model(graph, target, options, calibration)
        compiled[target.name] = replace(by_pipeline[key], target=target)
    return compiled


def calibration_images(x_train: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` training inputs drawn at random (the same ones for compile and sweep)."""
    order = np.random.default_rng(seed).permutation(len(x_train))
    return x_train[order[:count]]


def model_inputs(x: np.ndarray, graph: Graph) -> np.ndarray:
    """Samples shaped as the model takes them: (samples, *input_shape) for frames, (samples, steps,
    *input_shape) for spike trains, whatever shape a dataset stores them in."""
    held = int(np.prod(x.shape[1:])) // int(np.prod(graph.input_shape))  # frames: 1; spike trains: steps
    return x.reshape((len(x),) + ((held,) if held > 1 else ()) + tuple(graph.input_shape))
