r"""ANN -> SNN conversion: a PyTorch ReLU network becomes an IF network in NIR.

The second front end. A trained ReLU network (``nn.Sequential``, or a module
whose ``forward`` is a plain chain) of Linear, Conv2d (BatchNorm folded in),
AvgPool2d/SumPool2d, Flatten and ReLU layers is rewritten as integrate-and-
fire neurons: every ReLU becomes an ``IF`` population with threshold 1 whose
spike count over T steps encodes the activation; the logits become a
non-spiking integrator whose final potential is T times the logits. Input is
direct: the analog image is the input current at every step. The graph
carries ``steps``, ``dt``, ``reset`` and ``input_levels`` in its metadata,
so ``toolchain.nir_import.graph_from_nir`` and every target take it as is.

Methods (``convert(method=...)``):

* ``"max"`` / ``"percentile"``: data-based normalisation (Diehl et al. 2015;
  Rueckauer et al. 2017). Each ReLU layer's scale lambda is the largest (or
  the 99.9th-percentile) positive activation on calibration data; weights
  become ``W lambda_in / lambda_out``, biases ``b / lambda_out``, so rates
  lie in [0, 1] at threshold 1. The spike count over T steps approximates
  the activation to within one spike per neuron and layer: the error shrinks
  like 1/T and never vanishes.
* ``"qffs"`` (Li, Ma, Furber 2022): the network is trained or fine-tuned with
  :class:`QuantReLU` activations clipped at a learned lambda and rounded to
  L levels. With T = L steps, reset by subtraction and the membrane starting
  at threshold/2, an IF neuron driven by a constant current z fires exactly
  ``floor(L z / lambda + 1/2)`` times (clipped to [0, L]): the quantized
  activation itself. The half-threshold start is emitted as a per-step bias
  of threshold / (2T), which leaves the same potential after T steps without
  an initial-state field the chip lacks.

Which method is exact on which target, and what the toolchain does about
Loihi's reset to zero: docs/guides/conversion.md.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import nir
import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from frontends.nir_export import DT, fold_batchnorm
from toolchain.errors import UserError
from toolchain.ir import pair
from toolchain.files import write_bytes_atomically

METHODS = ("max", "percentile", "qffs")
READOUT_TAU_STEPS = 2.0**24
"""Readout time constant in steps: the decay 1 - 2^-24 is 1 in float32 rounding
and dv = 0 on Loihi, so the LI readout is a pure integrator (tau, R exact powers of 2)."""
SUPPORTED = ("Linear, Conv2d, AvgPool2d, SumPool2d, Flatten, ReLU, QuantReLU, BatchNorm1d/2d after a "
             "Linear/Conv2d, Dropout, Identity")


class QuantReLU(nn.Module):
    r"""ReLU clipped at a learned ``clip`` (lambda) and quantized to what an IF
    neuron can count in ``levels`` (L) steps. With c = z / lambda:

    .. math::
        \text{reset "subtract"}: \quad a = \frac{\lambda}{L}
            \operatorname{clip}\left(\lfloor L c + \tfrac12 \rfloor, 0, L\right)

        \text{reset "zero"}: \quad a = \frac{\lambda}{L}
            \left\lfloor \frac{L}{\lfloor 1/c \rfloor + 1} \right\rfloor \ (c > 0), \qquad a = 0 \ (c \le 0)

    The first is the spike count of an IF neuron with reset by subtraction
    starting at threshold/2; the second of one that resets to zero (Loihi)
    starting at 0, which fires every ``floor(1/c) + 1`` steps. The backward
    pass is straight-through on (0, lambda); lambda gets the learned-step-size
    gradient, so it settles where clipping and rounding errors balance.
    """

    def __init__(self, levels: int, clip: float = 1.0, reset: Literal["subtract", "zero"] = "subtract"):
        super().__init__()
        if levels < 1:
            raise ValueError("levels must be at least 1")
        if reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', not {reset!r}")
        self.levels, self.reset = int(levels), reset
        self.clip = nn.Parameter(torch.tensor(float(clip)))

    def counts(self, c: torch.Tensor) -> torch.Tensor:
        """Spikes in ``levels`` steps for a constant current c (threshold units)."""
        steps = self.levels
        if self.reset == "subtract":
            return torch.clamp(torch.floor(c * steps + 0.5), 0, steps)
        period = torch.floor(1.0 / c.clamp(min=1.0 / (steps + 1))) + 1  # c <= 1/(L+1) never fires in L steps
        return torch.floor(steps / period)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c = z / self.clip
        linear = torch.clamp(c, 0, 1)
        quantized = linear + (self.counts(c.detach()) / self.levels - linear).detach()
        return self.clip * quantized

    def extra_repr(self) -> str:
        return f"levels={self.levels}, reset={self.reset!r}, clip={float(self.clip.detach()):.4g}"


class SumPool2d(nn.Module):
    """Sum pooling (NIR ``SumPool2d``): average pooling times the window area."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride if stride is not None else kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride) * (self.kernel_size[0] * self.kernel_size[1])


