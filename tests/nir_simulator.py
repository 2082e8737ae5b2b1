"""An independent NIR simulator, written from the node equations in the nir package's docstrings.

numpy only and no project imports, so it shares no code (and no mistakes)
with ``toolchain.nir_import`` or ``targets.reference``. Forward Euler with
step ``dt``; within a step a neuron's current is updated before its
membrane (snnTorch, Norse and Lava do the same). Nodes run in order of
their distance from the Input; an edge back to a node that already ran this
step (recurrence) delivers the previous step's value, and before the first
step every neuron's output is 0 (so a recurrent Affine's bias acts from the
first step, as in snnTorch). Spikes: ``v >
v_threshold``, then ``v <- v_reset``.

IF (``dv/dt = R I``) is stepped as ``v <- v + R I`` (``if_discretisation=
"discrete"``, what Norse and Sinabs write and run) or literally as ``v <- v
+ dt R I`` (``"euler"``).
"""

from __future__ import annotations

import nir
import numpy as np

NEURONS = (nir.IF, nir.LIF, nir.CubaLIF, nir.LI)


def flatten_graph(graph: nir.NIRGraph, prefix: str = "") -> tuple[dict, list]:
    """Nodes and edges with nested graphs spliced in; their Input/Output become pass-through nodes."""
    nodes, edges = {}, []
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = flatten_graph(node, f"{prefix}{name}.")
            nodes.update(inner_nodes)
            edges += inner_edges
        else:
            nodes[prefix + name] = node

    def endpoint(name, role):
        node = graph.nodes[name]
        if not isinstance(node, nir.NIRGraph):
            return prefix + name
        kind = nir.Input if role == "in" else nir.Output
        return f"{prefix}{name}." + next(n for n, m in node.nodes.items() if isinstance(m, kind))
    edges += [(endpoint(a, "out"), endpoint(b, "in")) for a, b in graph.edges]
    return nodes, edges


def simulate(graph: nir.NIRGraph, x: np.ndarray, dt: float, if_discretisation: str = "discrete",
             margins: dict | None = None) -> dict:
    """``x``: (samples, steps, *input shape). Returns every node's output, (samples, steps, ...).
    ``margins``, if given, receives per spiking node the smallest |v - v_threshold| before a reset:
    how close float rounding came to changing a spike."""
    nodes, edges = flatten_graph(graph)
    start = next(n for n, node in nodes.items() if isinstance(node, nir.Input) and
                 not any(b == n for _, b in edges))
    distance, frontier = {start: 0}, [start]
    while frontier:
        frontier = [b for a, b in edges if a in frontier and b not in distance]
        distance.update({b: max(distance.values()) + 1 for b in frontier})
    order = sorted(distance, key=lambda n: (distance[n], n))
    state, out, history = {}, {}, {n: [] for n in order}
    for t in range(-1, x.shape[1]):  # step -1: every neuron is silent, linear nodes pass that on
        for name in order:
            incoming = [out[a] for a, b in edges if b == name and a in out]
            value = x[:, max(t, 0)] * (t >= 0) if name == start else sum(incoming[1:], incoming[0])
            out[name] = _step(nodes[name], value, state, name, dt, if_discretisation, margins) \
                if t >= 0 or not isinstance(nodes[name], NEURONS) else np.zeros_like(value)
            if t >= 0:
                history[name].append(out[name])
    return {n: np.stack(h, axis=1) for n, h in history.items()}


def _step(node, x, state, name, dt, if_discretisation, margins):
    p = {k: np.asarray(v, dtype=np.float64) for k, v in vars(node).items() if not isinstance(v, (dict, str))
         and v is not None and k not in ("input_type", "output_type", "metadata")}
    if isinstance(node, (nir.Input, nir.Output)):
        return x
    if isinstance(node, nir.Affine):
        return x.reshape(len(x), -1) @ p["weight"].T + p["bias"]
    if isinstance(node, nir.Linear):
        return x.reshape(len(x), -1) @ p["weight"].T
    if isinstance(node, nir.Scale):
        return x * p["scale"]
    if isinstance(node, nir.Flatten):
        end = node.end_dim % (x.ndim - 1) + 2
        return x.reshape(x.shape[:node.start_dim + 1] + (-1,) + x.shape[end:])
    if isinstance(node, nir.Conv2d):
        return _conv(x, p["weight"], p["bias"], node.stride, node.padding, node.dilation, node.groups)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        size = tuple(np.broadcast_to(p["kernel_size"], 2).astype(int))
        channels = x.shape[1]
        kernel = np.zeros((channels, 1) + size) + (1 / np.prod(size) if isinstance(node, nir.AvgPool2d) else 1)
        return _conv(x, kernel, np.zeros(channels), p.get("stride", size), p.get("padding", 0), 1, channels)
    v = state.setdefault(name, {"v": np.zeros_like(x), "i": np.zeros_like(x)})
    if isinstance(node, nir.IF):
        v["v"] = v["v"] + (1 if if_discretisation == "discrete" else dt) * p["r"] * x
    elif isinstance(node, (nir.LIF, nir.LI)):
        v["v"] = v["v"] + dt / p["tau"] * (p["v_leak"] - v["v"] + p["r"] * x)
    elif isinstance(node, nir.CubaLIF):
        v["i"] = v["i"] + dt / p["tau_syn"] * (-v["i"] + p["w_in"] * x)
        v["v"] = v["v"] + dt / p["tau_mem"] * (p["v_leak"] - v["v"] + p["r"] * v["i"])
    else:
        raise TypeError(f"node {name!r}: {type(node).__name__} is not simulated")
    if isinstance(node, nir.LI):
        return v["v"]
    spikes = v["v"] > p["v_threshold"]
    if margins is not None:
        margins[name] = min(margins.get(name, np.inf), float(np.min(np.abs(v["v"] - p["v_threshold"]))))
    v["v"] = np.where(spikes, p.get("v_reset", 0.0), v["v"])
    return spikes.astype(np.float64)


def _conv(x, weight, bias, stride, padding, dilation, groups):
    """Cross-correlation of (samples, C, H, W) as NIR's Conv2d defines it (torch's convention)."""
    stride, dilation = (tuple(np.broadcast_to(np.asarray(a, dtype=int), 2)) for a in (stride, dilation))
    kh, kw = weight.shape[2:]
    if isinstance(padding, str):
        padding = (0, 0) if padding == "valid" else (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    ph, pw = np.broadcast_to(np.asarray(padding, dtype=int), 2)
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    h = (x.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w = (x.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    per_group_in, per_group_out = x.shape[1] // groups, weight.shape[0] // groups
    out = np.zeros((len(x), weight.shape[0], h, w)) + bias.reshape(1, -1, 1, 1)
    for g in range(groups):
        xs = x[:, g * per_group_in:(g + 1) * per_group_in]
        ws = weight[g * per_group_out:(g + 1) * per_group_out]
        for u in range(kh):
            for s in range(kw):
                patch = xs[:, :, u * dilation[0]:u * dilation[0] + stride[0] * (h - 1) + 1:stride[0],
                           s * dilation[1]:s * dilation[1] + stride[1] * (w - 1) + 1:stride[1]]
                out[:, g * per_group_out:(g + 1) * per_group_out] += np.einsum("nchw,oc->nohw", patch, ws[:, :, u, s])
    return out
