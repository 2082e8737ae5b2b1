"""``snn-compile train`` (a spiking network in snnTorch) and ``train-ann`` (a ReLU network to convert)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from snn_compile.cli.common import (check_learning_rate, check_seed, check_steps, DATA_HELP, number_list, output_path,
                                    Parser, positive, require_memory)
from snn_compile.compile import MAX_STEPS
from toolchain.errors import UserError
from toolchain.files import check_output_file


def parser() -> argparse.ArgumentParser:
    from frontends.models import ARCHITECTURES

    p = Parser(prog="snn-compile train", description="Train a spiking network with "
                                "surrogate gradients (snnTorch) and save a self-describing checkpoint.")
    p.add_argument("--dataset", help="digits (embedded), fmnist or mnist (default digits)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--data", type=Path, metavar="FILE.npz", help=DATA_HELP)
    p.add_argument("--arch", choices=ARCHITECTURES, default="mlp", help="network architecture (default mlp)")
    p.add_argument("--steps", type=int, default=16, help=f"time steps per sample (default 16, at most {MAX_STEPS})")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--widths", help="comma-separated hidden layer sizes: the MLP's neurons or the CSNN's "
                   "convolution channels (default: 128 for the MLP; 32,64 for the CSNN, 16,32 on inputs under 16 "
                   "pixels)")
    p.add_argument("--channel-dropout", type=float, default=0.0, help="silence each hidden channel for a whole "
                   "sample with this probability while training, so that structured pruning costs less "
                   "(default 0)")
    p.add_argument("-o", "--output", type=output_path, default=Path("model.pt"),
                   help="checkpoint path (default model.pt)")
    return p


def run(args) -> int:
    from frontends.checkpoint import save_checkpoint
    from frontends.datasets import load_dataset
    from frontends.models import default_config
    from frontends.training import TrainOptions, train, training_memory_bytes

    positive(steps=args.steps, epochs=args.epochs, batch_size=args.batch_size)
    check_steps(args.steps)
    if not 0.0 <= args.channel_dropout < 1.0:
        raise UserError(f"--channel-dropout must be in [0, 1), got {args.channel_dropout}")
    widths = None if args.widths is None else number_list(args.widths, int, "--widths")
    if widths is not None and (not widths or min(widths) < 1):
        raise UserError(f"--widths must be one or more positive sizes, got {args.widths!r}")
    check_seed(args.seed, "--seed")
    check_learning_rate(args.lr)
    check_output_file(args.output)
    if args.data:
        from frontends.user_data import read_user_data
        dataset = read_user_data(args.data, args.dataset).require("train", frames=True).dataset()
    else:
        dataset = load_dataset(args.dataset or "digits", args.data_dir)
    config = default_config(args.arch, dataset.input_shape, dataset.classes, args.channel_dropout, widths)
    require_memory(training_memory_bytes(config, dataset.input_shape, dataset.classes, args.steps,
                                          min(args.batch_size, len(dataset.x_train))),
                    f"training {args.arch} with --steps {args.steps}" + (f" --widths {args.widths}" if widths else ""),
                    "lower --steps, --batch-size or --widths")
    print(f"training {args.arch} on {dataset.name}: {len(dataset.x_train)} samples, {args.steps} steps, "
          f"{args.epochs} epochs, seed {args.seed}")
    model, metrics = train(dataset, TrainOptions(arch=args.arch, steps=args.steps, epochs=args.epochs,
                                                 batch_size=args.batch_size, learning_rate=args.lr,
                                                 seed=args.seed, channel_dropout=args.channel_dropout,
                                                 widths=widths))
    save_checkpoint(model, args.output, dataset=dataset.name, levels=dataset.levels, metrics=metrics)
    print(f"float test accuracy {metrics['test_accuracy']:.4f}; saved {args.output}")
    return 0


def ann_parser() -> argparse.ArgumentParser:
    p = Parser(prog="snn-compile train-ann", description="Train a ReLU MLP (Flatten, Linear -> "
                                "ReLU per hidden layer, Linear) and save an ANN checkpoint for `snn-compile "
                                "convert`. Any nn.Sequential of convertible layers saved with "
                                "frontends.ann_training.save_ann converts the same way.")
    p.add_argument("--dataset", default="digits", help="digits (embedded), fmnist or mnist (default digits)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--hidden", default="128", help="comma-separated hidden layer sizes (default 128: the "
                   "clothing-recognition seed's 784-128-10 on 28x28 images)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-o", "--output", type=output_path, default=Path("ann.pt"),
                   help="checkpoint path (default ann.pt)")
    return p


def run_ann(args) -> int:
    from frontends.ann_training import AnnTrainOptions, ann_training_memory_bytes, build_mlp, save_ann, train_ann
    from frontends.datasets import load_dataset

    hidden = number_list(args.hidden, int, "--hidden")
    positive(epochs=args.epochs, batch_size=args.batch_size)
    if any(size < 1 for size in hidden):
        raise UserError(f"--hidden {args.hidden!r}: layer sizes must be at least 1")
    check_seed(args.seed, "--seed")
    check_learning_rate(args.lr)
    check_output_file(args.output)
    dataset = load_dataset(args.dataset, args.data_dir)
    require_memory(ann_training_memory_bytes(dataset.input_shape, hidden, dataset.classes,
                                              min(args.batch_size, len(dataset.x_train))),
                    f"training a ReLU MLP with --hidden {args.hidden}", "lower --hidden or --batch-size")
    model = build_mlp(dataset.input_shape, dataset.classes, hidden, seed=args.seed)
    sizes = "-".join(str(s) for s in [int(np.prod(dataset.input_shape)), *hidden, dataset.classes])
    print(f"training ReLU MLP {sizes} on {dataset.name}: {len(dataset.x_train)} samples, {args.epochs} epochs, "
          f"seed {args.seed}")
    metrics = train_ann(model, dataset, AnnTrainOptions(epochs=args.epochs, batch_size=args.batch_size,
                                                        learning_rate=args.lr, seed=args.seed))
    save_ann(model, args.output, dataset.name, dataset.input_shape, dataset.levels, metrics)
    print(f"ANN test accuracy {metrics['test_accuracy']:.4f}; saved {args.output}")
    return 0
