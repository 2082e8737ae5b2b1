"""The compile flow the CLI drives: model file -> NIR -> graph -> prune -> quantize -> map -> program.

Kept apart from argument parsing so examples and tests call the same code.
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nir
import numpy as np

from toolchain.calibration import calibrate
from toolchain.errors import UserError
from toolchain.files import check_readable
from toolchain.ir import Graph
from toolchain.nir_import import ImportOptions, graph_from_nir, read_nir_file
from toolchain.passes import Pass, run_pipeline
from toolchain.passes.partition import partition
from toolchain.passes.place import place
from toolchain.passes.prune import PruneOptions, needs_calibration, needs_gram, prune
from toolchain.passes.quantize import (QuantizeOptions, check_bits, check_digital_bits, fake_quantize, needs_rates,
                                       quantize)
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
        nir_graph, dataset, info = read_nir_file(path), None, {"format": "nir"}
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
    return ModelSource(path=path, nir_graph=nir_graph, graph=graph, dataset=dataset, info=info)


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


def prune_passes(prune_options: PruneOptions | None, calibration: np.ndarray | None = None) -> list[Pass]:
    """The graph passes before lowering: pruning, when ``prune_options`` remove anything.
    ``calibration``: input samples whose float activity ranks and compensates the units."""
    if prune_options is None or prune_options.ratio == 0:
        return []
    if needs_calibration(prune_options) and calibration is None:
        reasons = [f"--prune-rank {prune_options.rank}"] if prune_options.rank != "l1" else []
        if prune_options.compensation != "none":
            reasons.append(f"--prune-compensation {prune_options.compensation}")
        _refuse_without_calibration(reasons, "or prune with --prune-rank l1 --prune-compensation none")

    def run(graph, **shown):  # the options are shown in the pipeline; prune_options is what runs
        _refuse_requantizing(graph, "--prune")
        statistics = calibrate(graph, calibration, gram=needs_gram(prune_options)) \
            if needs_calibration(prune_options) else None
        return prune(graph, prune_options, statistics)

    options = {"ratio": prune_options.ratio, "method": prune_options.method}
    if prune_options.method == "structured":
        options.update(rank=prune_options.rank, compensation=prune_options.compensation)
    options["calibration_samples"] = len(calibration) if needs_calibration(prune_options) else 0
    return [Pass("prune", run, options)]


def build_pipeline(chip, quantize_options: QuantizeOptions, calibration: np.ndarray | None = None,
                   max_cores: int | None = None, chips: int | None = None, seed: int = 0) -> list[Pass]:
    """quantize -> partition -> place. ``calibration``: input samples; the float model's activity
    on them sets data-dependent weight steps and bias correction, and their spikes on the
    quantized program weight the placement (None: every neuron counts the same)."""
    check_bits(quantize_options.bits, chip)
    _require_rates(quantize_options, calibration)

    def quantize_with_rates(graph, **opts):
        options = QuantizeOptions(**opts)
        if graph in _INTEGER_PROGRAMS:
            program = _INTEGER_PROGRAMS[graph]
            if options.bits < max(s.weight_bits for s in program.synapses):
                _refuse_requantizing(graph, f"--bits {options.bits}")
            return replace(program, metadata=dict(program.metadata))
        return quantize(graph, chip, options, _rates(graph, options, calibration))

    def place_by_activity(program, seed, calibration_samples):
        activity = None
        if calibration is not None:
            from targets.loihi2 import run as run_loihi2
            activity = run_loihi2(program, calibration).activity
        return place(program, chip, activity, seed=seed)

    return [Pass("quantize", quantize_with_rates, asdict(quantize_options)),
            Pass("partition", lambda program, **opts: partition(program, chip, **opts),
                 {"max_cores": max_cores, "chips": chips}),
            Pass("place", place_by_activity,
                 {"seed": seed, "calibration_samples": 0 if calibration is None else len(calibration)})]


def digital_passes(quantize_options: QuantizeOptions, calibration: np.ndarray | None = None) -> list[Pass]:
    """fake-quantize: the generic digital target's graph, float dynamics with k-bit weights."""
    check_digital_bits(quantize_options.bits)
    _require_rates(quantize_options, calibration)

    def run(graph, **opts):
        options = QuantizeOptions(**opts)
        return fake_quantize(graph, options, _rates(graph, options, calibration))

    return [Pass("fake-quantize", run, asdict(quantize_options))]


def _refuse_requantizing(graph: Graph, option: str) -> None:
    if graph in _INTEGER_PROGRAMS:
        raise UserError(f"{option} would re-quantize a netx network from its float view; its integers are "
                        "compiled as they are (leave the option out)")


def _rates(graph: Graph, options: QuantizeOptions, calibration) -> dict | None:
    """The activity ``options`` read, from a calibration run of the graph being quantized."""
    return calibrate(graph, calibration).rates if needs_rates(options) else None


def _require_rates(options: QuantizeOptions, calibration) -> None:
    if needs_rates(options) and calibration is None:
        reasons = [f"--weight-scale {options.weight_scale}"] if options.weight_scale == "output-mse" else []
        _refuse_without_calibration(reasons + (["--bias-correction"] if options.bias_correction else []))


def _refuse_without_calibration(reasons: list[str], alternative: str = "") -> None:
    raise UserError(f"{' and '.join(reasons)} {'need' if len(reasons) > 1 else 'needs'} calibration images: name "
                    f"a dataset (--dataset) and keep --calibration above 0{', ' + alternative if alternative else ''}")


def compile_graph(graph: Graph, passes: list[Pass], earlier: list[Pass] = ()) -> Program:
    """Run ``passes`` on ``graph``; the program records them, after the ``earlier`` passes that
    made ``graph``."""
    program = run_pipeline(graph, passes)
    program.metadata["passes"] = [p.describe() for p in (*earlier, *passes)]
    return program
