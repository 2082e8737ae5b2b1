"""NIR graph -> internal ``Graph``: discretise neurons, fuse linear chains.

Neuron nodes (IF, LIF, CubaLIF, LI) become populations; every path of linear
nodes between two neuron nodes (or from the input) becomes one connection.
Chains of Conv2d / SumPool2d / AvgPool2d compose exactly into one
convolution (pooling after a convolution is a larger, strided kernel), which
is how a chip without pooling units runs them. Chains containing Flatten,
Affine, Linear or Scale become one dense matrix. Nested ``NIRGraph`` nodes
(snnTorch writes RLeaky/RSynaptic that way) are spliced into their parent
first.

Continuous-time equations are discretised by forward Euler with step dt
(the convention of snnTorch, Lava's NIR importer and SpiNNaker2):
``v <- v + dt/tau (v_leak - v + R I)`` gives decay ``1 - dt/tau`` and input
gain ``R dt / tau``. A CubaLIF's input, an Affine's bias included, enters
its current I (``tau_syn dI/dt = -I + w_in x``), so biases in front of a
CubaLIF become the population's ``current_bias``. IF follows the discrete
convention ``v <- v + R I`` of the frameworks that write it (NIR's
``dv/dt = R I`` read literally, ``v <- v + dt R I``, is the "nir" convention).

NIR states neither dt nor the reset rule; frameworks differ in both
(``CONVENTIONS``, docs/guides/nir_semantics.md). They come from, in order: the
graph's metadata (our exporters write them), the caller's options, the
convention of the framework the caller names or the metadata identifies,
and our own defaults. ``Graph.metadata["conventions"]`` records each value
with where it came from.
"""

from __future__ import annotations

import math
import numbers
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, NamedTuple

import nir
import numpy as np
import torch
import torch.nn.functional as F

from toolchain.errors import UserError
from toolchain.ir import INPUT, Connection, Graph, Population, conv_output_shape, pair
from toolchain.isolation import DEFAULT_TIMEOUT_SECONDS, call_isolated

NEURON_NODES = (nir.IF, nir.LIF, nir.CubaLIF, nir.LI)
LINEAR_NODES = (nir.Affine, nir.Linear, nir.Scale, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d, nir.Flatten)
SPATIAL_NODES = (nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)
DEFAULT_DT = 1e-4  # snnTorch's export convention
TAU_TOLERANCE = 1e-6
"""Relative slack when comparing a time constant with dt: float32 exports put tau = dt a hair below dt."""
READ_NOTES = "read_notes"
"""Attribute ``read_nir_file`` sets on the graph it returns: how the file had to be read."""


@dataclass(frozen=True)
class Convention:
    """What a framework assumes about a NIR graph that NIR does not store.

    ``dt``: the step its importer and exporter use (None: derived from the
    graph, as Rockpool's importer does). ``reset``: its neurons' default reset.
    ``if_discretisation``: "discrete" (``v <- v + R I`` per step) or "euler"
    (``v <- v + dt R I``). ``departures``: where the framework's own simulation
    differs from what we compute, reported as notes; ``subtract_departure``
    only when the graph is compiled with reset by subtraction. ``correct``:
    undoes a known exporter bug on the flattened nodes and returns its note.
    """

    dt: float | None
    reset: Literal["zero", "subtract"]
    if_discretisation: Literal["discrete", "euler"] = "discrete"
    departures: tuple[str, ...] = ()
    subtract_departure: str | None = None
    correct: Callable[[dict, float], str | None] | None = None


