"""``snn-compile``: compile a model for a chip, run it, report cost and accuracy.

Errors a user can cause end in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

from toolchain.errors import UserError
from toolchain.files import StagingDir, check_output_file
from toolchain.nir_import import ImportOptions
from toolchain.passes.prune import COMPENSATIONS, METHODS as PRUNE_METHODS, RANKS
from toolchain.passes.quantize import GRANULARITIES, WEIGHT_SCALES

from targets.registry import TARGETS
from toolchain.driver import MAX_STEPS

DATA_HELP = ("your own data instead of --dataset: an .npz with x_train/y_train/x_test/y_test (or x/y, "
             "split 80/20 by seed 0); frames [N,C,H,W] or [N,F], or spike trains [N,T,...]; integers 0..levels "
             "or floats in [0, 1]; integer labels or float regression targets (frontends/user_data.py)")
COMMANDS = ("compile", "train", "sweep", "train-ann", "convert", "serve", "compare", "lava")

DESCRIPTION = """\
Compile a spiking neural network for a neuromorphic chip, run it bit-accurately, and report
accuracy, spikes and model size.

commands:
  snn-compile MODEL [options]         compile MODEL (a checkpoint .pt or a NIR graph .nir) and
                                      evaluate it (same as `snn-compile compile MODEL`)
  snn-compile train [options]         train a spiking network in snnTorch and save a checkpoint
  snn-compile sweep MODEL [options]   accuracy, size and cost across weight bits x pruning ratios
  snn-compile train-ann [options]     train a ReLU network (an ANN) to convert
  snn-compile convert ANN [options]   convert a ReLU network into a spiking one, as a NIR graph
                                      that `snn-compile OUT.nir` compiles without further options
  snn-compile serve PROGRAM [options] run a compiled program.h5 as an emulated board that a host
                                      drives over a socket (hardware in the loop)

  snn-compile compare MODEL [options] accuracy per backend, label agreement, and spike-exact
                                      agreement of the loihi2 emulator with Lava (exit 1 if they differ)
  snn-compile lava setup              create the Lava environment (lava-nc 0.10.0, needs Python 3.10)

Run `snn-compile COMMAND --help` for the options of each command.

examples:
  snn-compile train --dataset digits --arch mlp -o model.pt
  snn-compile model.pt --target loihi2 --bits 8
  snn-compile graph.nir --target loihi2 --steps 16 --input-shape 1,8,8 --dataset digits
  snn-compile sweep model.pt --bits 16,8,4 --prune 0.1,0.2,0.3
  snn-compile train-ann --dataset fmnist -o ann.pt
  snn-compile convert ann.pt --method qffs --steps 8 -o snn.nir && snn-compile snn.nir --bits 8
  snn-compile serve model-loihi2-8b/program.h5 --port 7421
  snn-compile compare model.pt --targets reference,loihi2,lava --bits 8 --samples 200
