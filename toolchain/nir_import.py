"""NIR graph -> internal ``Graph``: discretise neurons, fuse linear chains.

Neuron nodes (IF, LIF, CubaLIF, LI) become populations; every path of linear
nodes between two neuron nodes (or from the input) becomes one connection.
Chains of Conv2d / SumPool2d / AvgPool2d compose exactly into one
convolution (pooling after a convolution is a larger, strided kernel), which
is how a chip without pooling units runs them. Chains containing Flatten,
Affine, Linear or Scale become one dense matrix.

Continuous-time equations are discretised by forward Euler with step dt
(the convention of snnTorch, Lava's NIR importer and SpiNNaker2):
``v <- v + dt/tau (v_leak - v + R I)`` gives decay ``1 - dt/tau`` and input
gain ``R dt / tau``. IF follows the discrete convention ``v <- v + R I``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch
import torch.nn.functional as F

from toolchain.errors import UserError
from toolchain.ir import INPUT, Connection, Graph, Population, conv_output_shape

NEURON_NODES = (nir.IF, nir.LIF, nir.CubaLIF, nir.LI)
LINEAR_NODES = (nir.Affine, nir.Linear, nir.Scale, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d, nir.Flatten)
SPATIAL_NODES = (nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)
DEFAULT_DT = 1e-4  # snnTorch's export convention


@dataclass
class ImportOptions:
    """What a NIR file may not say: the caller's fallbacks."""

    steps: int | None = None
    dt: float | None = None
    input_shape: tuple[int, ...] | None = None
    input_levels: int | None = None
    reset: str | None = None


def read_nir_file(path: str | Path) -> nir.NIRGraph:
    try:
        return nir.read(str(path))
    except Exception as exc:  # nir raises KeyError/OSError/ValueError for foreign HDF5
        raise UserError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {exc}); "
                        "export it with nir.write() or snnTorch's export_to_nir") from None


def graph_from_nir(nir_graph: nir.NIRGraph, options: ImportOptions | None = None) -> Graph:
    """Build the internal graph; ``metadata`` records where dt and steps came from."""
    options = options or ImportOptions()
    meta = {str(k): _plain(v) for k, v in (nir_graph.metadata or {}).items()}
    dt, dt_source = _pick(meta.get("dt"), options.dt, DEFAULT_DT, "dt")
    steps, steps_source = _pick(meta.get("steps"), options.steps, None, "steps")
    if steps is None:
        raise UserError("the NIR graph does not say how many time steps to run; pass --steps N")
    reset, reset_source = _pick(meta.get("reset"), options.reset, "zero", "reset")
    levels, _ = _pick(meta.get("input_levels"), options.input_levels, 255, "input_levels")

    nodes, edges = nir_graph.nodes, [tuple(e) for e in nir_graph.edges]
    for name, node in nodes.items():
        if not isinstance(node, (nir.Input, nir.Output) + NEURON_NODES + LINEAR_NODES):
            raise UserError(f"NIR node {name!r} of type {type(node).__name__} is not supported; "
                            "supported: Input, Output, Affine, Linear, Scale, Conv2d, SumPool2d, "
                            "AvgPool2d, Flatten, IF, LIF, CubaLIF, LI")
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise UserError(f"the NIR graph has {len(inputs)} Input nodes; exactly one is supported")
    input_shape = _input_shape(nodes[inputs[0]], options.input_shape)

    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in edges:
        successors[src].append(dst)

    paths = []  # (source node, [linear nodes], destination node)
    for start in [inputs[0]] + [n for n, node in nodes.items() if isinstance(node, NEURON_NODES)]:
        stack = [(start, [])]
        while stack:
            here, chain = stack.pop()
            for nxt in successors[here]:
                if isinstance(nodes[nxt], LINEAR_NODES):
                    if nxt in chain:
                        raise UserError(f"the NIR graph has a loop through linear node {nxt!r} only")
                    stack.append((nxt, chain + [nxt]))
                else:
                    paths.append((start, chain, nxt))

    outputs = [(s, c) for s, c, d in paths if isinstance(nodes[d], nir.Output)]
    if len(outputs) != 1 or outputs[0][1] or outputs[0][0] == inputs[0]:
        raise UserError("the NIR graph's Output must be fed directly by exactly one neuron node "
                        "(IF, LIF, CubaLIF or LI)")
    output_node = outputs[0][0]

    order = _feed_forward_order(inputs[0], paths, nodes)
    shapes = {inputs[0]: input_shape}
    populations, connections = [], []
    for name in order:
        incoming = [(s, c) for s, c, d in paths if d == name]
        incoming.sort(key=lambda path: path[0] == name)  # feed-forward first: it fixes the shape
        if not incoming or incoming[0][0] == name:
            raise UserError(f"neuron node {name!r} has no feed-forward input")
        built = []
        for src, chain in incoming:
            built.append(_compose_chain(src, chain, nodes, shapes.get(src, built[0][2] if built else None), name))
        out_shapes = {tuple(b[2]) for b in built}
        if len(out_shapes) != 1:
            raise UserError(f"inputs to neuron node {name!r} have different shapes {sorted(out_shapes)}")
        shapes[name] = built[0][2]
        pop, gain = _population(name, nodes[name], shapes[name], dt, reset)
        for src, weight, _shape, bias, conv in built:
            pop.bias = pop.bias + gain * bias
            source_name = INPUT if src == inputs[0] else src
            connections.append(_scaled_connection(source_name, name, weight, conv, gain, shapes[name]))
        populations.append(pop)

    meta.update({"dt": dt, "dt_source": dt_source, "steps": steps, "steps_source": steps_source,
                 "reset": reset, "reset_source": reset_source})
    try:
        return Graph(input_shape=input_shape, populations=populations, connections=connections,
                     output=output_node, steps=int(steps), dt=float(dt), input_levels=int(levels),
                     metadata=meta)
    except ValueError as exc:
        raise UserError(f"the NIR graph is not consistent: {exc}") from None