def _norse_exports(nodes: dict, dt: float) -> str | None:
    """Undo Norse 1.1.0's ``to_nir``: it writes every time constant as ``dt * tau`` and a LIFCell's
    ``w_in`` as 1 where the cell adds its input to the current unscaled (``tau_syn / dt`` in NIR's
    Euler step). Applied only to a graph that shows the symptom, every time constant below dt,
    so a fixed exporter is read as written. Rewrites ``nodes`` in place (copies of the nodes);
    returns the note for the report."""
    neurons = {n: node for n, node in nodes.items() if isinstance(node, (nir.LIF, nir.CubaLIF, nir.LI))}
    taus = [np.asarray(getattr(node, attr), dtype=np.float64) for node in neurons.values()
            for attr in ("tau", "tau_mem", "tau_syn") if hasattr(node, attr)]
    if not taus or not all(np.all(t < dt) for t in taus):
        return None
    for name, node in neurons.items():
        changes = {attr: np.asarray(getattr(node, attr)) / dt for attr in ("tau", "tau_mem", "tau_syn")
                   if hasattr(node, attr)}
        if isinstance(node, nir.CubaLIF) and np.all(np.asarray(node.w_in) == 1):
            changes["w_in"] = changes["tau_syn"] / dt
        nodes[name] = dataclasses.replace(node, **changes)
    return (f"Norse 1.1.0 writes time constants as dt x tau and a LIFCell's input gain as 1: time constants "
            f"divided by dt={dt:g} and CubaLIF w_in set to tau_syn/dt, which is what Norse computes")


OURS = "snn-compile"
CONVENTIONS = {
    OURS: Convention(DEFAULT_DT, "zero"),
    "snntorch": Convention(1e-4, "subtract", subtract_departure=(
        "snnTorch's subtract reset is not an immediate subtract: with reset_delay=True (its default) the "
        "threshold comes off one step late, after the decay, and with reset_delay=False a membrane still above "
        "threshold after a reset fires again only above twice the threshold; spike counts differ there")),
    "norse": Convention(1e-3, "zero", correct=_norse_exports),
    "sinabs": Convention(1.0, "subtract", departures=(
        "Sinabs decays by exp(-dt/tau), fires on v >= threshold and emits several spikes per step "
        "(MultiSpike); compiled with forward Euler and one spike per step (v > threshold)",
        "Sinabs time constants count steps, so dt is 1 step; costs that need time in seconds read it as 1 s")),
    "rockpool": Convention(None, "subtract", departures=(
        "Rockpool decays by exp(-dt/tau) and emits several spikes per step; compiled with forward "
        "Euler and one spike per step",)),
    "lava-dl": Convention(1e-4, "zero"),
    "spinnaker2": Convention(1e-4, "zero"),
    "nir": Convention(DEFAULT_DT, "zero", if_discretisation="euler"),
}
FRAMEWORK_ALIASES = {"slayer": "lava-dl", "lava_dl": "lava-dl", "lavadl": "lava-dl", "snn_compile": OURS,
                     "spinnaker": "spinnaker2", "s2": "spinnaker2"}
METADATA_FRAMEWORK_KEYS = ("framework", "source_framework", "producer", "exporter")
DETECTABLE = ("snn-compile", "spinnaker2", "snntorch", "rockpool", "lava-dl", "slayer", "sinabs", "norse")
"""Names looked for in those metadata entries ("nir" and short aliases would match too much)."""


@dataclass
class ImportOptions:
    """What a NIR file may not say: the caller's fallbacks. ``reset`` overrides
    the file; ``framework`` names where the file comes from (its conventions
    fill in dt and the reset rule)."""

    steps: int | None = None
    dt: float | None = None
    input_shape: tuple[int, ...] | None = None
    input_levels: int | None = None
    reset: str | None = None
    framework: str | None = None

    def __post_init__(self):
        if self.dt is not None and not (isinstance(self.dt, numbers.Real) and math.isfinite(self.dt)
                                        and self.dt > 0):
            raise UserError(f"--dt {self.dt} is not a time step: give a finite number of seconds above 0")
        for name in ("steps", "input_levels"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, numbers.Integral) and value >= 1):
                raise UserError(f"--{name.replace('_', '-')} {value} must be an integer of at least 1")
        if self.reset is not None and self.reset not in ("zero", "subtract"):
            raise UserError(f"--reset {self.reset!r} is unknown; use zero or subtract")
        if self.framework is not None:
            self.framework = framework_name(self.framework)


def framework_name(name: str) -> str:
    """The canonical name of a framework whose NIR conventions are known."""
    key = str(name).strip().lower()
    key = FRAMEWORK_ALIASES.get(key, key)
    if key not in CONVENTIONS:
        raise UserError(f"--framework {name!r} is unknown; use one of: {', '.join(CONVENTIONS)}")
    return key