"""


class _Parser(argparse.ArgumentParser):
    """Option errors are user errors like any other: one line, exit status 2, no usage block."""

    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog.replace(' [compile]', ' compile')} --help`)")


def _output_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("the output path is empty; name a file or directory")
    return Path(text)


FORCE_HELP = "replace the output directory if an earlier snn-compile run wrote it (never any other directory)"
FRAMEWORK_HELP = ("framework that wrote the NIR file: its conventions give dt, reset and IF stepping when the file "
                  "does not say (snntorch, norse, sinabs, rockpool, lava-dl, spinnaker2, nir; default: named in the "
                  "file's metadata, else snn-compile's)")
RESET_HELP = "neuron reset, overriding the file and --framework (default: the file's, else the framework's, else zero)"


def _compile_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="snn-compile [compile]", description="Compile MODEL for a chip, run it "
                                "on the test split of its dataset, and write program.h5, model.nir, "
                                "report.json and report.md.")
    p.add_argument("model", help="snn-compile checkpoint (.pt) or NIR graph (.nir)")
    p.add_argument("--target", default="loihi2", help=f"where the program runs: {', '.join(TARGETS)} "
                   "(default loihi2: the bit-accurate Loihi 2 emulator)")
    p.add_argument("--bits", type=int, default=8, help="synapse weight bits: 1..8 on Loihi 2, 1..16 on "
                   "digital45nm (default 8)")
    p.add_argument("--weight-scale", choices=WEIGHT_SCALES, default="mse",
                   help="weight step: minimise rounding error (mse, default), map the largest weight to the "
                   "largest level (max), or the 99.9th percentile of |w| (percentile), or minimise the error the "
                   "layer's output sees at calibration activity (output-mse)")
    p.add_argument("--granularity", choices=GRANULARITIES, default="tensor", help="one weight step per layer "
                   "(tensor, default) or per output channel (channel: each channel becomes its own neuron group)")
    p.add_argument("--bias-correction", action="store_true", help="fold the mean output error of weight "
                   "rounding, at calibration activity, back into the biases")
    p.add_argument("--prune", type=float, default=0.0, help="pruning ratio in [0, 1): the share of each hidden "
                   "layer's neurons or channels removed (structured), or of weights zeroed (default 0: none)")
    p.add_argument("--prune-method", choices=PRUNE_METHODS, default="structured", help="structured (default): "
                   "remove whole neurons and channels, so the program shrinks; magnitude: zero the smallest "
                   "weights of each connection; global-magnitude: one threshold for the whole network")
    p.add_argument("--prune-rank", choices=RANKS, default="redundancy", help="which units structured pruning "
                   "removes first: least redundancy (default: the input current the next layers lose when the "
                   "unit goes and the rest of its layer is refitted), least activity, or smallest L1 norm")
    p.add_argument("--prune-compensation", choices=COMPENSATIONS, default="regression", help="what replaces the "
                   "removed units' input to the next layers: a least-squares refit of the kept weights "
                   "(regression, default), their mean drive folded into the biases (mean), or nothing (none)")
    p.add_argument("-o", "--output", type=_output_path, help="output directory (default: next to MODEL, "
                   "named MODEL-TARGET-BITSb); an existing one is replaced only with --force")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one the checkpoint names; "
                   "digits, fmnist or mnist)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--data", type=Path, metavar="FILE.npz", help=DATA_HELP)
    p.add_argument("--samples", type=int, help="evaluate on the first N test samples (default: all)")
    p.add_argument("--batch-size", type=int, default=256, help="samples run at once (default 256)")
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


def _train_parser() -> argparse.ArgumentParser:
    from frontends.models import ARCHITECTURES

    p = _Parser(prog="snn-compile train", description="Train a spiking network with "
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
    p.add_argument("-o", "--output", type=_output_path, default=Path("model.pt"),
                   help="checkpoint path (default model.pt)")
    return p


def _sweep_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="snn-compile sweep", description="Compress MODEL at every weight width and "
                                "pruning ratio, with the seed's plain recipe (baseline) and with calibrated "
                                "options chosen on a validation split of the training data (best). Writes "
                                "sweep.csv, sweep.json, sweep.md and sweep.png.")
    p.add_argument("model", help="snn-compile checkpoint (.pt) or NIR graph (.nir)")
    p.add_argument("--bits", default="16,8,4", help="comma-separated weight widths, 1..16 (<= 8 runs on the "
                   "Loihi 2 emulator, wider on the digital target; default 16,8,4)")
    p.add_argument("--prune", default="0.1,0.2,0.3", help="comma-separated structured pruning ratios in [0, 1) "
                   "(default 0.1,0.2,0.3)")
    p.add_argument("--methods", default="baseline,best", help="baseline, best or both (default both)")
    p.add_argument("-o", "--output", type=_output_path, help="output directory (default: next to MODEL, "
                   "MODEL-sweep); an existing one is replaced only with --force or --resume")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep: keep the rows in the "
                   "output directory and compute only the missing settings (the options must be the same)")
    p.add_argument("--dataset", help="dataset (default: the one the checkpoint names)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--data", type=Path, metavar="FILE.npz", help=DATA_HELP)
    p.add_argument("--samples", type=int, help="evaluate on the first N test samples (default: all)")
    p.add_argument("--calibration", type=int, default=512, help="training samples for calibration (default 512; "
                   "pruning's least-squares refit gains from more: the Fashion-MNIST study uses 8192)")
    p.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="also fine-tune each setting for N epochs "
                   "(quantization-aware, straight-through estimator) and report it as method 'finetuned'")
    p.add_argument("--finetune-samples", type=int, help="fine-tune on a random subset of N training samples "
                   "(default: all)")
    p.add_argument("--prune-search", choices=("greedy", "none"), default="greedy", help="greedy (default): also "
                   "choose the pruned units in rounds by how far the readout moves, one validation run per "
                   "remaining unit per round (it took the Fashion-MNIST CSNN study's sweep from 35 to 42 minutes); "
                   "none: one-shot rankings only")
    p.add_argument("--grid", choices=("cross", "axes"), default="cross", help="cross: every bits value at "
                   "every ratio (default); axes: bits unpruned and ratios with float weights, as the "
                   "quantization seed's study")
    p.add_argument("--steps", type=int, help="time steps, when a NIR file does not say")
    p.add_argument("--framework", help=FRAMEWORK_HELP)
    p.add_argument("--reset", choices=("zero", "subtract"), help=RESET_HELP)
    return p


def _train_ann_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="snn-compile train-ann", description="Train a ReLU MLP (Flatten, Linear -> "
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
    p.add_argument("-o", "--output", type=_output_path, default=Path("ann.pt"),
                   help="checkpoint path (default ann.pt)")
    return p


def cmd_train_ann(args) -> int:
    from frontends.ann_training import AnnTrainOptions, ann_training_memory_bytes, build_mlp, save_ann, train_ann
    from frontends.datasets import load_dataset

    hidden = _number_list(args.hidden, int, "--hidden")
    _positive(epochs=args.epochs, batch_size=args.batch_size)
    if any(size < 1 for size in hidden):
        raise UserError(f"--hidden {args.hidden!r}: layer sizes must be at least 1")
    _check_seed(args.seed, "--seed")
    _check_learning_rate(args.lr)
    check_output_file(args.output)
    dataset = load_dataset(args.dataset, args.data_dir)
    _require_memory(ann_training_memory_bytes(dataset.input_shape, hidden, dataset.classes,
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


def _convert_parser() -> argparse.ArgumentParser:
    from frontends.conversion import METHODS

    p = _Parser(prog="snn-compile convert", description="Convert a trained ReLU network into "
                                "integrate-and-fire neurons and write a NIR graph that names its dataset, steps, "
                                "dt, reset and input range, so `snn-compile OUT.nir` needs no further options. "
                                "Which method is exact on which target: docs/conversion.md.")
    p.add_argument("ann", help="ANN checkpoint (`snn-compile train-ann`, frontends.ann_training.save_ann), or a "
                   "whole model saved with torch.save(model) together with --unpickle")
    p.add_argument("-o", "--output", type=_output_path, help="NIR file to write (default: next to ANN, "
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


def cmd_convert(args) -> int:
    from frontends.ann_training import AnnTrainOptions, evaluate_ann, load_ann, qffs_finetune
    from frontends.conversion import QuantReLU, convert, model_layers, write_nir
    from frontends.datasets import load_dataset

    _positive(steps=args.steps, calibration=args.calibration)
    _check_steps(args.steps)
    if args.finetune_epochs < 0:
        raise UserError(f"--finetune-epochs must be 0 or more, got {args.finetune_epochs}")
    if not 0 < args.percentile <= 100:
        raise UserError(f"--percentile must be in (0, 100], got {args.percentile}")
    _check_seed(args.seed, "--seed")
    _check_learning_rate(args.lr)
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


def _serve_parser() -> argparse.ArgumentParser:
    import dataclasses

    from targets.hil.server import LIMIT_OPTIONS, TOKEN_ENV, Limits

    p = _Parser(prog="snn-compile serve", description="Run PROGRAM on an emulated board in this process and "
                "serve it over a socket (protocol, limits and trust model: docs/hil.md); a host drives it with "
                "targets.hil.client.Board. Stops on a client's shutdown, SIGTERM or Ctrl-C.")
    p.add_argument("program", type=Path, help="compiled program (program.h5 from `snn-compile MODEL`)")
    p.add_argument("--target", default="loihi2", help="board to emulate: loihi2 (the bit-accurate emulator; "
                   "lava cannot be served: its runner is not step by step)")
    p.add_argument("--host", default="127.0.0.1", help="TCP address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7421, help="TCP port (default 7421; 0 picks a free one)")
    p.add_argument("--unix", type=Path, help="listen on this Unix socket path instead of TCP")
    p.add_argument("--step-period", type=float, default=1e-3, help="seconds of real time per chip step, for the "
                   "real-time factor in the counters (default 1e-3)")
    p.add_argument("--token-file", type=Path, help="a file (mode 0600) holding a shared token that every client "
                   f"must send first (default: the {TOKEN_ENV} environment variable, else no token)")
    limits = p.add_argument_group("limits", "what one client may ask; a request over one gets an error naming it")
    for field in dataclasses.fields(Limits):
        option, unit, bounds = LIMIT_OPTIONS[field.name]
        limits.add_argument(option, dest=field.name, type=type(field.default), default=field.default,
                            metavar={"bytes": "BYTES", "s": "SECONDS"}.get(unit, "N"),
                            help=f"{bounds} (default {field.default}"
                            + (f" = {Limits().shown(field.name)})" if unit == "bytes" else ")"))
    return p


def cmd_serve(args) -> int:
    import dataclasses

    from targets.hil.server import TOKEN_ENV, Limits, read_token, serve

    limits = Limits(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Limits)})
    token = read_token(args.token_file) if args.token_file is not None else os.environ.get(TOKEN_ENV) or None
    serve(args.program, args.target, args.host, args.port, args.unix, args.step_period, limits=limits, token=token)
    return 0


def _compare_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="snn-compile compare", description="Compile MODEL, run the same test samples "
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
    p.add_argument("--batch-size", type=int, default=256, help="samples run at once (default 256)")
    p.add_argument("--dataset", help="dataset (default: the one the checkpoint names)")
    p.add_argument("--data-dir", help="directory with IDX files for fmnist/mnist")
    p.add_argument("--data", type=Path, metavar="FILE.npz", help=DATA_HELP)
    p.add_argument("--steps", type=int, help="time steps, when a NIR file does not say")
    p.add_argument("--framework", help=FRAMEWORK_HELP)
    p.add_argument("--reset", choices=("zero", "subtract"), help=RESET_HELP)
    return p


def cmd_compare(args) -> int:
    from frontends.datasets import load_dataset
    from targets.chips import load_chip
    from toolchain.compare import compare, table
    from toolchain.driver import build_pipeline, compile_graph, load_model
    from toolchain.passes.quantize import QuantizeOptions

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise UserError(f"unknown target {unknown[0]!r}; choose from: {', '.join(TARGETS)}")
    _positive(samples=args.samples, batch_size=args.batch_size, steps=args.steps)
    _check_steps(args.steps)
    passes = build_pipeline(load_chip("loihi2"), QuantizeOptions(args.bits, args.weight_scale))
    user_data = None
    if args.data:
        from frontends.user_data import read_user_data
        user_data = read_user_data(args.data, args.dataset).require("compare")
    import_options = ImportOptions(steps=args.steps, framework=args.framework, reset=args.reset)
    source = load_model(args.model, user_data.import_hints(import_options) if user_data else import_options)
    dataset_name = args.dataset or source.dataset
    if not dataset_name and not user_data:
        raise UserError("a NIR model needs --dataset (or --data FILE.npz) to compare on")
    dataset = user_data.for_model(source.graph) if user_data else load_dataset(dataset_name, args.data_dir)
    count = min(args.samples, len(dataset.x_test))
    _require_run_memory(source.graph, min(args.batch_size, count))
    program = compile_graph(source.graph, passes)
    x = dataset.x_test[:count] if user_data else dataset.x_test[:count].reshape((count,) + tuple(program.input_shape))
    result = compare(source, program, x, dataset.y_test[:count], targets, args.batch_size)
    print(table(result))
    exact = result.get("exact")
    return 1 if exact is not None and not exact["equal"] else 0


def _lava_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="snn-compile lava", description="Manage the Lava environment: lava-nc 0.10.0 "
                                "in its own Python 3.10 virtual environment (SNN_LAVA_VENV, default .lava-venv "
                                "in the repository; the interpreter from SNN_LAVA_PYTHON, PATH or pyenv).")
    p.add_argument("action", choices=("setup",), help="setup: create the environment if it is not complete")
    return p


def cmd_lava(args) -> int:
    from targets.lava.environment import create

    create()
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken the way Ctrl-C is: outputs in progress are removed on the way out."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(DESCRIPTION)
        return 0
    command = argv.pop(0) if argv[0] in COMMANDS else "compile"
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        with warnings.catch_warnings():  # library warnings are noise on a command line; real problems are errors
            warnings.simplefilter("ignore")
            return _run(command, argv)
    except UserError as exc:
        print(f"snn-compile: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the system refused a read or write the checks could not foresee (a full disk)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"snn-compile: error: {where}{_one_line(exc.strerror or exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"snn-compile: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(command: str, argv: list[str]) -> int:
    if command == "train":
        return cmd_train(_train_parser().parse_args(argv))
    if command == "sweep":
        return cmd_sweep(_sweep_parser().parse_args(argv))
    if command == "train-ann":
        return cmd_train_ann(_train_ann_parser().parse_args(argv))
    if command == "convert":
        return cmd_convert(_convert_parser().parse_args(argv))
    if command == "serve":
        return cmd_serve(_serve_parser().parse_args(argv))
    if command == "compare":
        return cmd_compare(_compare_parser().parse_args(argv))
    if command == "lava":
        return cmd_lava(_lava_parser().parse_args(argv))
    return cmd_compile(_compile_parser().parse_args(argv))


def _one_line(message) -> str:
    """Messages from libraries (HDF5, torch) may span lines; an error is one."""
    return " ".join(str(message).split())


def cmd_train(args) -> int:
    from frontends.checkpoint import save_checkpoint
    from frontends.datasets import load_dataset
    from frontends.models import default_config
    from frontends.training import TrainOptions, train, training_memory_bytes

    _positive(steps=args.steps, epochs=args.epochs, batch_size=args.batch_size)
    _check_steps(args.steps)
    if not 0.0 <= args.channel_dropout < 1.0:
        raise UserError(f"--channel-dropout must be in [0, 1), got {args.channel_dropout}")
    widths = None if args.widths is None else _number_list(args.widths, int, "--widths")
    if widths is not None and (not widths or min(widths) < 1):
        raise UserError(f"--widths must be one or more positive sizes, got {args.widths!r}")
    _check_seed(args.seed, "--seed")
    _check_learning_rate(args.lr)
    check_output_file(args.output)
    if args.data:
        from frontends.user_data import read_user_data
        dataset = read_user_data(args.data, args.dataset).require("train", frames=True).dataset()
    else:
        dataset = load_dataset(args.dataset or "digits", args.data_dir)
    config = default_config(args.arch, dataset.input_shape, dataset.classes, args.channel_dropout, widths)
    _require_memory(training_memory_bytes(config, dataset.input_shape, dataset.classes, args.steps,
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


def _number_list(text: str, kind, option: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} {text!r}: expected comma-separated numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{option} {text!r}: expected finite numbers")
    return values


SEED_MAX = 2**32 - 1  # numpy's generators take seeds in 0..2**32 - 1


def _check_seed(seed: int, option: str) -> None:
    if not 0 <= seed <= SEED_MAX:
        raise UserError(f"{option} must be in 0..{SEED_MAX}, got {seed}")


def _check_learning_rate(rate: float) -> None:
    if not (math.isfinite(rate) and rate > 0):
        raise UserError(f"--lr must be a finite number above 0, got {rate}")


def _check_steps(steps: int | None) -> None:
    if steps is not None and steps > MAX_STEPS:
        raise UserError(f"--steps {steps} is over the maximum of {MAX_STEPS} time steps")


def _require_memory(needed: int, what: str, fix: str) -> None:
    """Refuse work that would exhaust this machine's memory, before it starts."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise UserError(f"{what} needs about {needed / 2**30:.3g} GiB of memory, more than this machine's "
                        f"{available / 2**30:.3g} GiB; {fix}")


