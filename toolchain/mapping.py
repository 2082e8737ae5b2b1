"""Where a program's neurons live on the chip: cores, chips, mesh positions, and what each core uses.

Resource model, per core (limits come from the chip spec):

- neurons: a core holds a contiguous range of one layer's neurons.
- synapse memory: synapses are stored sparsely with their target neuron:
  each nonzero synapse costs ``weight_bits + index_bits`` bits, where
  ``index_bits = ceil(log2(neurons_per_core))`` addresses the target neuron
  on its core (13 bits on Loihi 2). Zero (pruned) synapses cost nothing and
  fewer weight bits cost less. A convolution is stored per output neuron
  (no weight sharing assumed: conservative). Delays and per-axon headers are
  not modelled.
- fan-in axons: distinct source neurons (any layer, or the host input) with a
  nonzero synapse onto the core's neurons.
- fan-out axons: for each of the core's neurons, the number of distinct
  cores holding at least one of its targets, summed. The host's read-out of
  the output layer is not counted.

Traffic: a spike travels once to every core that holds targets of the neuron
that fired, so one message per (spike, destination core); the host's graded
input values count the same way. Hops are Manhattan distances on the mesh.
Chips tile a larger 2-D mesh, ``chip_columns`` chips wide, and a message
between chips travels the Manhattan distance between the two cores' global
coordinates (an assumption: Loihi chips extend their mesh off-chip, and a
board's link topology is not public). The host injects input at the west
edge of chip 0, beside core (0, 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from toolchain.connectivity import Wiring
from toolchain.ir import INPUT

if TYPE_CHECKING:
    from toolchain.program import Program

USAGE_OF_LIMIT = {"neurons_per_core": "neurons", "synapse_memory_bits_per_core": "synapse_memory_bits",
                  "fan_in_axons_per_core": "fan_in_axons", "fan_out_axons_per_core": "fan_out_axons"}
"""Per-core chip-spec limit -> the ``CoreUsage`` field it bounds."""

HOST_PORT = (-1, 0)
"""Global mesh coordinates where the host's input enters (west of chip 0's core (0, 0))."""


def index_bits(chip) -> int:
    """Bits that address a neuron on a core: part of every stored synapse."""
    return max(1, math.ceil(math.log2(chip.limit("neurons_per_core"))))


@dataclass(frozen=True)
class Mesh:
    """Core grid of one chip (``columns`` x ``rows``) and how chips tile, ``chip_columns`` wide."""

    columns: int
    rows: int
    chip_columns: int = 1

    def __post_init__(self):
        if min(self.columns, self.rows, self.chip_columns) < 1:
            raise ValueError("mesh dimensions must be positive")

    @classmethod
    def of(cls, chip, chips: int = 1) -> "Mesh":
        """The chip's mesh with ``chips`` chips tiled as close to a square as possible."""
        columns, rows = chip.limit("mesh_columns"), chip.limit("mesh_rows")
        if columns * rows != chip.limit("cores_per_chip"):
            raise ValueError(f"chip {chip.name}: mesh {columns} x {rows} does not hold "
                             f"{chip.limit('cores_per_chip')} cores")
        return cls(columns, rows, max(1, math.ceil(math.sqrt(chips))))

    @property
    def cores_per_chip(self) -> int:
        return self.columns * self.rows

    def slot_position(self, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(chip, x, y) of slots numbered chip by chip, row-major within a chip."""
        chip, local = np.divmod(np.asarray(slot), self.cores_per_chip)
        y, x = np.divmod(local, self.columns)
        return chip, x, y

    def global_xy(self, chip, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates on the mesh that all chips form together."""
        chip_row, chip_column = np.divmod(np.asarray(chip), self.chip_columns)
        return chip_column * self.columns + np.asarray(x), chip_row * self.rows + np.asarray(y)


@dataclass(frozen=True)
class CoreUsage:
    """What one core uses, in the units of the chip spec's per-core limits."""

    neurons: int
    synapse_memory_bits: int
    fan_in_axons: int
    fan_out_axons: int

    def __post_init__(self):
        if min(self.neurons, self.synapse_memory_bits, self.fan_in_axons, self.fan_out_axons) < 0:
            raise ValueError("core usage cannot be negative")


@dataclass(frozen=True)
class Core:
    """Neurons ``[start, stop)`` of ``layer``, on core (x, y) of chip ``chip``."""

    layer: str
    start: int
    stop: int
    chip: int
    x: int
    y: int
    usage: CoreUsage

    def __post_init__(self):
        if not 0 <= self.start < self.stop:
            raise ValueError(f"core of {self.layer}: empty or negative neuron range [{self.start}, {self.stop})")
        if min(self.chip, self.x, self.y) < 0:
            raise ValueError(f"core of {self.layer}: negative position")
        if self.usage.neurons != self.stop - self.start:
            raise ValueError(f"core of {self.layer}: usage counts {self.usage.neurons} neurons, range holds "
                             f"{self.stop - self.start}")


@dataclass(frozen=True)
class Traffic:
    """Spike messages over the calibration run (``rates="calibration"``) or with every
    neuron and input element firing once (``rates="uniform"``), by where they travel
    (the host's input counts as sent from chip 0)."""

    rates: str
    within_cores: float
    between_cores: float
    between_chips: float
    message_hops: float
    max_hops: int
    connection_mean_hops: dict[str, float]

    @property
    def messages(self) -> float:
        return self.within_cores + self.between_cores + self.between_chips

    @property
    def mean_hops(self) -> float:
        return self.message_hops / self.messages if self.messages else 0.0


@dataclass
class CoreLoads:
    """Work per core over a run, in the order of ``Mapping.cores``.

    ``synaptic_ops``: arriving events times nonzero synapses (a graded input
    value counts as one event); ``neurons``: updated every time step;
    ``spikes``: updates in which the neuron fired.
    """

    synaptic_ops: np.ndarray
    neurons: np.ndarray
    spikes: np.ndarray


@dataclass(eq=False)
class Mapping:
    """A placed partition of a program: every core, its position, its usage, and the traffic."""

    chip: str
    mesh: Mesh
    cores: list[Core]
    traffic: Traffic
    placement: str

    def __post_init__(self):
        positions = {(c.chip, c.x, c.y) for c in self.cores}
        if len(positions) != len(self.cores):
            raise ValueError("two cores share a mesh position")
        if any(c.x >= self.mesh.columns or c.y >= self.mesh.rows for c in self.cores):
            raise ValueError(f"a core lies outside the {self.mesh.columns} x {self.mesh.rows} mesh")
        for layer in dict.fromkeys(c.layer for c in self.cores):
            bounds = [(c.start, c.stop) for c in self.cores if c.layer == layer]
            if bounds[0][0] != 0 or any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
                raise ValueError(f"cores of {layer} do not cover its neurons in order")

    @property
    def chips_used(self) -> int:
        return 1 + max((c.chip for c in self.cores), default=-1)

    def layer_cores(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices into ``cores``, first neuron of each) for the cores of ``layer``."""
        index = np.array([i for i, c in enumerate(self.cores) if c.layer == layer], dtype=np.int64)
        return index, np.array([self.cores[i].start for i in index], dtype=np.int64)

    def connection_hops(self) -> dict[str, float]:
        """Mean hops a message of each synapse connection travels (by name "source->target")."""
        return dict(self.traffic.connection_mean_hops)

    def core_loads(self, program: Program, activity) -> CoreLoads:
        """Per-core work for a run's ``activity`` (``RunResult.activity``)."""
        counts = spike_counts(program, activity)
        synaptic_ops = np.zeros(len(self.cores))
        spikes = np.zeros(len(self.cores))
        for layer in program.layers:
            index, starts = self.layer_cores(layer.name)
            per_neuron = np.zeros(layer.size)
            for syn in program.incoming(layer.name):
                wiring = Wiring(syn, program.shape_of(syn.source), layer.shape)
                per_neuron += wiring.synaptic_ops_per_target(counts[syn.source])
            synaptic_ops[index] = np.add.reduceat(per_neuron, starts)
            spikes[index] = np.add.reduceat(counts[layer.name], starts)
        neurons = np.array([c.usage.neurons for c in self.cores])
        return CoreLoads(synaptic_ops=synaptic_ops, neurons=neurons, spikes=spikes)

    def utilisation(self, chip) -> dict[str, np.ndarray]:
        """Per core, each resource as a fraction of its per-core limit."""
        return {field: np.array([getattr(c.usage, field) for c in self.cores]) / chip.limit(limit)
                for limit, field in USAGE_OF_LIMIT.items()}

    def summary(self, chip) -> dict:
        """The mapping report: cores and chips, utilisation per layer, traffic and hops."""
        use = self.utilisation(chip)
        layers = []
        for layer in dict.fromkeys(c.layer for c in self.cores):
            index, _ = self.layer_cores(layer)
            layers.append({"layer": layer, "cores": int(index.size),
                           **{f"{field}_max": float(use[field][index].max()) for field in use},
                           **{f"{field}_mean": float(use[field][index].mean()) for field in use}})
        traffic = asdict(self.traffic)
        traffic.update(messages=self.traffic.messages, mean_hops=self.traffic.mean_hops)
        return {"placement": self.placement, "cores": len(self.cores), "chips": self.chips_used,
                "boards": math.ceil(self.chips_used / chip.limit("chips_per_board")),
                "mesh": [self.mesh.columns, self.mesh.rows], "layers": layers, "traffic": traffic}

    # -- persistence (inside a program's HDF5 file) --------------------------

    POSITION_COLUMNS = ("start", "stop", "chip", "x", "y")
    USAGE_COLUMNS = ("neurons", "synapse_memory_bits", "fan_in_axons", "fan_out_axons")

    def write(self, group) -> None:
        layers = list(dict.fromkeys(c.layer for c in self.cores))
        group.attrs["meta"] = json.dumps({"chip": self.chip, "mesh": asdict(self.mesh), "layers": layers,
                                          "traffic": asdict(self.traffic), "placement": self.placement})
        group["layer"] = np.array([layers.index(c.layer) for c in self.cores], dtype=np.int32)
        for column in self.POSITION_COLUMNS:
            group[column] = np.array([getattr(c, column) for c in self.cores], dtype=np.int64)
        for column in self.USAGE_COLUMNS:
            group[column] = np.array([getattr(c.usage, column) for c in self.cores], dtype=np.int64)

    @classmethod
    def read(cls, group) -> "Mapping":
        meta = json.loads(group.attrs["meta"])
        layer_names = [meta["layers"][i] for i in group["layer"][()].tolist()]
        positions = zip(*(group[k][()].tolist() for k in cls.POSITION_COLUMNS))
        usages = zip(*(group[k][()].tolist() for k in cls.USAGE_COLUMNS))
        cores = [Core(layer, start, stop, chip, x, y, CoreUsage(*usage))
                 for layer, (start, stop, chip, x, y), usage in zip(layer_names, positions, usages)]
        return cls(chip=meta["chip"], mesh=Mesh(**meta["mesh"]), cores=cores, traffic=Traffic(**meta["traffic"]),
                   placement=meta["placement"])


# -- traffic ------------------------------------------------------------------

def spike_counts(program: Program, activity=None) -> dict[str, np.ndarray]:
    """Events per neuron (and per input element) from ``RunResult.activity``; without
    one, every neuron and input element fires once (uniform rates)."""
    names = [INPUT] + [layer.name for layer in program.layers]
    if activity is None:
        return {name: np.ones(int(np.prod(program.shape_of(name)))) for name in names}
    return {name: np.asarray(activity[name].spike_counts, dtype=np.float64).reshape(-1) for name in names}


@dataclass(frozen=True)
class Flow:
    """Spike messages of one synapse connection between pairs of nodes (indices into the
    cores; the host input is the node after the last core). ``senders``: source neurons
    wired across each pair, which is also the messages at uniform rates."""

    source: np.ndarray
    target: np.ndarray
    messages: np.ndarray
    senders: np.ndarray


INTERVAL_CHUNK = 2**22
"""Entries of the dense per-chunk table that sums messages over core intervals."""


def message_flows(program: Program, cores: list[Core], counts: dict[str, np.ndarray]) -> dict[str, Flow]:
    """Per synapse connection (by name), the messages between every pair of wired nodes."""
    host = len(cores)
    by_layer: dict[str, list[int]] = {}
    for i, core in enumerate(cores):
        by_layer.setdefault(core.layer, []).append(i)
    ids = {layer: np.array(index) for layer, index in by_layer.items()}
    starts = {layer: np.array([cores[i].start for i in index]) for layer, index in by_layer.items()}
    flows = {}
    for syn in program.synapses:
        wiring = Wiring(syn, program.shape_of(syn.source), program.shape_of(syn.target))
        source, first, last = wiring.destinations(starts[syn.target])
        if syn.source == INPUT:
            row, row_ids = np.zeros(source.size, dtype=np.int64), np.array([host])
        else:
            core_of = np.repeat(np.arange(starts[syn.source].size),
                                np.diff(np.append(starts[syn.source], wiring.source_size)))
            row, row_ids = core_of[source], ids[syn.source]
        pairs = _sum_over_intervals(row, first, last, np.stack([counts[syn.source][source], np.ones(source.size)]),
                                    row_ids.size, ids[syn.target].size)
        rows, columns, (messages, senders) = pairs
        flows[syn.name] = Flow(row_ids[rows], ids[syn.target][columns], np.maximum(messages, 0.0), senders)
    return flows


def _sum_over_intervals(row, first, last, weights, n_rows, n_columns):
    """For each (row, column) covered by some interval ``[first, last]`` of its row, the sum of
    each weight vector over the intervals covering it; intervals are never expanded.

    ``row`` must be ascending. Difference tables (+w at ``first``, -w after
    ``last``) summed along columns, a chunk of rows at a time.
    """
    width = n_columns + 1
    rows_per_chunk = max(1, INTERVAL_CHUNK // width)
    edges = np.searchsorted(row, np.arange(0, n_rows + rows_per_chunk, rows_per_chunk))
    found_rows, found_columns, found = [], [], []
    for chunk, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        if lo == hi:
            continue
        top = chunk * rows_per_chunk
        local = (row[lo:hi] - top) * width
        rows_here = min(rows_per_chunk, n_rows - top)
        sums = []
        for w in weights[:, lo:hi]:
            difference = (np.bincount(local + first[lo:hi], w, minlength=rows_here * width)
                          - np.bincount(local + last[lo:hi] + 1, w, minlength=rows_here * width))
            sums.append(np.cumsum(difference.reshape(rows_here, width), axis=1)[:, :n_columns])
        r, c = np.nonzero(sums[-1] > 0.5)  # the last weight vector counts senders: exact integers
        found_rows.append(r + top)
        found_columns.append(c)
        found.append(np.stack([s[r, c] for s in sums]))
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((len(weights), 0))
    return np.concatenate(found_rows), np.concatenate(found_columns), np.concatenate(found, axis=1)


def assess_traffic(flows: dict[str, Flow], gx: np.ndarray, gy: np.ndarray, chip_of: np.ndarray,
                   rates: str) -> Traffic:
    """Where the messages go and how far, for node coordinates (the host port last)."""
    within = between_cores = between_chips = message_hops = 0.0
    max_hops, mean_hops = 0, {}
    for name, flow in flows.items():
        hops = np.abs(gx[flow.source] - gx[flow.target]) + np.abs(gy[flow.source] - gy[flow.target])
        same_core = flow.source == flow.target
        same_chip = chip_of[flow.source] == chip_of[flow.target]
        messages = flow.messages
        within += float(messages[same_core].sum())
        between_cores += float(messages[same_chip & ~same_core].sum())
        between_chips += float(messages[~same_chip].sum())
        message_hops += float(messages @ hops)
        if messages.sum() > 0:
            max_hops = max(max_hops, int(hops[messages > 0].max()))
            mean_hops[name] = float(messages @ hops / messages.sum())
        else:  # a silent connection: its mean at uniform rates
            mean_hops[name] = float(flow.senders @ hops / flow.senders.sum()) if hops.size else 0.0
    return Traffic(rates=rates, within_cores=within, between_cores=between_cores, between_chips=between_chips,
                   message_hops=message_hops, max_hops=max_hops, connection_mean_hops=mean_hops)


def node_coordinates(mesh: Mesh, chip, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global (x, y) and chip of every core, with the host port appended as the last node."""
    gx, gy = mesh.global_xy(chip, x, y)
    return (np.append(gx, HOST_PORT[0]), np.append(gy, HOST_PORT[1]), np.append(np.asarray(chip), 0))


def placed_mapping(chip, mesh: Mesh, cores: list[Core], slots: np.ndarray, flows: dict[str, Flow],
                   rates: str, placement: str) -> Mapping:
    """``cores`` moved to ``slots`` (numbered chip by chip, row-major), with their traffic assessed."""
    chip_index, x, y = mesh.slot_position(slots)
    placed = [replace(core, chip=int(c), x=int(i), y=int(j)) for core, c, i, j in zip(cores, chip_index, x, y)]
    gx, gy, chip_of = node_coordinates(mesh, chip_index, x, y)
    return Mapping(chip=chip.name, mesh=mesh, cores=placed, traffic=assess_traffic(flows, gx, gy, chip_of, rates),
                   placement=placement)


# -- design rule check --------------------------------------------------------

LIMIT_LABELS = {"neurons_per_core": "neurons", "synapse_memory_bits_per_core": "synapse memory bits",
                "fan_in_axons_per_core": "fan-in axons", "fan_out_axons_per_core": "fan-out axons",
                "max_cores": "cores", "chips": "chips"}

HINTS = {"neurons_per_core": "partition the program again",
         "synapse_memory_bits_per_core": "use fewer weight bits or prune synapses",
         "fan_in_axons_per_core": "prune the layer's inputs so each neuron listens to fewer sources",
         "fan_out_axons_per_core": "prune outgoing synapses so each neuron reaches fewer cores",
         "max_cores": "allow more cores or chips, or shrink the network (fewer weight bits, pruning)",
         "chips": "allow more chips, or shrink the network (fewer weight bits, pruning)"}


@dataclass(frozen=True)
class Violation:
    """A broken limit: per core of ``layer`` (worst core's ``value``, ``cores`` over it), or for the
    whole network when ``layer`` is None (``max_cores``, ``chips``)."""

    layer: str | None
    limit: str
    value: int
    allowed: int
    cores: int = 0

    def __post_init__(self):
        if self.limit not in LIMIT_LABELS:
            raise ValueError(f"unknown limit {self.limit!r}")
        if self.value <= self.allowed:
            raise ValueError(f"{self.limit}: {self.value} is within the limit {self.allowed}")

    @property
    def excess(self) -> int:
        return self.value - self.allowed

    @property
    def hint(self) -> str:
        return HINTS[self.limit]

    def __str__(self) -> str:
        share = f"{self.excess / self.allowed:.0%}" if self.allowed else "no capacity"
        label = LIMIT_LABELS[self.limit]
        if self.layer is None:
            return (f"network: needs {self.value} {label}, over the limit of {self.allowed} by {self.excess} "
                    f"({share}); {self.hint}")
        return (f"layer {self.layer}: {self.value} {label} on a core, over the per-core limit of {self.allowed} "
                f"by {self.excess} ({share}, {self.cores} core{'s' if self.cores != 1 else ''}); {self.hint}")


def check_fits(program: Program, chip, max_cores: int | None = None, chips: int | None = None) -> list[Violation]:
    """Every limit the program breaks on ``chip``: per-core limits per layer, then the core and
    chip budgets. Uses the program's mapping, or partitions it when it has none."""
    if program.mapping is not None:
        cores, chips_needed = program.mapping.cores, program.mapping.chips_used
    else:
        from toolchain.passes.partition import split_layers  # the partitioner builds on this module

        cores = split_layers(program, chip)
        chips_needed = math.ceil(len(cores) / chip.limit("cores_per_chip"))
    violations = []
    for layer in program.layers:
        layer_cores = [c for c in cores if c.layer == layer.name]
        for limit, field in USAGE_OF_LIMIT.items():
            values = np.array([getattr(c.usage, field) for c in layer_cores])
            over = values > chip.limit(limit)
            if over.any():
                violations.append(Violation(layer.name, limit, int(values.max()), chip.limit(limit), int(over.sum())))
    if max_cores is not None and len(cores) > max_cores:
        violations.append(Violation(None, "max_cores", len(cores), max_cores))
    if chips is not None and chips_needed > chips:
        violations.append(Violation(None, "chips", chips_needed, chips))
    return violations
