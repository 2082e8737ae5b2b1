"""``snn-compile [compile] MODEL``: compile for a target, run the test split, write the program and reports."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from snn_compile.cli.common import (add_run_options, check_seed, check_steps, DATA_HELP, FORCE_HELP, FRAMEWORK_HELP, output_path,
                                    Parser, positive, require_run_memory, RESET_HELP)
from snn_compile.compile import MAX_STEPS
from snn_compile.split_run import split_executor
from targets.registry import get_target, TARGETS
from toolchain.errors import UserError
from toolchain.files import StagingDir
from toolchain.nir_import import ImportOptions
from toolchain.passes.prune import CALIBRATED, COMPENSATIONS, METHODS as PRUNE_METHODS, RANKS
from toolchain.passes.quantize import GRANULARITIES, WEIGHT_SCALES, QuantizeOptions


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="snn-compile [compile]", description="Compile MODEL for a chip, run it "
                                "on the test split of its dataset, and write program.h5, model.nir, "
                                "report.json, report.md and report.html.")
    p.add_argument("model", help="snn-compile checkpoint (.pt) or NIR graph (.nir)")
    p.add_argument("--target", default="loihi2", help=f"where the program runs: {', '.join(TARGETS)} "
                   "(default loihi2: the bit-accurate Loihi 2 emulator)")
    p.add_argument("--bits", type=int, default=8, help="synapse weight bits: 1..8 on Loihi 2, 1..16 on "
                   "digital45nm (default 8)")
    p.add_argument("--weight-scale", choices=WEIGHT_SCALES, default=QuantizeOptions.weight_scale,
                   help="weight step: minimise rounding error (mse, default), map the largest weight to the "
                   "largest level (max), or the 99.9th percentile of |w| (percentile), or minimise the error the "
                   "layer's output sees at calibration activity (output-mse)")
    p.add_argument("--granularity", choices=GRANULARITIES, default=QuantizeOptions.granularity,
                   help="one weight step per layer "
                   "(tensor, default) or per output channel (channel: each channel becomes its own neuron group)")
    p.add_argument("--bias-correction", action="store_true", help="fold the mean output error of weight "
                   "rounding, at calibration activity, back into the biases")
    p.add_argument("--prune", type=float, default=0.0, help="pruning ratio in [0, 1): the share of each hidden "
                   "layer's neurons or channels removed (structured), or of weights zeroed (default 0: none)")
    p.add_argument("--prune-method", choices=PRUNE_METHODS, default=CALIBRATED.method, help="structured (default): "
                   "remove whole neurons and channels, so the program shrinks; magnitude: zero the smallest "
                   "weights of each connection; global-magnitude: one threshold for the whole network")
    p.add_argument("--prune-rank", choices=RANKS, default=CALIBRATED.rank, help="which units structured pruning "
                   "removes first: least redundancy (default: the input current the next layers lose when the "
                   "unit goes and the rest of its layer is refitted), least activity, or smallest L1 norm")
    p.add_argument("--prune-compensation", choices=COMPENSATIONS, default=CALIBRATED.compensation,
                   help="what replaces the removed units' input to the next layers: a least-squares refit of "
                   "the kept weights (regression, default), their mean drive folded into the biases (mean), or nothing (none)")
    p.add_argument("-o", "--output", type=output_path, help="output directory (default: next to MODEL, "
                   "named MODEL-TARGET-BITSb); an existing one is replaced only with --force")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one the checkpoint names; "
                   "digits, fmnist or mnist)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--data", type=Path, metavar="FILE.npz", help=DATA_HELP)
    p.add_argument("--samples", type=int, help="evaluate on the first N test samples (default: all)")
    add_run_options(p)
    p.add_argument("--steps", type=int, help=f"time steps, when a NIR file does not say (at most {MAX_STEPS})")
    p.add_argument("--dt", type=float, help="time step in seconds for discretising NIR, when the file "
                   "does not say (default 1e-4, snnTorch's convention)")
    p.add_argument("--framework", help=FRAMEWORK_HELP)
    p.add_argument("--reset", choices=("zero", "subtract"), help=RESET_HELP)
    p.add_argument("--input-shape", help="input shape C,H,W or N, when a NIR file does not say")
    p.add_argument("--input-levels", type=int, help="input values are integers 0..LEVELS (default: "
                   "from the graph, else 255)")
    p.add_argument("--max-cores", type=int, help="fail unless the program fits in this many cores")
    p.add_argument("--chips", type=int, help="fail unless the program fits on this many chips")
    p.add_argument("--export", choices=("netx",), help="also write the program as lava-dl netx (network.net), "
                   "the format netx.hdf5.Network loads onto Loihi 2: the program is lowered onto netx's grid, so "
                   "program.h5, network.net and the report are one program; refused where netx cannot express it")
    p.add_argument("--prune-to-fit", action="store_true", help="prune channels, layer by layer, until the program "
                   "fits --max-cores / --chips (ranked and compensated as --prune-rank and --prune-compensation say)")
    p.add_argument("--placement-seed", type=int, default=0, help="seed of the placement pass (default 0)")
    p.add_argument("--calibration", type=int, default=256, help="training samples whose activity ranks and "
                   "compensates pruned units, sets output-mse steps and bias correction, and weights the placement "
                   "(default 256; pruning's least-squares refit gains from more; 0: none, uniform placement)")
    p.add_argument("--energy-model", choices=("ops", "spike"), default="ops",
                   help="45 nm energy: ops = 0.9 pJ x AC + 4.6 pJ x MAC (default); spike = E_spike x spikes "
                   "+ P_leak x T (constants in targets/data/digital45nm.json)")
    p.add_argument("--memory", action="store_true", help="add an SRAM weight read to every synaptic operation "
                   "in the 45 nm energy")
    p.add_argument("--print-passes", action="store_true", help="print the pass pipeline and exit")
    return p


def _parse_shape(text: str | None):
    if not text:
        return None
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise UserError(f"--input-shape {text!r}: expected comma-separated integers like 1,28,28") from None
    if not shape or min(shape) < 1:
        raise UserError(f"--input-shape {text!r}: sizes must be at least 1")
    return shape


def _dataset(args, source, user_data):
    """The data the compiled model is evaluated on (None: compile only), checked against the model."""
    if user_data:
        dataset = user_data.for_model(source.graph, args.input_levels)
        print(f"data: {user_data.describe()}; {dataset.notes[-1]}")
    elif args.dataset or source.dataset:
        from frontends.datasets import load_dataset
        dataset = load_dataset(args.dataset or source.dataset, args.data_dir)
        if tuple(dataset.input_shape) != tuple(source.graph.input_shape) and \
                int(np.prod(dataset.input_shape)) != int(np.prod(source.graph.input_shape)):
            raise UserError(f"dataset {dataset.name} has inputs {dataset.input_shape} but the model expects "
                            f"{source.graph.input_shape}")
    else:
        return None
    count = len(dataset.x_test) if args.samples is None else min(args.samples, len(dataset.x_test))
    require_run_memory(source.graph, min(args.batch_size, count))
    return dataset


def run(args) -> int:
    from frontends.conversion import write_nir
    from snn_compile.compile import (CompileOptions, calibration_images, compile_model, load_model, model_inputs,
                                     pipeline)
    from toolchain.files import write_bytes_atomically
    from toolchain.passes.prune import PruneOptions, check_ratio

    target = get_target(args.target)
    positive(samples=args.samples, batch_size=args.batch_size, steps=args.steps, max_cores=args.max_cores,
             chips=args.chips, workers=args.workers)
    check_steps(args.steps)
    check_seed(args.placement_seed, "--placement-seed")
    if args.calibration < 0:
        raise UserError(f"--calibration must be 0 or more, got {args.calibration}")
    if target.quantizes:  # the bits are checked before any work
        target.check_bits(args.bits)
    executor = split_executor(args.cluster, args.workers, args.device)
    target.check_device(args.device)
    if args.export == "netx" and target.chip != "loihi2":
        raise UserError(f"--export netx writes a Loihi 2 program; target {target.name} compiles none")
    check_ratio(args.prune, "--prune")
    options = CompileOptions(
        QuantizeOptions(args.bits, args.weight_scale, args.granularity, args.bias_correction),
        PruneOptions(args.prune, args.prune_method, args.prune_rank, args.prune_compensation),
        args.max_cores, args.chips, args.placement_seed, args.prune_to_fit, netx=args.export == "netx")
    import_options = ImportOptions(steps=args.steps, dt=args.dt, input_shape=_parse_shape(args.input_shape),
                                   input_levels=args.input_levels, framework=args.framework, reset=args.reset)
    user_data = None
    if args.data:
        from frontends.user_data import read_user_data
        user_data = read_user_data(args.data, args.dataset)
        import_options = user_data.import_hints(import_options, args.input_levels)
    model_path = Path(args.model)
    out_dir = args.output or model_path.with_name(f"{model_path.stem}-{args.target}-{args.bits}b")
    output = None if args.print_passes else StagingDir(out_dir, {"command": "compile"}, force=args.force,
                                                       inputs=(args.model,))
    source = load_model(args.model, import_options)
    dataset = _dataset(args, source, user_data)
    calibration = None
    if dataset is not None and args.calibration:
        calibration = model_inputs(calibration_images(dataset.x_train, args.calibration), source.graph)
    if args.print_passes:
        graph_passes, lowering = pipeline(source.graph, target, options, calibration)
        print("\n".join(p.describe() for p in graph_passes + lowering))
        return 0
    if dataset is None:  # nothing to run: nothing to split
        executor = None
    with executor or nullcontext():  # connected before the work: a wrong address fails first
        compiled = compile_model(source.graph, target, options, calibration)
        program = compiled.program

        from snn_compile.evaluate import evaluate_and_report
        with output as staging:
            written = ["model.nir", "report.json", "report.md", "report.html"]
            if program is not None:
                write_bytes_atomically(staging / "program.h5", program.to_bytes())
                written.insert(0, "program.h5")
            if args.export == "netx":
                from frontends.netx import write_netx
                write_netx(program, staging / "network.net")
                written.insert(1, "network.net")
            write_nir(source.nir_graph, staging / "model.nir")
            report = evaluate_and_report(source, compiled, dataset, args.samples, args.batch_size, staging,
                                         bits=args.bits, energy_model=args.energy_model, memory=args.memory,
                                         device=args.device, executor=executor)
    from snn_compile.report import terminal
    print(terminal(report))
    print(f"\nwrote {out_dir}/ ({', '.join(written)})")
    return 0