def _pick(from_graph, from_option, default, what):
    """Graph metadata wins over options, options over the default; say which was used."""
    if from_graph is not None:
        return from_graph, "graph metadata"
    if from_option is not None:
        return from_option, "option"
    return default, "default"


def _plain(value):
    """NIR files hand metadata back as numpy scalars, arrays or bytes: make it plain Python."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    value = np.asarray(value)
    if value.dtype.kind == "S":
        return value.astype(str).tolist()
    return value.item() if value.size == 1 else value.tolist()


def _input_shape(node: nir.Input, override) -> tuple[int, ...]:
    if override:
        return tuple(int(d) for d in override)
    shape = np.asarray(node.input_type.get("input", []))
    if shape.size == 0 or np.any(shape <= 0):
        raise UserError("the NIR graph's Input has no shape; pass --input-shape, e.g. 1,28,28")
    return tuple(int(d) for d in shape)


def _feed_forward_order(input_name, paths, nodes) -> list[str]:
    """Neuron nodes sorted so that every non-recurrent path goes forward."""
    deps = {n: set() for n, node in nodes.items() if isinstance(node, NEURON_NODES)}
    for src, _, dst in paths:
        if dst in deps and src != dst and src != input_name:
            deps[dst].add(src)
    order, done = [], set()
    while len(order) < len(deps):
        ready = sorted(n for n in deps if n not in done and deps[n] <= done)
        if not ready:
            raise UserError("the NIR graph has a cycle between different neuron layers; "
                            "only a layer feeding back into itself is supported")
        order.extend(ready)
        done.update(ready)
    return order


def _population(name, node, shape, dt, reset) -> tuple[Population, np.ndarray]:
    """Discretise one neuron node; returns the population and its input gain per neuron."""
    def per_neuron(value):
        arr = np.asarray(value, dtype=np.float64)
        try:
            return np.broadcast_to(arr, shape).reshape(-1).copy()
        except ValueError:
            raise UserError(f"neuron node {name!r}: parameter of shape {arr.shape} does not fit "
                            f"the layer shape {shape}") from None

    v_reset = getattr(node, "v_reset", None)
    if v_reset is not None and np.any(per_neuron(v_reset) != 0):
        raise UserError(f"neuron node {name!r}: Loihi resets the membrane to 0; v_reset != 0 "
                        "cannot be represented")
    alpha = np.zeros(int(np.prod(shape)))
    if isinstance(node, nir.IF):
        beta, gain, bias = np.ones_like(alpha), per_neuron(node.r), np.zeros_like(alpha)
        model = "IF"
    else:
        tau = per_neuron(node.tau_mem if isinstance(node, nir.CubaLIF) else node.tau)
        if np.any(tau < dt):
            raise UserError(f"neuron node {name!r}: time constant {tau.min():g} is shorter than "
                            f"the step dt={dt:g}; forward Euler would be unstable")
        beta = 1.0 - dt / tau
        gain = per_neuron(node.r) * dt / tau
        bias = per_neuron(node.v_leak) * dt / tau
        model = type(node).__name__
        if isinstance(node, nir.CubaLIF):
            tau_syn = per_neuron(node.tau_syn)
            if np.any(tau_syn < dt):
                raise UserError(f"neuron node {name!r}: tau_syn shorter than dt={dt:g}")
            alpha = 1.0 - dt / tau_syn
            gain = gain * per_neuron(node.w_in) * dt / tau_syn
    spiking = not isinstance(node, nir.LI)
    threshold = per_neuron(node.v_threshold) if spiking else np.ones_like(alpha)
    try:
        pop = Population(name=name, shape=shape, alpha=alpha, beta=beta, threshold=threshold,
                         bias=bias, spiking=spiking, reset=reset, model=model)
    except ValueError as exc:
        raise UserError(f"neuron node {name!r}: {exc}") from None
    return pop, gain


def _scaled_connection(source, target, weight, conv, gain, target_shape) -> Connection:
    """Fold the target's per-neuron input gain into the connection weights."""
    if conv is None:
        return Connection(source, target, gain[:, None] * weight)
    per_channel = gain.reshape(target_shape)
    channel_gain = per_channel.reshape(target_shape[0], -1)
    if np.any(channel_gain != channel_gain[:, :1]):
        raise UserError(f"neuron node {target!r}: input gain (R, tau) varies within a channel "
                        "after a convolution; it must be constant per channel")
    stride, padding = conv
    return Connection(source, target, channel_gain[:, 0, None, None, None] * weight,
                      kind="conv", stride=stride, padding=padding)