def _require_run_memory(graph, batch_size: int) -> None:
    from toolchain.evaluate import run_memory_bytes

    _require_memory(run_memory_bytes(graph, batch_size), f"running {graph.steps} steps in batches of "
                    f"{batch_size}", "lower --batch-size (or --steps)")


def _sweep_options(args, model_bytes: bytes) -> dict:
    """What a sweep's rows depend on: ``--resume`` continues only a sweep with the same."""
    import hashlib

    from toolchain.files import read_input

    return {"model_sha256": hashlib.sha256(model_bytes).hexdigest(), "bits": args.bits, "prune": args.prune,
            "methods": args.methods, "dataset": args.dataset, "data_dir": args.data_dir, "samples": args.samples,
            "calibration": args.calibration, "finetune_epochs": args.finetune_epochs,
            "finetune_samples": args.finetune_samples, "prune_search": args.prune_search, "grid": args.grid,
            "steps": args.steps,
            "data_sha256": hashlib.sha256(read_input(args.data)).hexdigest() if args.data else None}


def _finished_rows(out_dir: Path, options: dict) -> list[dict]:
    """The rows an earlier run of the same sweep wrote to ``out_dir``, for ``--resume``."""
    import json

    from toolchain.files import read_marker

    record = read_marker(out_dir) or {}
    earlier = (record.get("sweep") or {}).get("options") if record.get("command") == "sweep" else None
    if not isinstance(earlier, dict):
        raise UserError(f"--resume: {out_dir} holds no sweep to resume; run the sweep without --resume")
    changed = next((key for key in options if earlier.get(key) != options[key]), None)
    if changed:
        raise UserError(f"--resume: the sweep in {out_dir} ran with {changed} {earlier.get(changed)!r}, not "
                        f"{options[changed]!r}; resume with the same options, or start over with --force")
    try:
        rows = json.loads((out_dir / "sweep.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--resume: cannot read {out_dir / 'sweep.json'} ({_one_line(exc)})") from None
    if not (isinstance(rows, list) and all(isinstance(r, dict) and {"bits", "prune", "method"} <= r.keys()
                                           for r in rows)):
        raise UserError(f"--resume: {out_dir / 'sweep.json'} is not a sweep's rows; start over with --force")
    return rows


def cmd_sweep(args) -> int:
    from frontends.datasets import load_dataset
    from targets.chips import load_chip
    from toolchain.driver import load_model
    from toolchain.files import read_input
    from toolchain.report import sweep_table, write_sweep
    from toolchain.sweep import SweepInterrupted, check_settings, finish_rows, run_sweep, split_data

    bits = _number_list(args.bits, int, "--bits")
    ratios = _number_list(args.prune, float, "--prune")
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - {"baseline", "best"}:
        raise UserError(f"--methods {args.methods!r}: choose baseline, best or baseline,best")
    check_settings(bits, ratios)
    _positive(samples=args.samples, calibration=args.calibration, workers=args.workers,
              finetune_samples=args.finetune_samples, steps=args.steps)
    _check_steps(args.steps)
    if args.finetune_epochs < 0:
        raise UserError(f"--finetune-epochs must be 0 or more, got {args.finetune_epochs}")
    model_path = Path(args.model)
    out_dir = args.output or model_path.with_name(f"{model_path.stem}-sweep")
    options = _sweep_options(args, read_input(model_path))
    output = StagingDir(out_dir, {"command": "sweep", "sweep": {"options": options, "complete": True}},
                        force=args.force or args.resume, inputs=(args.model,))
    finished = _finished_rows(out_dir, options) if args.resume else []
    user_data = None
    if args.data:
        from frontends.user_data import read_user_data
        user_data = read_user_data(args.data, args.dataset).require("sweep")
    import_options = ImportOptions(steps=args.steps, framework=args.framework, reset=args.reset)
    source = load_model(args.model, user_data.import_hints(import_options) if user_data else import_options)
    dataset_name = args.dataset or source.dataset
    if not dataset_name and not user_data:
        raise UserError("a NIR model needs --dataset (or --data FILE.npz) to sweep on")
    dataset = user_data.for_model(source.graph) if user_data else load_dataset(dataset_name, args.data_dir)
    data = split_data(dataset, calibration=args.calibration, test_samples=args.samples,
                      train_samples=args.finetune_samples)
    _require_run_memory(source.graph, min(256, len(data.test_x)))
    try:
        rows = run_sweep(source.graph, load_chip("loihi2"), data, bits, ratios, methods, workers=args.workers,
                         finetune_epochs=args.finetune_epochs, grid=args.grid,
                         prune_search=args.prune_search == "greedy", finished=finished)
    except SweepInterrupted as stop:
        if stop.rows:
            left = stop.total - len(stop.rows)
            output.record["sweep"]["complete"] = False
            with output as directory:
                write_sweep(finish_rows(stop.rows), directory, note=f"A partial sweep: {len(stop.rows)} of "
                            f"{stop.total} settings (interrupted). Rerun the same command with --resume to "
                            f"compute the other {left}.")
            print(f"wrote the {len(stop.rows)} finished settings of {stop.total} to {out_dir}/ (a partial sweep); "
                  f"rerun the same command with --resume to compute the other {left}", flush=True)
        raise stop.cause from None
    with output as directory:
        write_sweep(rows, directory)
    print(sweep_table(rows))
    print(f"\nwrote {out_dir}/ (sweep.csv, sweep.json, sweep.md, sweep.png)")
    return 0


def _positive(**values):
    for name, value in values.items():
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


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


def cmd_compile(args) -> int:
    from dataclasses import replace

    from frontends.conversion import write_nir
    from targets.chips import load_chip
    from toolchain.driver import build_pipeline, compile_graph, digital_passes, load_model, prune_passes
    from toolchain.files import write_bytes_atomically
    from toolchain.passes import run_pipeline
    from toolchain.passes.prune import PruneOptions, check_ratio
    from toolchain.passes.quantize import QuantizeOptions, check_bits, check_digital_bits

    if args.target not in TARGETS:
        raise UserError(f"unknown target {args.target!r}; choose one of: {', '.join(TARGETS)}")
    _positive(samples=args.samples, batch_size=args.batch_size, steps=args.steps, max_cores=args.max_cores,
              chips=args.chips)
    _check_steps(args.steps)
    _check_seed(args.placement_seed, "--placement-seed")
    if args.calibration < 0:
        raise UserError(f"--calibration must be 0 or more, got {args.calibration}")
    chip = load_chip("loihi2")
    digital = args.target == "digital45nm"
    digital_only = digital and args.bits > chip.limit("weight_bits_max")
    if digital_only:  # the bits are checked before any work
        check_digital_bits(args.bits)
    else:
        check_bits(args.bits, chip)
    check_ratio(args.prune, "--prune")
    quantize_options = QuantizeOptions(args.bits, args.weight_scale, args.granularity, args.bias_correction)
    prune_options = PruneOptions(args.prune, args.prune_method, args.prune_rank, args.prune_compensation)
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
    dataset_name = None if user_data else args.dataset or source.dataset
    dataset = user_data.for_model(source.graph, args.input_levels) if user_data else None
    if user_data:
        print(f"data: {user_data.describe()}; {dataset.notes[-1]}")
    if dataset_name:
        from frontends.datasets import load_dataset
        dataset = load_dataset(dataset_name, args.data_dir)
        if tuple(dataset.input_shape) != tuple(source.graph.input_shape) and \
                int(np.prod(dataset.input_shape)) != int(np.prod(source.graph.input_shape)):
            raise UserError(f"dataset {dataset.name} has inputs {dataset.input_shape} but the model expects "
                            f"{source.graph.input_shape}")
    if dataset is not None:
        count = len(dataset.x_test) if args.samples is None else min(args.samples, len(dataset.x_test))
        _require_run_memory(source.graph, min(args.batch_size, count))
    calibration = None
    if dataset is not None and args.calibration:
        calibration = dataset.x_train[:args.calibration].reshape((-1,) + tuple(source.graph.input_shape))
    pruning = prune_passes(prune_options, calibration)
    lowering = [] if digital_only else build_pipeline(
        chip, replace(quantize_options, bits=min(args.bits, chip.limit("weight_bits_max"))), calibration,
        args.max_cores, args.chips, args.placement_seed)
    snapping = digital_passes(quantize_options, calibration) if digital else []
    if args.print_passes:
        print("\n".join(p.describe() for p in pruning + lowering + snapping))
        return 0
    graph = run_pipeline(source.graph, pruning)
    program = compile_graph(graph, lowering, earlier=pruning) if lowering else None
    target_graph = run_pipeline(graph, snapping) if snapping else None

    from toolchain.evaluate import evaluate_and_report
    with output as staging:
        written = ["model.nir", "report.json", "report.md", "report.html"]
        if program is not None:
            write_bytes_atomically(staging / "program.h5", program.to_bytes())
            written.insert(0, "program.h5")
        write_nir(source.nir_graph, staging / "model.nir")
        report = evaluate_and_report(source, program, args.target, dataset, args.samples, args.batch_size,
                                     staging, chip=chip, bits=args.bits, target_graph=target_graph,
                                     passes=[p.describe() for p in pruning + lowering + snapping],
                                     energy_model=args.energy_model, memory=args.memory)
    from toolchain.report import terminal
    print(terminal(report))
    print(f"\nwrote {out_dir}/ ({', '.join(written)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
