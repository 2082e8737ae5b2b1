"""snnTorch models built to compile for Loihi.

Each model is a stack of blocks; a block is a synapse (ordinary torch layers:
Linear, or Conv2d -> optional BatchNorm2d -> AvgPool2d) feeding one layer of
``snntorch.Leaky`` neurons. Neurons reset to zero in the step they fire
(``reset_mechanism="zero", reset_delay=False``), which is exactly Loihi's
LIF with du = 4095 and dv = 4096 (1 - beta). Input is either direct (the
analog image is the input current at every step) or an encoded spike train
(samples, steps, ...). With ``readout="membrane"`` the last layer never
fires and its final membrane potential is the output (NIR ``LI``).
"""

from __future__ import annotations

import math

import snntorch as snn
import torch
from torch import nn

ARCHITECTURES = ("mlp", "csnn")


def default_config(arch: str, input_shape, classes: int, channel_dropout: float = 0.0,
                   widths: list[int] | None = None) -> dict:
    """The default recipe for an architecture, scaled to the input size.

    ``widths``: the hidden layers' sizes (an MLP's neurons, a CSNN's channels)
    in place of the recipe's, since how wide a network is decides how much
    of it pruning can take away.
    ``channel_dropout``: while training, silence each hidden channel (a dense
    layer's neuron) for a whole sample with this probability, so that no unit
    is indispensable and structured pruning later costs less accuracy.
    """
    if not 0.0 <= channel_dropout < 1.0:
        raise ValueError(f"channel dropout must be in [0, 1), got {channel_dropout}")
    if widths is not None and (not widths or min(widths) < 1):
        raise ValueError(f"widths must be one or more positive sizes, got {widths}")
    side = input_shape[-1]
    if arch == "mlp":
        return {"arch": "mlp", "hidden": list(widths or [128]), "beta": 0.9, "threshold": 1.0, "readout": "spikes",
                "channel_dropout": channel_dropout}
    if arch == "csnn":
        small = side < 16
        return {"arch": "csnn", "channels": list(widths or ([16, 32] if small else [32, 64])),
                "kernel": 3 if small else 5, "padding": 1 if small else 0,
                "batchnorm": True, "pool": 2, "beta": 0.5, "threshold": 1.0, "channel_dropout": channel_dropout}
    raise ValueError(f"unknown architecture {arch!r}")