# -- linear chains -----------------------------------------------------------

def _compose_chain(src, chain, nodes, in_shape, dst):
    """One path of linear nodes -> (source, weight, out shape, bias per out neuron, conv params)."""
    if not chain:
        raise UserError(f"neuron node {dst!r} is fed by {src!r} without a weighted connection")
    spatial = all(isinstance(nodes[n], SPATIAL_NODES) for n in chain)
    if spatial and len(in_shape) == 3:
        kernel, bias, stride, padding = None, None, (1, 1), (0, 0)
        shape = in_shape
        for name in chain:
            op = _spatial_op(name, nodes[name], shape)
            if kernel is None:
                kernel, bias, stride, padding = op
            else:
                kernel, bias, stride, padding = _compose_spatial((kernel, bias, stride, padding), op, name, in_shape)
            shape = conv_output_shape(in_shape, kernel.shape, stride, padding)
        out_shape = conv_output_shape(in_shape, kernel.shape, stride, padding)
        full_bias = np.repeat(bias, out_shape[1] * out_shape[2])
        return src, kernel, out_shape, full_bias, (stride, padding)
    return _dense_chain(src, chain, nodes, in_shape, dst)


def _spatial_op(name, node, shape):
    """A Conv2d or pooling node as (kernel, bias, stride, padding)."""
    channels = shape[0]
    if isinstance(node, nir.Conv2d):
        if np.any(np.asarray(node.dilation) != 1) or int(node.groups) != 1:
            raise UserError(f"Conv2d {name!r}: dilation and groups other than 1 are not supported")
        kernel = np.asarray(node.weight, dtype=np.float64)
        if kernel.shape[1] != channels:
            raise UserError(f"Conv2d {name!r}: kernel expects {kernel.shape[1]} input channels, gets {channels}")
        padding = node.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            elif padding == "same" and np.all(np.asarray(kernel.shape[2:]) % 2 == 1):
                padding = tuple(int(k) // 2 for k in kernel.shape[2:])
            else:
                raise UserError(f"Conv2d {name!r}: padding {padding!r} is not supported")
        bias = np.broadcast_to(np.asarray(node.bias, dtype=np.float64), (kernel.shape[0],)).copy()
        return kernel, bias, _pair(node.stride), _pair(padding)
    size = _pair(node.kernel_size)
    stride = _pair(node.stride if node.stride is not None else size)
    padding = _pair(node.padding if node.padding is not None else 0)
    value = 1.0 / (size[0] * size[1]) if isinstance(node, nir.AvgPool2d) else 1.0
    kernel = np.zeros((channels, channels) + size)
    kernel[np.arange(channels), np.arange(channels)] = value
    return kernel, np.zeros(channels), stride, padding


def _compose_spatial(first, second, name, in_shape):
    """The single convolution equal to applying ``first`` then ``second``."""
    k1, b1, s1, p1 = first
    k2, b2, s2, p2 = second
    if any(p2):
        non_overlapping = tuple(k1.shape[2:]) == s1 and not any(p1) and \
            in_shape[1] % s1[0] == 0 and in_shape[2] % s1[1] == 0
        if not non_overlapping or np.any(b1 != 0):
            raise UserError(f"{name!r}: padding after another convolution or pooling cannot be "
                            "fused into one connection; put a neuron layer between them")
    kh = s1[0] * (k2.shape[2] - 1) + k1.shape[2]
    kw = s1[1] * (k2.shape[3] - 1) + k1.shape[3]
    kernel = np.zeros((k2.shape[0], k1.shape[1], kh, kw))
    for u in range(k2.shape[2]):
        for v in range(k2.shape[3]):
            kernel[:, :, s1[0] * u:s1[0] * u + k1.shape[2], s1[1] * v:s1[1] * v + k1.shape[3]] += \
                np.einsum("oc,cimn->oimn", k2[:, :, u, v], k1)
    bias = b2 + np.einsum("ocuv,c->o", k2, b1)
    return kernel, bias, (s1[0] * s2[0], s1[1] * s2[1]), (p1[0] + s1[0] * p2[0], p1[1] + s1[1] * p2[1])


def _pair(value) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(value)).astype(int)
    return (int(arr[0]), int(arr[-1]))


