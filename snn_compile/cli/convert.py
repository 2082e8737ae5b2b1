"""``snn-compile convert ANN``: a ReLU network as a spiking NIR graph."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from snn_compile.cli.common import check_learning_rate, check_seed, check_steps, output_path, Parser, positive
from toolchain.errors import UserError
from toolchain.files import check_output_file


def parser() -> argparse.ArgumentParser:
    from frontends.conversion import METHODS

    p = Parser(prog="snn-compile convert", description="Convert a trained ReLU network into "
                                "integrate-and-fire neurons and write a NIR graph that names its dataset, steps, "
                                "dt, reset and input range, so `snn-compile OUT.nir` needs no further options. "
                                "Which method is exact on which target: docs/guides/conversion.md.")
    p.add_argument("ann", help="ANN checkpoint (`snn-compile train-ann`, frontends.ann_training.save_ann), or a "
                   "whole model saved with torch.save(model) together with --unpickle")
    p.add_argument("-o", "--output", type=output_path, help="NIR file to write (default: next to ANN, "
                   "ANN-METHOD-tSTEPS.nir)")
    p.add_argument("--method", choices=METHODS, default="qffs", help="qffs (default): fine-tune with activations "
                   "quantized to STEPS levels, which STEPS time steps represent exactly; max, percentile: plain "
                   "rate conversion, weights normalised by the largest or the --percentile-th activation")
    p.add_argument("--steps", type=int, help="time steps T; for qffs also the activation levels (default: "
                   "the levels of a checkpoint that already has quantized activations)")
    p.add_argument("--reset", choices=("zero", "subtract"), help="neuron reset. qffs default zero: Loihi's, so "
                   "the network is exact on every target; subtract is exact on the float reference only. "
                   "max/percentile default subtract")
    p.add_argument("--percentile", type=float, default=99.9, help="percentile for --method percentile "
                   "(default 99.9)")
    p.add_argument("--calibration", type=int, default=1000, help="training images for the activation "
                   "statistics (default 1000)")
    p.add_argument("--finetune-epochs", type=int, default=10, help="qffs on a plain ReLU network: epochs of "
                   "fine-tuning with quantized activations (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning peak learning rate (default 1e-3)")
    p.add_argument("--dataset", help="dataset for calibration, fine-tuning and evaluation (default: the "
                   "checkpoint's; required for a torch.save(model) file)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--unpickle", action="store_true", help="accept a model saved with torch.save(model); "
                   "unpickling runs code from the file, so only for files you trust")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def run(args) -> int:
    from frontends.ann_training import AnnTrainOptions, evaluate_ann, load_ann, qffs_finetune
    from frontends.conversion import QuantReLU, convert, model_layers, write_nir
    from frontends.datasets import load_dataset

    positive(steps=args.steps, calibration=args.calibration)
    check_steps(args.steps)
    if args.finetune_epochs < 0:
        raise UserError(f"--finetune-epochs must be 0 or more, got {args.finetune_epochs}")
    if not 0 < args.percentile <= 100:
        raise UserError(f"--percentile must be in (0, 100], got {args.percentile}")
    check_seed(args.seed, "--seed")
    check_learning_rate(args.lr)
    if args.output and args.output.suffix != ".nir":
        raise UserError(f"-o {args.output}: the output is a NIR graph, and the compile command knows it by "
                        "the suffix; name it *.nir")
    if args.output or args.steps:  # else the default name waits for the steps the checkpoint gives
        check_output_file(_convert_output(args, args.steps), inputs=(args.ann,))
    model, meta = load_ann(args.ann, allow_pickle=args.unpickle)
    model_layers(model)  # refuses unconvertible layers before any training
    if not (args.dataset or meta["dataset"]):
        raise UserError(f"{args.ann} does not name its dataset; pass --dataset")
    finetune = args.method == "qffs" and not any(isinstance(m, QuantReLU) for m in model.modules())
    if finetune and args.steps is None:
        raise UserError("--method qffs on a ReLU network needs --steps T, the activation levels to fine-tune to")
    dataset = load_dataset(args.dataset or meta["dataset"], args.data_dir)
    trained_on = (tuple(meta["input_shape"]), meta["encoding"]["input_levels"]) if meta["encoding"] else None
    if trained_on and trained_on != (dataset.input_shape, dataset.levels):
        raise UserError(f"{args.ann} was trained on inputs of shape {trained_on[0]} in 0..{trained_on[1]}; "
                        f"{dataset.name} has {dataset.input_shape} in 0..{dataset.levels}")
    picks = np.random.default_rng(args.seed).choice(len(dataset.x_train), min(args.calibration,
                                                    len(dataset.x_train)), replace=False)
    calibration = dataset.x_train[picks] / dataset.levels
    print(f"ANN test accuracy {evaluate_ann(model, dataset.x_test, dataset.y_test, dataset.levels):.4f}")
    reset = args.reset
    if finetune:
        reset = reset or "zero"
        model, metrics = qffs_finetune(model, dataset, args.steps, calibration, reset,
                                       AnnTrainOptions(epochs=args.finetune_epochs, learning_rate=args.lr,
                                                       seed=args.seed))
        print(f"quantized ANN ({args.steps} levels, reset {reset}) test accuracy {metrics['test_accuracy']:.4f}")
    nir_graph = convert(model, calibration, method=args.method, steps=args.steps, input_shape=dataset.input_shape,
                        input_levels=dataset.levels, reset=reset, percentile=args.percentile, dataset=dataset.name)
    steps = nir_graph.metadata["steps"]
    output = _convert_output(args, steps)
    check_output_file(output, inputs=(args.ann,))
    write_nir(nir_graph, output)
    print(f"wrote {output}: {args.method}, {steps} steps, reset {nir_graph.metadata['reset']}, "
          f"dataset {dataset.name}\n"
          f"next: snn-compile {output} --target loihi2 --bits 8")
    return 0


def _convert_output(args, steps: int) -> Path:
    ann_path = Path(args.ann)
    return args.output or ann_path.with_name(f"{ann_path.stem}-{args.method}-t{steps}.nir")