def check_config(config, input_shape, classes: int) -> None:
    """Raise ``ValueError`` naming the first thing wrong with an architecture ``config`` for
    inputs of ``input_shape`` and ``classes`` outputs, before any layer is built."""
    if not isinstance(config, dict):
        raise ValueError(f"expected a dict, found {type(config).__name__}")
    if config.get("arch") not in ARCHITECTURES:
        raise ValueError(f"arch {config.get('arch')!r} is not one of {', '.join(ARCHITECTURES)}")
    if not _is_count(classes):
        raise ValueError(f"classes must be a positive integer, found {classes!r}")
    if not (isinstance(input_shape, (list, tuple)) and input_shape and all(_is_count(d) for d in input_shape)):
        raise ValueError(f"input shape must list positive sizes, found {input_shape!r}")
    beta, threshold = config.get("beta"), config.get("threshold")
    if not (_is_real(beta) and 0.0 <= beta <= 1.0):
        raise ValueError(f"beta must be in [0, 1], found {beta!r}")
    if not (_is_real(threshold) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be positive, found {threshold!r}")
    dropout = config.get("channel_dropout", 0.0)
    if not (_is_real(dropout) and 0.0 <= dropout < 1.0):
        raise ValueError(f"channel_dropout must be in [0, 1), found {dropout!r}")
    widths_key = "hidden" if config["arch"] == "mlp" else "channels"
    widths = config.get(widths_key)
    if not (isinstance(widths, (list, tuple)) and all(_is_count(w) for w in widths)):
        raise ValueError(f"{widths_key} must list positive sizes, found {widths!r}")
    if config["arch"] == "mlp":
        if config.get("readout", "spikes") not in ("spikes", "membrane"):
            raise ValueError(f"readout must be spikes or membrane, found {config.get('readout')!r}")
        return
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ValueError(f"csnn needs square images (C, H, H), found input shape {tuple(input_shape)}")
    if not widths:
        raise ValueError("channels must list at least one convolution")
    for key, least in (("kernel", 1), ("padding", 0), ("pool", 1)):
        if not (isinstance(config.get(key), int) and not isinstance(config[key], bool) and config[key] >= least):
            raise ValueError(f"{key} must be an integer of at least {least}, found {config.get(key)!r}")
    if not isinstance(config.get("batchnorm", False), bool):
        raise ValueError(f"batchnorm must be true or false, found {config['batchnorm']!r}")
    side = input_shape[-1]
    for block, _ in enumerate(widths):
        side = (side + 2 * config["padding"] - config["kernel"] + 1) // config["pool"]
        if side < 1:
            raise ValueError(f"block {block} shrinks the {input_shape[-1]}-pixel input to nothing (kernel "
                             f"{config['kernel']}, padding {config['padding']}, pool {config['pool']})")


NEURON_TRAINING_VALUES = 11
"""Values per neuron and step that a training step keeps for the backward pass (the synapse's
output, snnTorch's membrane, spike, reset and surrogate terms): measured on the digits MLP."""


def network_size(config: dict, input_shape, classes: int) -> tuple[int, int]:
    """(weights, values per sample and step that training keeps for the backward pass), from a
    valid ``config`` without building the network: what a checkpoint must hold and what
    training's memory grows with."""
    if config["arch"] == "mlp":
        sizes = [math.prod(input_shape)] + list(config["hidden"]) + [classes]
        weights = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        return weights, NEURON_TRAINING_VALUES * sum(sizes[1:])
    channels_in, side = input_shape[0], input_shape[-1]
    weights = values = 0
    for channels in config["channels"]:
        weights += channels * channels_in * config["kernel"] ** 2 + channels
        if config.get("batchnorm"):
            weights += 2 * channels
        convolved = side + 2 * config["padding"] - config["kernel"] + 1
        side = convolved // config["pool"]
        values += channels * convolved ** 2 * (2 if config.get("batchnorm") else 1)
        values += NEURON_TRAINING_VALUES * channels * side ** 2
        channels_in = channels
    features = channels_in * side * side
    return weights + features * classes + classes, values + NEURON_TRAINING_VALUES * classes


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


class Block(nn.Module):
    """synapse -> Leaky neurons, one Loihi layer (``spiking=False``: a leaky integrator)."""

    def __init__(self, synapse: nn.Sequential, beta: float, threshold: float, spiking: bool = True):
        super().__init__()
        self.synapse = synapse
        self.spiking = spiking
        self.neurons = snn.Leaky(beta=beta, threshold=threshold, reset_mechanism="zero",
                                 reset_delay=False) if spiking else None
        self.beta = beta

    def step(self, current: torch.Tensor, mem: torch.Tensor):
        """One time step: (output, membrane). A non-spiking block outputs its membrane."""
        if self.spiking:
            return self.neurons(current, mem)
        mem = self.beta * mem + current
        return mem, mem


class SpikingNetwork(nn.Module):
    """A feed-forward SNN run for ``steps`` steps on a constant (direct) input.

    ``forward`` returns the output layer's spike counts (samples, outputs),
    or its final membrane potential with ``readout="membrane"``.
    """

    def __init__(self, config: dict, input_shape, classes: int, steps: int):
        super().__init__()
        self.config, self.input_shape, self.classes, self.steps = dict(config), tuple(input_shape), classes, steps
        beta, threshold = config["beta"], config["threshold"]
        self.blocks = nn.ModuleList()
        if config["arch"] == "mlp":
            sizes = [math.prod(input_shape)] + list(config["hidden"]) + [classes]
            last = len(sizes) - 2
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers = [nn.Flatten()] if i == 0 else []
                spiking = i < last or config.get("readout", "spikes") == "spikes"
                self.blocks.append(Block(nn.Sequential(*layers, nn.Linear(n_in, n_out)), beta, threshold, spiking))
        else:
            channels_in, side = input_shape[0], input_shape[-1]
            for channels in config["channels"]:
                layers = [nn.Conv2d(channels_in, channels, config["kernel"], padding=config["padding"])]
                if config.get("batchnorm"):
                    layers.append(nn.BatchNorm2d(channels))
                layers.append(nn.AvgPool2d(config["pool"]))
                self.blocks.append(Block(nn.Sequential(*layers), beta, threshold))
                side = (side + 2 * config["padding"] - config["kernel"] + 1) // config["pool"]
                channels_in = channels
            features = channels_in * side * side
            self.blocks.append(Block(nn.Sequential(nn.Flatten(), nn.Linear(features, classes)), beta, threshold))

    def forward(self, x: torch.Tensor, record: bool = False):
        """``x``: (samples, *input_shape) held every step, or (samples, steps, *input_shape).
        With ``record`` also returns the output layer's per-step outputs (samples, steps, outputs)."""
        time_varying = x.dim() == len(self.input_shape) + 2
        held = None if time_varying else self.blocks[0].synapse(x)  # direct input: same every step
        mems = [None] * len(self.blocks)
        masks = [None] * len(self.blocks)
        counts, per_step = 0, []
        for t in range(self.steps):
            current = self.blocks[0].synapse(x[:, t]) if time_varying else held
            for i, block in enumerate(self.blocks):
                if i > 0:
                    current = block.synapse(current)
                if mems[i] is None:
                    mems[i] = torch.zeros_like(current)
                current, mems[i] = block.step(current, mems[i])
                if i < len(self.blocks) - 1 and self.training and self.config.get("channel_dropout", 0.0) > 0:
                    if masks[i] is None:
                        masks[i] = self._channel_mask(current)
                    current = current * masks[i]
            counts = counts + current
            per_step.append(current)
        out = counts if self.blocks[-1].spiking else current
        return (out, torch.stack(per_step, dim=1)) if record else out

    def _channel_mask(self, spikes: torch.Tensor) -> torch.Tensor:
        """One keep-or-silence draw per sample and channel, held for every step (as pruning would)."""
        keep = 1.0 - self.config["channel_dropout"]
        shape = spikes.shape[:2] + (1,) * (spikes.dim() - 2)
        return torch.bernoulli(torch.full(shape, keep, device=spikes.device)) / keep