ACTIVATIONS = (nn.ReLU, QuantReLU)
WEIGHTED = (nn.Linear, nn.Conv2d)
LINEAR_LAYERS = WEIGHTED + (nn.AvgPool2d, SumPool2d, nn.Flatten)
IGNORED = (nn.Dropout, nn.Identity)
KNOWN = LINEAR_LAYERS + ACTIVATIONS + IGNORED + (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class _Segment:
    """The linear layers between two activations, with the activation closing them
    (None for the readout) and the input shape of each layer."""

    layers: list[tuple[str, nn.Module, tuple[int, ...]]]
    activation: nn.Module | None
    out_shape: tuple[int, ...]


def convert(model: nn.Module, calibration_x=None, *, method: str = "percentile", steps: int | None = None,
            input_shape=None, input_levels: int = 255, reset: str | None = None, percentile: float = 99.9,
            start_at_half_threshold: bool | None = None, dt: float = DT,
            dataset: str | None = None) -> nir.NIRGraph:
    """Convert a trained ReLU network into an IF network, as a NIR graph.

    ``calibration_x``: ANN inputs (floats in [0, 1], shape (n, *input_shape)),
    needed by "max" and "percentile"; "qffs" reads the scales from the
    QuantReLU clips. ``steps`` defaults to the QuantReLU levels. ``reset``
    defaults to the QuantReLU reset ("qffs") or "subtract".
    ``start_at_half_threshold`` defaults to on for "qffs" with reset by
    subtraction and off otherwise. ``input_levels``: the integer input range
    the targets receive (the ANN input is ``x_int / input_levels``).
    ``dataset`` goes into the metadata, so ``snn-compile OUT.nir`` evaluates
    on it without being told.
    """
    if method not in METHODS:
        raise UserError(f"unknown conversion method {method!r}; choose one of {', '.join(METHODS)}")
    model = model.eval()
    layers = model_layers(model)
    activations = [m for _, m in layers if isinstance(m, ACTIVATIONS)]
    quantized = [m for m in activations if isinstance(m, QuantReLU)]
    if method == "qffs" and len(quantized) != len(activations):
        raise UserError("method 'qffs' needs every activation to be a QuantReLU (train or fine-tune with "
                        "frontends.ann_training.with_quantized_activations); use 'percentile' for a plain ReLU net")
    if method != "qffs" and quantized:
        raise UserError(f"the network has QuantReLU activations; convert it with method 'qffs', not {method!r}")
    if method != "qffs" and calibration_x is None:
        raise UserError(f"method {method!r} needs calibration data (a few hundred training inputs)")
    if input_shape is None:
        if calibration_x is None:
            raise UserError("pass input_shape (e.g. (1, 28, 28)) or calibration data")
        input_shape = tuple(np.shape(calibration_x)[1:])
    input_shape = tuple(int(d) for d in input_shape)

    if method == "qffs":
        level_set = {m.levels for m in quantized}
        reset_set = {m.reset for m in quantized}
        if steps is None and len(level_set) != 1:
            raise UserError(f"QuantReLU layers use different levels {sorted(level_set)}; pass steps")
        steps = steps or level_set.pop()
        if reset is None:
            if len(reset_set) != 1:
                raise UserError("QuantReLU layers were trained for different resets; pass reset")
            reset = reset_set.pop()
        scales = [float(m.clip.detach()) for m in quantized]
    else:
        if steps is None:
            raise UserError(f"method {method!r} needs the number of time steps (steps=T)")
        reset = reset or "subtract"
        scales = activation_scales(layers, calibration_x, "max" if method == "max" else percentile)
    if reset not in ("subtract", "zero"):
        raise UserError(f"reset must be 'subtract' or 'zero', not {reset!r}")
    if steps < 1:
        raise UserError("steps must be at least 1")
    if start_at_half_threshold is None:
        start_at_half_threshold = method == "qffs" and reset == "subtract"
    if any(s <= 0 for s in scales):
        raise UserError(f"activation scales must be positive, got {scales}")

    segments = _segments(layers, input_shape)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    edges: list[tuple[str, str]] = []
    previous = "input"
    for i, segment in enumerate(segments):
        scale_in = 1.0 if i == 0 else scales[i - 1]
        scale_out = scales[i] if segment.activation is not None else 1.0
        shift = 0.5 / steps if start_at_half_threshold and segment.activation is not None else 0.0
        for j, node in enumerate(_segment_nodes(segment, scale_in, scale_out, shift)):
            name = f"s{i}_{j}"
            nodes[name] = node
            edges.append((previous, name))
            previous = name
        shape = segment.out_shape
        if segment.activation is not None:
            name = f"s{i}_if"
            nodes[name] = nir.IF(r=np.ones(shape, dtype=np.float32), v_threshold=np.ones(shape, dtype=np.float32))
        else:
            name = "readout"
            nodes[name] = nir.LI(tau=np.full(shape, READOUT_TAU_STEPS * dt), r=np.full(shape, READOUT_TAU_STEPS),
                                 v_leak=np.zeros(shape))
        edges.append((previous, name))
        previous = name
    nodes["output"] = nir.Output(output_type={"output": np.array(segments[-1].out_shape)})
    edges.append((previous, "output"))
    metadata = {"dt": dt, "steps": int(steps), "reset": reset, "input_levels": int(input_levels),
                "producer": "snn-compile frontends.conversion", "source_framework": "pytorch-ann",
                "conversion": method, "activation_scales": [float(s) for s in scales],
                "initial_potential": "threshold/2 as a bias of threshold/(2T) per step"
                if start_at_half_threshold else "0"}
    if method == "percentile":
        metadata["percentile"] = float(percentile)
    if dataset:
        metadata["dataset"] = dataset
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write_nir(nir_graph: nir.NIRGraph, path: str | Path) -> Path:
    """``nir.write`` into memory, then the bytes through a temporary sibling file: a failure leaves
    nothing half-written, and a full disk is a plain ``OSError`` rather than a failure inside libhdf5."""
    buffer = io.BytesIO()
    nir.write(buffer, nir_graph)
    return write_bytes_atomically(path, buffer.getvalue())


def model_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The network as an ordered chain of (name, layer), each checked for convertibility.

    ``nn.Sequential`` (nested too) is read directly; any other module is
    traced with torch.fx, so the order is the one ``forward`` runs.
    """
    if isinstance(model, nn.Sequential):
        layers = []
        for name, child in model.named_children():
            layers.extend(model_layers(child, f"{prefix}{name}"))
        return layers
    name = prefix or type(model).__name__
    if isinstance(model, KNOWN) or type(model).__module__.startswith("torch.nn"):
        _check_layer(name, model)
        return [] if isinstance(model, IGNORED) else [(name, model)]
    return _traced_layers(model, f"{prefix}." if prefix else "")


def _check_layer(name: str, layer: nn.Module) -> None:
    reason = _unsupported_reason(layer)
    if reason:
        raise UserError(f"layer {name} ({type(layer).__name__}) cannot be converted to spiking neurons: {reason}")


def _unsupported_reason(layer: nn.Module) -> str | None:
    if isinstance(layer, KNOWN):
        if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
            return f"padding_mode {layer.padding_mode!r}; only zero padding maps to a chip convolution"
        if isinstance(layer, nn.AvgPool2d) and (layer.ceil_mode or np.any(np.asarray(layer.padding) != 0)
                                                or layer.divisor_override):
            return "only unpadded average pooling (ceil_mode=False, no divisor_override) is a fixed linear kernel"
        return None
    if isinstance(layer, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        return ("max pooling has no rate-coded equivalent (the maximum of spike trains is not the spike train "
                "of the maximum) and NIR has no max-pool node; use AvgPool2d or SumPool2d")
    if isinstance(layer, (nn.RNNBase, nn.RNNCellBase)):
        return ("recurrent layers carry state across inputs and gate it multiplicatively; rate conversion "
                "needs a feed-forward ReLU network (train a recurrent SNN in snnTorch instead)")
    if type(layer).__module__ == "torch.nn.modules.activation":
        return ("only ReLU becomes an IF neuron (a firing rate is a clipped linear function of its input "
                "current); retrain with nn.ReLU or QuantReLU")
    return f"not a convertible layer; supported: {SUPPORTED}"


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QuantReLU, SumPool2d)) or super().is_leaf_module(m, qualname)


def _traced_layers(model: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # fx raises many types for data-dependent control flow
        raise UserError(f"{type(model).__name__}: its forward() cannot be followed as a chain of layers "
                        f"({type(exc).__name__}: {exc}); write the network as nn.Sequential") from None
    layers, previous = [], None
    for node in graph.nodes:
        if node.op == "placeholder":
            previous = node
            continue
        if node.op == "output":
            break
        name = prefix + (str(node.target) if node.op == "call_module" else node.name)
        if node.op == "call_module":
            layer = model.get_submodule(node.target)
            _check_layer(name, layer)
        elif node.op == "call_function" and node.target in (F.relu, torch.relu):
            layer = nn.ReLU()
        elif node.op == "call_function" and node.target is torch.flatten and _flattens_all(node):
            layer = nn.Flatten()
        else:
            op = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
            raise UserError(f"operation {name} ({op}) in {type(model).__name__}.forward cannot be converted; "
                            f"use layers ({SUPPORTED}) in a chain, e.g. nn.Sequential")
        if [a for a in node.args if isinstance(a, torch.fx.Node)] != [previous]:
            raise UserError(f"{type(model).__name__}.forward is not a single chain at {name}; "
                            "only feed-forward chains (no skips or branches) convert")
        if not isinstance(layer, IGNORED):
            layers.append((name, layer))
        previous = node
    return layers


def _flattens_all(node: torch.fx.Node) -> bool:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _segments(layers, input_shape) -> list[_Segment]:
    """Split the chain at its activations; fold BatchNorm; record shapes."""
    segments, current = [], []
    x = torch.zeros((1,) + tuple(input_shape))
    with torch.no_grad():
        for name, layer in layers:
            if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if not current or not isinstance(current[-1][1], WEIGHTED):
                    raise UserError(f"layer {name} (BatchNorm): only a BatchNorm directly after a Linear or "
                                    "Conv2d folds into its weights")
                prev_name, prev, shape = current.pop()
                current.append((prev_name, _folded(prev, layer), shape))
                x = layer(x)
                continue
            if isinstance(layer, ACTIVATIONS):
                segments.append(_Segment(current, layer, tuple(x.shape[1:])))
                current = []
                continue
            try:
                shape = tuple(x.shape[1:])
                x = layer(x)
            except RuntimeError as exc:
                raise UserError(f"layer {name} ({type(layer).__name__}) does not accept input of shape "
                                f"{shape}: {exc}") from None
            current.append((name, layer, shape))
    if not current:
        raise UserError("the network must end with a Linear or Conv2d layer giving the logits, "
                        "not with an activation")
    segments.append(_Segment(current, None, tuple(x.shape[1:])))
    for segment in segments:
        if not any(isinstance(layer, WEIGHTED) for _, layer, _ in segment.layers):
            raise UserError("every activation must be fed through a Linear or Conv2d layer; "
                            f"found activations separated only by {[n for n, *_ in segment.layers] or 'nothing'}")
    return segments


def _folded(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of a Linear/Conv2d with the inference-time BatchNorm after it folded in."""
    folded = copy.deepcopy(layer)
    if isinstance(layer, nn.Conv2d):
        weight, bias = fold_batchnorm(layer, bn)
    else:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        weight, bias = layer.weight * scale[:, None], (bias - bn.running_mean) * scale + bn.bias
    folded.weight = nn.Parameter(weight.detach())
    folded.bias = nn.Parameter(bias.detach())
    return folded


@torch.no_grad()
def activation_scales(layers_or_model, calibration_x, statistic: float | str = 99.9,
                      batch_size: int = 512) -> list[float]:
    """Per activation layer: the largest ("max") or the given percentile of the
    positive activations on calibration data, the lambda that maps rate 1."""
    layers = layers_or_model if isinstance(layers_or_model, list) else model_layers(layers_or_model.eval())
    x_all = torch.as_tensor(np.asarray(calibration_x), dtype=torch.float32)
    collected: dict[int, list[torch.Tensor]] = {}
    for start in range(0, len(x_all), batch_size):
        x = x_all[start:start + batch_size]
        for index, (_, layer) in enumerate(layers):
            x = layer(x)
            if isinstance(layer, ACTIVATIONS):
                collected.setdefault(index, []).append(x[x > 0].reshape(-1))
    scales = []
    for index in sorted(collected):
        values = torch.cat(collected[index]).numpy().astype(np.float64)
        if values.size == 0:
            scales.append(1.0)  # a dead layer: any scale gives zero spikes
        elif statistic == "max":
            scales.append(float(values.max()))
        else:
            scales.append(float(np.percentile(values, float(statistic))))
    return scales


def _segment_nodes(segment: _Segment, scale_in: float, scale_out: float, shift: float) -> list[nir.NIRNode]:
    """NIR nodes computing ``f(scale_in * s) / scale_out + shift`` for the segment's affine map f.

    The first weighted layer's weights take scale_in / scale_out, every bias
    1 / scale_out; the shift goes into the last bias, divided by the area of
    any sum pooling after it.
    """
    weighted = [i for i, (_, layer, _) in enumerate(segment.layers) if isinstance(layer, WEIGHTED)]
    pool_gain = 1.0
    for _, layer, _ in segment.layers[weighted[-1] + 1:]:
        if isinstance(layer, SumPool2d):
            pool_gain *= layer.kernel_size[0] * layer.kernel_size[1]
    nodes = []
    for i, (name, layer, shape) in enumerate(segment.layers):
        if isinstance(layer, WEIGHTED):
            weight = layer.weight.detach().double().numpy() * (scale_in / scale_out if i == weighted[0] else 1.0)
            bias = (layer.bias.detach().double().numpy() if layer.bias is not None
                    else np.zeros(weight.shape[0])) / scale_out
            if i == weighted[-1]:
                bias = bias + shift / pool_gain
            weight, bias = weight.astype(np.float32), bias.astype(np.float32)
            if isinstance(layer, nn.Linear):
                nodes.append(nir.Affine(weight=weight, bias=bias))
            else:
                if layer.dilation != (1, 1) or layer.groups != 1:
                    raise UserError(f"layer {name} (Conv2d): dilation and groups other than 1 are not supported")
                nodes.append(nir.Conv2d(input_shape=shape[1:], weight=weight, stride=layer.stride,
                                        padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                                        bias=bias))
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise UserError(f"layer {name} (Flatten): only flattening everything but the batch is supported")
            nodes.append(nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
        else:
            kernel = pair(layer.kernel_size)
            stride = pair(layer.stride if layer.stride is not None else layer.kernel_size)
            node_type = nir.SumPool2d if isinstance(layer, SumPool2d) else nir.AvgPool2d
            nodes.append(node_type(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array((0, 0))))
    return nodes


