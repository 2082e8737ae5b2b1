"""The compile flow the CLI drives: model file -> NIR -> graph -> passes -> program.

Kept apart from argument parsing so examples and tests call the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nir

from toolchain.errors import UserError
from toolchain.ir import Graph
from toolchain.nir_import import ImportOptions, graph_from_nir, read_nir_file
from toolchain.passes import Pass, run_pipeline
from toolchain.passes.partition import partition
from toolchain.passes.place import place
from toolchain.passes.quantize import QuantizeOptions, check_bits, quantize
from toolchain.program import Program


@dataclass
class ModelSource:
    """What the user handed us, as a NIR graph plus what the file said about itself."""

    path: Path
    nir_graph: nir.NIRGraph
    graph: Graph
    dataset: str | None
    info: dict = field(default_factory=dict)


def load_model(path: str | Path, import_options: ImportOptions | None = None) -> ModelSource:
    """Read a checkpoint (.pt, via NIR) or a NIR file (.nir) into the internal graph."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
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
    dataset = dataset or graph.metadata.get("dataset")  # NIR files may name theirs in the metadata
    return ModelSource(path=path, nir_graph=nir_graph, graph=graph, dataset=dataset, info=info)


def build_pipeline(chip, bits: int, weight_scale: str = "mse", calibration=None, max_cores: int | None = None,
                   chips: int | None = None, seed: int = 0) -> list[Pass]:
    """quantize -> partition -> place. ``calibration``: input samples whose spikes on the
    quantized program weight the placement (None: every neuron counts the same)."""
    check_bits(bits, chip)

    def place_by_activity(program, seed, calibration_samples):
        activity = None
        if calibration is not None:
            from targets.loihi2 import run as run_loihi2
            activity = run_loihi2(program, calibration).activity
        return place(program, chip, activity, seed=seed)

    return [Pass("quantize", lambda graph, **opts: quantize(graph, chip, QuantizeOptions(**opts)),
                 {"bits": bits, "weight_scale": weight_scale}),
            Pass("partition", lambda program, **opts: partition(program, chip, **opts),
                 {"max_cores": max_cores, "chips": chips}),
            Pass("place", place_by_activity,
                 {"seed": seed, "calibration_samples": 0 if calibration is None else len(calibration)})]


def compile_graph(graph: Graph, passes: list[Pass]) -> Program:
    program = run_pipeline(graph, passes)
    program.metadata["passes"] = [p.describe() for p in passes]
    return program