def read_nir_file(path: str | Path, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> nir.NIRGraph:
    """Read a NIR file in an isolated child process (a malformed HDF5 file cannot crash us), given
    ``timeout`` seconds (libhdf5 loops forever on some damaged files).

    NIR's type check rejects valid files (every Rockpool export, scalar
    parameters, loosely written Output types); such a file is read again
    without it and the graph carries a note saying so (attribute ``READ_NOTES``).
    """
    path = Path(path)
    graph, notes = call_isolated(_read_graph, str(path), what=str(path), timeout=timeout)
    setattr(graph, READ_NOTES, notes)
    return graph


def _read_graph(path: str) -> tuple[nir.NIRGraph, list[str]]:
    try:
        return nir.read(path), []
    except Exception as exc:  # nir raises KeyError/OSError/ValueError/AssertionError for what it rejects
        rejection = f"{type(exc).__name__}: {_first_line(exc)}"
    try:
        graph = nir.read(path, type_check=False)
    except Exception as exc:
        raise UserError(f"{path}: not a readable NIR graph ({type(exc).__name__}: {_first_line(exc)}); "
                        "export it with your framework's NIR exporter (it writes with nir.write)") from None
    return graph, [f"NIR's type check rejected the file ({rejection}); read it without the check (type_check=False)"]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "no message"


class LinearPath(NamedTuple):
    """A chain of linear NIR nodes from a source (the input or a neuron node) to a destination."""

    source: str
    chain: list[str]
    target: str


@dataclass(frozen=True)
class RunConventions:
    """How the graph is run, each value with where it came from (graph metadata, option, the
    framework's convention, or the default)."""

    framework: tuple[str, str]
    dt: tuple[float, str]
    steps: tuple[int, str]
    reset: tuple[str, str]
    input_levels: int
    convention: Convention
    named: bool

    def metadata(self) -> dict:
        source = f"{self.framework[0]} convention" if self.named else "default"
        return {"dt": self.dt[0], "dt_source": self.dt[1], "steps": self.steps[0], "steps_source": self.steps[1],
                "reset": self.reset[0], "reset_source": self.reset[1], "framework": self.framework[0],
                "conventions": {"framework": self.framework, "dt": self.dt, "reset": self.reset,
                                "if_discretisation": (self.convention.if_discretisation, source)}}


def graph_from_nir(nir_graph: nir.NIRGraph, options: ImportOptions | None = None) -> Graph:
    """Build the internal graph; ``metadata`` records dt, steps and the reset rule and where each
    came from (``"conventions"``: name -> (value, source)), plus ``"notes"`` for the report."""
    options = options or ImportOptions()
    meta = {str(k): _plain(v) for k, v in (nir_graph.metadata or {}).items()}
    notes = list(getattr(nir_graph, READ_NOTES, ()))
    nodes, edges = flatten_subgraphs(nir_graph.nodes, nir_graph.edges)
    dangling = next(((edge, name) for edge in edges for name in edge if name not in nodes), None)
    if dangling is not None:
        (src, dst), name = dangling
        raise UserError(f"the NIR graph's edge {src!r} -> {dst!r} names node {name!r}, which the graph does not have")
    run = _run_conventions(meta, nodes, options)
    correction = run.convention.correct and run.convention.correct(nodes, run.dt[0])
    notes.extend(run.convention.departures + ((correction,) if correction else ()))
    if run.reset[0] == "subtract" and run.convention.subtract_departure:
        notes.append(run.convention.subtract_departure)

    for name, node in nodes.items():
        if not isinstance(node, (nir.Input, nir.Output) + NEURON_NODES + LINEAR_NODES):
            raise UserError(f"NIR node {name!r} of type {type(node).__name__} is not supported; "
                            "supported: Input, Output, Affine, Linear, Scale, Conv2d, SumPool2d, "
                            "AvgPool2d, Flatten, IF, LIF, CubaLIF, LI and nested NIRGraph")
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise UserError(f"the NIR graph has {len(inputs)} Input nodes; exactly one is supported")
    input_shape = _input_shape(nodes[inputs[0]], options.input_shape)
    paths = _linear_paths(nodes, edges, inputs[0])
    output_node = _output_node(paths, nodes, inputs[0])
    populations, connections = _populations(paths, nodes, inputs[0], input_shape, run)
    meta.update({**run.metadata(), "notes": notes})
    try:
        return Graph(input_shape=input_shape, populations=populations, connections=connections,
                     output=output_node, steps=int(run.steps[0]), dt=float(run.dt[0]),
                     input_levels=int(run.input_levels), metadata=meta)
    except ValueError as exc:
        raise UserError(f"the NIR graph is not consistent: {exc}") from None


def _run_conventions(meta: dict, nodes: dict, options: ImportOptions) -> RunConventions:
    """dt, steps, reset and input levels: the graph's metadata, then the options, then the
    framework's convention; each refused in one line when it is not a valid value."""
    framework, framework_source = _framework(meta, options.framework)
    convention = CONVENTIONS[framework]
    named = framework_source != "default"
    convention_dt = convention.dt if convention.dt is not None else _derived_dt(nodes)
    dt, dt_source = _pick((meta.get("dt"), "graph metadata"), (options.dt, "option"),
                          (convention_dt, f"{framework} convention" if named else "default"))
    if not isinstance(dt, numbers.Real) or not math.isfinite(dt) or dt <= 0:
        raise UserError(f"the NIR graph's metadata gives dt={dt!r}, not a time step; pass --dt SECONDS")
    steps, steps_source = _pick((meta.get("steps"), "graph metadata"), (options.steps, "option"))
    if steps is None:
        raise UserError("the NIR graph does not say how many time steps to run; pass --steps N")
    if not _is_count(steps):
        raise UserError(f"the NIR graph's metadata gives steps={steps!r}; pass --steps N (at least 1)")
    reset, reset_source = _pick((options.reset, "option"), (meta.get("reset"), "graph metadata"),
                                (convention.reset, f"{framework} convention" if named else "default"))
    if reset not in ("zero", "subtract"):
        raise UserError(f"the NIR graph's metadata gives reset={reset!r}; pass --reset zero or --reset subtract")
    levels, _ = _pick((meta.get("input_levels"), "graph metadata"), (options.input_levels, "option"),
                      (255, "default"))
    if not _is_count(levels):
        raise UserError(f"the NIR graph's metadata gives input_levels={levels!r}; pass --input-levels N")
    return RunConventions((framework, framework_source), (dt, dt_source), (steps, steps_source),
                          (reset, reset_source), levels, convention, named)


def _linear_paths(nodes: dict, edges, input_node: str) -> list[LinearPath]:
    """Every chain of linear nodes leaving the input or a neuron node, to the node it ends at."""
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in edges:
        successors[src].append(dst)
    paths = []
    for start in [input_node] + [n for n, node in nodes.items() if isinstance(node, NEURON_NODES)]:
        stack = [(start, [])]
        while stack:
            here, chain = stack.pop()
            for nxt in successors[here]:
                if isinstance(nodes[nxt], LINEAR_NODES):
                    if nxt in chain:
                        raise UserError(f"the NIR graph has a loop through linear node {nxt!r} only")
                    stack.append((nxt, chain + [nxt]))
                else:
                    paths.append(LinearPath(start, chain, nxt))
    return paths


def _output_node(paths: list[LinearPath], nodes: dict, input_node: str) -> str:
    outputs = [(p.source, p.chain) for p in paths if isinstance(nodes[p.target], nir.Output)]
    if len(outputs) != 1 or outputs[0][1] or outputs[0][0] == input_node:
        raise UserError("the NIR graph's Output must be fed directly by exactly one neuron node "
                        "(IF, LIF, CubaLIF or LI)")
    return outputs[0][0]


def _populations(paths: list[LinearPath], nodes: dict, input_node: str, input_shape,
                 run: RunConventions) -> tuple[list[Population], list[Connection]]:
    """A population per neuron node in feed-forward order, and a connection per linear path into it
    (its bias into the current, or the membrane where there is no current state)."""
    order = _feed_forward_order(input_node, paths, nodes)
    shapes = {input_node: input_shape}
    populations, connections = [], []
    for name in order:
        incoming = [(p.source, p.chain) for p in paths if p.target == name]
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
        pop, gain = _population(name, nodes[name], shapes[name], run.dt[0], run.reset[0], run.convention)
        if any(conv is not None for *_, conv in built):
            gain = _gain_per_channel(pop, gain)
        into_current = pop.alpha > 0  # with no current state a current bias is a membrane bias
        for src, weight, _shape, bias, conv in built:
            pop.current_bias = pop.current_bias + np.where(into_current, gain * bias, 0.0)
            pop.bias = pop.bias + np.where(into_current, 0.0, gain * bias)
            source_name = INPUT if src == input_node else src
            connections.append(_scaled_connection(source_name, name, weight, conv, gain, shapes[name]))
        populations.append(pop)
    return populations, connections


def flatten_subgraphs(nodes: dict, edges) -> tuple[dict, list[tuple[str, str]]]:
    """Nodes and edges with every nested ``NIRGraph`` spliced into its parent.

    A subgraph ``g``'s node ``n`` becomes ``g.n``; an edge into ``g`` goes to
    whatever ``g``'s Input feeds, an edge out of ``g`` leaves from whatever
    feeds ``g``'s Output (edges naming ``g.n`` directly keep doing so); the
    subgraph's own Input and Output nodes, identities, disappear.
    """
    nodes, edges = dict(nodes), list(dict.fromkeys((str(a), str(b)) for a, b in edges))
    while True:
        nested = next((name for name, node in nodes.items() if isinstance(node, nir.NIRGraph)), None)
        if nested is None:
            return nodes, edges
        sub = nodes.pop(nested)
        inner = {f"{nested}.{name}": node for name, node in sub.nodes.items()}
        clash = sorted(set(inner) & set(nodes))
        if clash:
            raise UserError(f"the NIR graph's subgraph {nested!r} has a node {clash[0]!r} whose flattened "
                            "name is taken; rename one of them")
        entries = [n for n, node in inner.items() if isinstance(node, nir.Input)]
        exits = [n for n, node in inner.items() if isinstance(node, nir.Output)]
        rewired = [(s, d) for src, dst in edges
                   for s in (exits if src == nested else [src]) for d in (entries if dst == nested else [dst])]
        rewired += [(f"{nested}.{a}", f"{nested}.{b}") for a, b in sub.edges]
        nodes.update(inner)
        for port in entries + exits:
            feeding = [s for s, d in rewired if d == port]
            fed = [d for s, d in rewired if s == port]
            rewired = [e for e in rewired if port not in e] + [(s, d) for s in feeding for d in fed]
            del nodes[port]
        edges = list(dict.fromkeys(rewired))


def _framework(meta: dict, option: str | None) -> tuple[str, str]:
    """The framework the graph comes from and how we know: the option, else a name in the metadata."""
    if option is not None:
        return option, "option"
    for key in METADATA_FRAMEWORK_KEYS:
        text = str(meta.get(key) or "").lower().replace("_", "-")
        for name in DETECTABLE:
            if name in text:
                return FRAMEWORK_ALIASES.get(name, name), "graph metadata"
    return OURS, "default"


def _derived_dt(nodes: dict) -> float:
    """Rockpool's importer's estimate: its exporter writes r = tau exp(-dt/tau) / dt, so dt ~ tau / (1 + r)."""
    estimates = [np.min(np.asarray(getattr(node, "tau_mem", getattr(node, "tau", None)), dtype=np.float64)
                        / (1 + np.asarray(node.r, dtype=np.float64)))
                 for node in nodes.values() if isinstance(node, (nir.CubaLIF, nir.LIF, nir.LI))]
    return float(min(estimates)) if estimates else 1e-3


def _is_count(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer() \
        and value >= 1


def _pick(*candidates):
    """The first (value, source) whose value is given."""
    for value, source in candidates:
        if value is not None:
            return value, source
    return None, None


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


def _decay(name, tau, dt, what) -> np.ndarray:
    """1 - dt/tau, refusing a tau below dt (forward Euler would be unstable) beyond float32's slack."""
    if np.any(tau < dt * (1 - TAU_TOLERANCE)):
        raise UserError(f"neuron node {name!r}: {what} {tau.min():g} is shorter than the step dt={dt:g}; "
                        "forward Euler would be unstable (pass a smaller --dt or the right --framework)")
    return np.clip(1.0 - dt / tau, 0.0, 1.0)


def _population(name, node, shape, dt, reset, convention: Convention) -> tuple[Population, np.ndarray]:
    """Discretise one neuron node; returns the population and its input gain per neuron."""
    def per_neuron(value):
        arr = np.asarray(value, dtype=np.float64)
        try:
            return np.broadcast_to(arr, shape).reshape(-1).copy()
        except ValueError:
            raise UserError(f"neuron node {name!r}: parameter of shape {arr.shape} does not fit "
                            f"the layer shape {shape}") from None

    v_reset = getattr(node, "v_reset", None)
    if reset == "zero" and v_reset is not None and np.any(per_neuron(v_reset) != 0):
        raise UserError(f"neuron node {name!r}: Loihi resets the membrane to 0; v_reset != 0 "
                        "cannot be represented")
    alpha = np.zeros(int(np.prod(shape)))
    if isinstance(node, nir.IF):
        beta, bias = np.ones_like(alpha), np.zeros_like(alpha)
        gain = per_neuron(node.r) * (dt if convention.if_discretisation == "euler" else 1.0)
        model = "IF"
    else:
        tau = per_neuron(node.tau_mem if isinstance(node, nir.CubaLIF) else node.tau)
        beta = _decay(name, tau, dt, "time constant")
        gain = per_neuron(node.r) * dt / tau
        bias = per_neuron(node.v_leak) * dt / tau
        model = type(node).__name__
        if isinstance(node, nir.CubaLIF):
            tau_syn = per_neuron(node.tau_syn)
            alpha = _decay(name, tau_syn, dt, "tau_syn")
            gain = gain * per_neuron(node.w_in) * dt / tau_syn
    if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(gain)) and np.all(np.isfinite(bias))):
        raise UserError(f"neuron node {name!r}: its parameters give a non-finite decay or input gain "
                        "(an infinite tau or R?)")
    spiking = not isinstance(node, nir.LI)
    threshold = per_neuron(node.v_threshold) if spiking else np.ones_like(alpha)
    try:
        pop = Population(name=name, shape=shape, alpha=alpha, beta=beta, threshold=threshold,
                         bias=bias, spiking=spiking, reset=reset, model=model)
    except ValueError as exc:
        raise UserError(f"neuron node {name!r}: {exc}") from None
    return pop, gain


