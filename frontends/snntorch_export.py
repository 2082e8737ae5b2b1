"""Export the user's own snnTorch network to NIR, for ``snn-compile model.nir``.

    from frontends.snntorch_export import export_to_nir
    export_to_nir(net, torch.zeros(1, 1, 28, 28), "model.nir", steps=25)

``net`` is any ``nn.Sequential`` of Linear, Conv2d, AvgPool2d, MaxPool2d,
Flatten, BatchNorm1d/2d (folded into the Linear or Conv2d before it),
Dropout (ignored) and snnTorch's Leaky, Synaptic, RLeaky and RSynaptic,
with scalar or per-neuron beta, alpha and threshold. The conventions are
snnTorch's own exporter's (dt = 1e-4, ``Leaky(beta)`` -> LIF with tau =
dt / (1 - beta) and R = tau / dt; Synaptic -> CubaLIF with w_in = tau_syn /
dt), built on NIR's classes directly, which avoids that exporter's sharp
edges (scalar parameters, lost bias and reset, pooling, Flatten dims).
MaxPool2d of binary spikes is written as what it computes: a sum pool
followed by a memoryless LIF (tau = dt) that fires when the sum is above
0.5. The graph's metadata keeps dt, the reset mechanism and reset delay,
and, if given, the steps and input levels.
"""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import snntorch as snn
import torch
from torch import nn

from toolchain.errors import UserError
from toolchain.ir import pair
from toolchain.files import atomic_path

DT = 1e-4  # snnTorch's NIR convention
MAX_POOL_THRESHOLD = 0.5
"""A sum of binary spikes above this is at least one spike: what max-pooling them gives."""
SUPPORTED = ("Linear, Conv2d, AvgPool2d, MaxPool2d, Flatten, BatchNorm1d/2d, Dropout, Identity, "
             "snntorch Leaky, Synaptic, RLeaky, RSynaptic")
NEURONS = (snn.Leaky, snn.Synaptic, snn.RLeaky, snn.RSynaptic)
IGNORED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)


def export_to_nir(model: nn.Module, sample_input: torch.Tensor, path: str | Path, *, steps: int | None = None,
                  input_levels: int | None = None, dt: float = DT) -> nir.NIRGraph:
    """Write ``model`` to ``path`` as NIR and return the graph.

    ``sample_input``: one batch of what the model takes per time step,
    (batch, *input shape); only its shape is used. ``steps`` and
    ``input_levels`` (inputs are integers 0..levels, divided by levels) are
    recorded for the compiler when given.
    """
    graph = to_nir_graph(model, sample_input, steps=steps, input_levels=input_levels, dt=dt)
    with atomic_path(path, suffix=".nir") as tmp:
        nir.write(tmp, graph)
    return graph


def to_nir_graph(model: nn.Module, sample_input: torch.Tensor, *, steps: int | None = None,
                 input_levels: int | None = None, dt: float = DT) -> nir.NIRGraph:
    """The NIR graph of ``model`` (see ``export_to_nir``), without writing it."""
    if not isinstance(model, nn.Sequential):
        raise UserError(f"export_to_nir takes an nn.Sequential of layers, got {type(model).__name__}")
    sample = torch.as_tensor(sample_input)
    if sample.dim() < 2:
        raise UserError(f"sample_input has shape {tuple(sample.shape)}; give one batch: (batch, *input shape)")
    builder = _Builder(tuple(sample.shape[1:]), dt)
    layers = list(model)
    for index, layer in enumerate(layers):
        builder.add(index, layer, layers[index + 1] if index + 1 < len(layers) else None)
    return builder.graph(steps, input_levels)


