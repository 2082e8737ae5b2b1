"""``snn-compile compare MODEL``: accuracy per backend, label agreement, spike-exact agreement."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from snn_compile.cli.common import (DATA_HELP, FRAMEWORK_HELP, RESET_HELP, Parser, add_run_options, check_steps,
                                    model_with_data, positive, require_run_memory)
from snn_compile.split_run import split_executor
from targets.registry import get_target, TARGETS
from toolchain.errors import UserError


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="snn-compile compare", description="Compile MODEL, run the same test samples "
                                "on several backends and print one table: accuracy per backend, agreement of "
                                "predicted labels between each pair, and whether the loihi2 emulator and Lava "
                                "agree on every spike, u and v (with the first divergence). Exit status 1 when "
                                "loihi2 and lava differ.")
    p.add_argument("model", help="snn-compile checkpoint (.pt) or NIR graph (.nir)")
    p.add_argument("--targets", default="reference,loihi2,lava", help="comma-separated backends "
                   f"({', '.join(TARGETS)}; default reference,loihi2,lava)")
    p.add_argument("--bits", type=int, default=8, help="synapse weight bits, 1..8 (default 8)")
    p.add_argument("--weight-scale", choices=("mse", "max"), default="mse", help="weight step (default mse)")
    p.add_argument("--samples", type=int, default=256, help="first N test samples (default 256)")
    add_run_options(p)
    p.add_argument("--dataset", help="dataset (default: the one the checkpoint names)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--data", type=Path, metavar="FILE.npz", help=DATA_HELP)
    p.add_argument("--steps", type=int, help="time steps, when a NIR file does not say")
    p.add_argument("--framework", help=FRAMEWORK_HELP)
    p.add_argument("--reset", choices=("zero", "subtract"), help=RESET_HELP)
    return p


def run(args) -> int:
    from snn_compile.compare import compare, table
    from snn_compile.compile import CompileOptions, compile_for_targets, model_inputs
    from toolchain.passes.quantize import QuantizeOptions

    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if len(set(names)) != len(names) or not names:
        raise UserError("--targets: name each target once, e.g. reference,loihi2,lava")
    targets = [get_target(name) for name in names]
    positive(samples=args.samples, batch_size=args.batch_size, steps=args.steps, workers=args.workers)
    check_steps(args.steps)
    executor = split_executor(args.cluster, args.workers, args.device)
    for target in targets:
        if target.quantizes:
            target.check_bits(args.bits)
        if target.devices:
            target.check_device(args.device)
    source, dataset = model_with_data(args, "compare")
    count = min(args.samples, len(dataset.x_test))
    require_run_memory(source.graph, min(args.batch_size, count))
    with executor or nullcontext():  # connected before the work: a wrong address fails first
        compiled = compile_for_targets(source.graph, targets,
                                       CompileOptions(QuantizeOptions(args.bits, args.weight_scale)))
        result = compare(compiled, model_inputs(dataset.x_test[:count], source.graph), dataset.y_test[:count],
                         args.batch_size, args.device, executor, args.bits)
    print(table(result))
    exact = result.get("exact")
    return 1 if exact is not None and not exact["equal"] else 0