def _dense_chain(src, chain, nodes, in_shape, dst):
    """Push the identity through the chain to get its matrix and offset."""
    size = int(np.prod(in_shape))

    def apply(x):
        for name in chain:
            x = _apply_node(name, nodes[name], x)
        return x

    with torch.no_grad():
        offset = apply(torch.zeros((1,) + tuple(in_shape), dtype=torch.float64))
        columns = []
        for start in range(0, size, 2048):
            stop = min(size, start + 2048)
            basis = torch.zeros((stop - start, size), dtype=torch.float64)
            basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            columns.append((apply(basis.reshape((-1,) + tuple(in_shape))) - offset).reshape(stop - start, -1))
    weight = torch.cat(columns).T.numpy()
    out_shape = tuple(offset.shape[1:])
    return src, weight, out_shape, offset.reshape(-1).numpy(), None


def _apply_node(name, node, x):
    def tensor(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float64))
    if isinstance(node, nir.Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(node, (nir.Affine, nir.Linear)):
        x2 = x.reshape(x.shape[0], -1)
        weight = tensor(node.weight)
        if weight.shape[1] != x2.shape[1]:
            raise UserError(f"{type(node).__name__} {name!r}: weight expects {weight.shape[1]} inputs, "
                            f"gets {x2.shape[1]}")
        out = x2 @ weight.T
        return out + tensor(node.bias) if isinstance(node, nir.Affine) else out
    if isinstance(node, nir.Scale):
        return x * tensor(node.scale).reshape(x.shape[1:]) if np.size(node.scale) > 1 else x * float(np.asarray(node.scale).reshape(-1)[0])
    if x.dim() != 4:
        raise UserError(f"{type(node).__name__} {name!r} needs a (C, H, W) input, gets {tuple(x.shape[1:])}")
    kernel, bias, stride, padding = _spatial_op(name, node, tuple(x.shape[1:]))
    return F.conv2d(x, tensor(kernel), tensor(bias), stride=stride, padding=padding)