class _Builder:
    """Walks the layers, keeping the shape after each (without the batch) and the NIR nodes so far."""

    def __init__(self, input_shape: tuple[int, ...], dt: float):
        self.dt = dt
        self.shape = input_shape
        self.nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
        self.edges: list[tuple[str, str]] = []
        self.previous = "input"
        self.spiking_input = False  # whether what flows now is binary spikes (for max-pooling)
        self.resets: dict[str, tuple[str, bool]] = {}
        self.folded: set[int] = set()

    def add(self, index: int, layer: nn.Module, following: nn.Module | None):
        name = str(index)
        if index in self.folded or isinstance(layer, IGNORED):
            return
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            weight, bias = layer.weight.detach().double(), _bias(layer)
            if isinstance(following, (nn.BatchNorm1d, nn.BatchNorm2d)):
                weight, bias = fold_batchnorm(weight, bias, following, index + 1)
                self.folded.add(index + 1)
            self._linear(name, layer, weight, bias)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            raise UserError(f"layer {index} ({type(layer).__name__}) cannot be exported: BatchNorm is folded into "
                            "the Linear or Conv2d right before it, and there is none")
        elif isinstance(layer, nn.AvgPool2d):
            if layer.ceil_mode or layer.divisor_override is not None or \
                    (any(pair(layer.padding)) and layer.count_include_pad is False):
                raise UserError(f"layer {index} (AvgPool2d) uses ceil_mode, divisor_override or count_include_pad="
                                "False, which NIR's AvgPool2d cannot state")
            self._pool(name, nir.AvgPool2d, layer)
            self.spiking_input = False
        elif isinstance(layer, nn.MaxPool2d):
            self._max_pool(index, layer)
        elif isinstance(layer, nn.Flatten):
            start, end = (dim % (len(self.shape) + 1) for dim in (layer.start_dim, layer.end_dim))
            if start == 0:
                raise UserError(f"layer {index} (Flatten) flattens the batch dimension (start_dim={layer.start_dim})")
            shape = tuple(self._probe(layer))
            self._append(name, nir.Flatten(input_type={"input": np.array(self.shape)}, start_dim=start - 1,
                                           end_dim=end - 1))
            self.shape = shape
        elif isinstance(layer, NEURONS):
            self._neurons(index, layer)
        else:
            raise UserError(f"layer {index} ({type(layer).__name__}) cannot be exported to NIR; supported: "
                            f"{SUPPORTED}")

    def graph(self, steps, input_levels) -> nir.NIRGraph:
        self.nodes["output"] = nir.Output(output_type={"output": np.array(self.shape)})
        self.edges.append((self.previous, "output"))
        if not self.resets:
            raise UserError("the model has no snnTorch neuron layer (Leaky, Synaptic, RLeaky, RSynaptic) to export")
        if not isinstance(self.nodes[self.previous], (nir.LIF, nir.CubaLIF, nir.IF)):
            raise UserError(f"the model ends in layer {self.previous} ({type(self.nodes[self.previous]).__name__}); "
                            "it must end in a neuron layer, whose spikes are the output")
        kinds = set(self.resets.values())
        if len(kinds) > 1:
            raise UserError("the neuron layers reset differently (" + ", ".join(
                f"layer {k}: {m}, reset_delay={d}" for k, (m, d) in self.resets.items()) + "); one graph has one "
                "reset rule: give every layer the same reset_mechanism and reset_delay")
        (reset, delay), = kinds
        metadata = {"dt": self.dt, "reset": reset, "reset_delay": delay, "source_framework": "snntorch",
                    "producer": "snn-compile frontends.snntorch_export"}
        metadata.update({k: v for k, v in (("steps", steps), ("input_levels", input_levels)) if v is not None})
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)

    # -- layers -------------------------------------------------------------------------------

    def _append(self, name: str, node: nir.NIRNode):
        self.nodes[name] = node
        self.edges.append((self.previous, name))
        self.previous = name

    def _linear(self, name, layer, weight, bias):
        if isinstance(layer, nn.Linear):
            node = nir.Affine(weight=_numpy(weight), bias=_numpy(bias)) if layer.bias is not None or bias.any() \
                else nir.Linear(weight=_numpy(weight))
        else:
            if layer.padding_mode != "zeros":
                raise UserError(f"layer {name} (Conv2d) pads with {layer.padding_mode!r}; NIR pads with zeros")
            if len(self.shape) != 3:
                raise UserError(f"layer {name} (Conv2d) gets inputs of shape {self.shape}, not (C, H, W)")
            node = nir.Conv2d(input_shape=self.shape[1:], weight=_numpy(weight), stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=_numpy(bias))
        shape = tuple(self._probe(layer))
        self._append(name, node)
        self.shape, self.spiking_input = shape, False

    def _pool(self, name, kind, layer):
        size = pair(layer.kernel_size)
        stride = pair(layer.stride if layer.stride is not None else layer.kernel_size)
        shape = tuple(self._probe(layer))
        self._append(name, kind(kernel_size=np.array(size), stride=np.array(stride),
                                padding=np.array(pair(layer.padding))))
        self.shape = shape

    def _max_pool(self, index, layer):
        if not self.spiking_input:
            raise UserError(f"layer {index} (MaxPool2d) pools what is not binary spikes; only max-pooling after a "
                            "neuron layer is exportable (as a sum pool and a threshold): move it after one, or use "
                            "AvgPool2d")
        if layer.ceil_mode or any(d != 1 for d in pair(layer.dilation)) or any(pair(layer.padding)):
            raise UserError(f"layer {index} (MaxPool2d) uses padding, dilation or ceil_mode; export takes plain "
                            "max-pooling")
        self._pool(str(index), nir.SumPool2d, layer)
        tau = np.full(self.shape, self.dt)  # float64, so that 1 - dt / tau is exactly 0: no memory
        self._append(f"{index}_any", nir.LIF(tau=tau, r=np.ones(self.shape), v_leak=np.zeros(self.shape),
                                             v_threshold=np.full(self.shape, MAX_POOL_THRESHOLD),
                                             v_reset=np.zeros(self.shape)))
        self.spiking_input = True

    def _neurons(self, index, layer):
        name, shape = str(index), self.shape
        unsupported = [what for what, bad in (
            ("graded_spikes_factor != 1", float(torch.as_tensor(layer.graded_spikes_factor).max()) != 1.0),
            ("inhibition", layer.inhibition), ("state_quant", bool(layer.state_quant)),
            ("reset_mechanism='none'", layer.reset_mechanism == "none")) if bad]
        if unsupported:
            raise UserError(f"layer {index} ({type(layer).__name__}) uses {', '.join(unsupported)}, which NIR "
                            "cannot state")
        beta = _per_neuron(layer.beta.clamp(0, 1), shape, index, "beta")
        threshold = _per_neuron(layer.threshold, shape, index, "threshold")
        synaptic = isinstance(layer, (snn.Synaptic, snn.RSynaptic))
        if synaptic:
            alpha = _per_neuron(layer.alpha.clamp(0, 1), shape, index, "alpha")
            if np.any(beta >= 1) or np.any(alpha >= 1):
                raise UserError(f"layer {index} ({type(layer).__name__}): alpha or beta of 1 (no decay) has no "
                                "CubaLIF form in NIR")
            tau_syn, tau_mem = self.dt / (1 - alpha), self.dt / (1 - beta)
            node = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / self.dt, v_leak=np.zeros(shape),
                               v_threshold=threshold, v_reset=np.zeros(shape), w_in=tau_syn / self.dt)
        elif np.all(beta >= 1):
            node = nir.IF(r=np.ones(shape), v_threshold=threshold, v_reset=np.zeros(shape))
        elif np.any(beta >= 1):
            raise UserError(f"layer {index} ({type(layer).__name__}): some neurons have beta = 1 (no leak) and "
                            "others not; NIR has no node for both: use beta < 1 everywhere or 1 everywhere")
        else:
            tau = self.dt / (1 - beta)
            node = nir.LIF(tau=tau, r=tau / self.dt, v_leak=np.zeros(shape), v_threshold=threshold,
                           v_reset=np.zeros(shape))
        self._append(name, node)
        if isinstance(layer, (snn.RLeaky, snn.RSynaptic)):
            self._recurrent(index, layer)
        self.resets[name] = (layer.reset_mechanism, bool(layer.reset_delay))
        self.spiking_input = True

    def _recurrent(self, index, layer):
        """snnTorch adds recurrent(spikes of the previous step) to the layer's input: a NIR edge back."""
        size = int(np.prod(self.shape))
        if layer.all_to_all:
            if not isinstance(layer.recurrent, nn.Linear) or len(self.shape) != 1:
                raise UserError(f"layer {index} ({type(layer).__name__}): only a Linear recurrence on a flat layer "
                                "is exportable (a convolutional one is not)")
            weight, bias = layer.recurrent.weight.detach().double(), _bias(layer.recurrent)
            node = nir.Affine(weight=_numpy(weight), bias=_numpy(bias))
        else:
            gains = np.broadcast_to(layer.recurrent.V.detach().double().numpy(), (size,))
            node = nir.Linear(weight=np.diag(gains))
        name = f"{index}_recurrent"
        self.nodes[name] = node
        self.edges += [(str(index), name), (name, str(index))]

    def _probe(self, layer) -> torch.Size:
        """The output shape of a stateless layer, from a zero input of the current shape."""
        dtype = next((p.dtype for p in layer.parameters()), torch.float32)
        try:
            with torch.no_grad():
                return layer(torch.zeros((1,) + self.shape, dtype=dtype)).shape[1:]
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"layer after {self.previous} ({type(layer).__name__}) does not take inputs of shape "
                            f"{self.shape}: {first}") from None


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor, norm: nn.Module, index: int):
    """Inference-time BatchNorm is a per-channel affine map: fold it into the layer before."""
    if not norm.track_running_stats or norm.running_var is None:
        raise UserError(f"layer {index} ({type(norm).__name__}) keeps no running statistics, so it has no "
                        "inference-time form to fold")
    scale = torch.ones_like(norm.running_var, dtype=torch.float64) if norm.weight is None else norm.weight.double()
    shift = torch.zeros_like(scale) if norm.bias is None else norm.bias.double()
    scale = scale.detach() / torch.sqrt(norm.running_var.double() + norm.eps)
    return (weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1)),
            (bias - norm.running_mean.double()) * scale + shift.detach())


def _bias(layer) -> torch.Tensor:
    if layer.bias is None:
        return torch.zeros(layer.weight.shape[0], dtype=torch.float64)
    return layer.bias.detach().double()


def _per_neuron(value, shape, index, what) -> np.ndarray:
    array = torch.as_tensor(value).detach().double().numpy()
    try:
        return np.broadcast_to(array, shape).copy()
    except ValueError:
        raise UserError(f"layer {index}: {what} of shape {array.shape} does not fit the layer's shape {shape}") \
            from None


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32)