def _gain_per_channel(pop: Population, gain: np.ndarray) -> np.ndarray:
    """A convolution shares its kernel across a channel, so its input gain must be one per channel.

    A gain g that varies within a channel is split as g = c s: the channel's
    largest gain c goes into the kernel, and each neuron's state is divided by
    its s in (0, 1] (threshold and biases divided likewise), which leaves its
    spikes unchanged. The neurons then differ in threshold and form groups.
    """
    per_channel = gain.reshape(pop.shape[0], -1)
    if np.all(per_channel == per_channel[:, :1]):
        return gain
    if not pop.spiking:
        raise UserError(f"neuron node {pop.name!r}: its input gain (R, tau) varies within a channel after a "
                        "convolution, which a membrane readout cannot absorb; give each channel one R and tau")
    channel = per_channel[np.arange(len(per_channel)), np.abs(per_channel).argmax(axis=1)][:, None]
    share = per_channel / np.where(channel == 0, 1.0, channel)
    if np.any(share <= 0):
        raise UserError(f"neuron node {pop.name!r}: its input gain (R, tau) is zero or changes sign within a "
                        "channel after a convolution; give each channel one sign of R")
    share = share.reshape(-1)
    pop.threshold, pop.bias = pop.threshold / share, pop.bias / share
    return np.broadcast_to(channel, per_channel.shape).reshape(-1).copy()


def _scaled_connection(source, target, weight, conv, gain, target_shape) -> Connection:
    """Fold the target's per-neuron input gain into the connection weights (conv: one per channel)."""
    if conv is None:
        return Connection(source, target, gain[:, None] * weight)
    channel_gain = gain.reshape(target_shape[0], -1)[:, 0]
    stride, padding = conv
    return Connection(source, target, channel_gain[:, None, None, None] * weight,
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
        return kernel, bias, pair(node.stride), pair(padding)
    size = pair(node.kernel_size)
    stride = pair(node.stride if node.stride is not None else size)
    padding = pair(node.padding if node.padding is not None else 0)
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
