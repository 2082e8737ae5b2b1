"""Where a program's neurons live on the chip: cores, chips, mesh positions, and what each core uses.

Resource model, per core (limits come from the chip spec, each with its source;
``docs/guides/mapping.md`` derives them from Intel's compiler on PilotNet):

- neurons: a core holds a contiguous range of one layer's neurons, in the
  layer's order. Flat layers keep their own order. A convolutional layer can
  be tiled by whole columns instead, as Loihi 2's compiler tiles them: every
  channel and row of a run of output columns; its order is then column by
  column (``by_columns``: the neuron at channel c, row y, column x of a
  (C, H, W) layer sits at position x*C*H + c*H + y).
- synapse memory (bits): per incoming connection, the cheapest encoding
  Loihi 2 offers for the core's neurons. Sparse: each nonzero synapse stores
  its weight bits and ``index_bits`` addressing its target on the core.
  Dense: every input axon that reaches the core stores one entry per neuron
  on it, zeros included, of weight bits plus ``dense_synapse_extra_bits``.
  Convolution (shared weights): the kernel of the core's output channels is
  stored once, its nonzero weights at their weight bits, not once per output
  neuron. Fewer weight bits and pruning always take less memory.
- fan-in axons: a dense connection needs one per distinct source neuron with
  a nonzero synapse onto the core; a convolution's spikes arrive through
  shared convolutional axons, one per phase of its column stride.
- fan-out axons: for each of the core's neurons, the number of distinct
  cores holding at least one of its targets, summed. The host's read-out of
  the output layer is not counted.
- axon map and axon memory (Intel's AxonMap and AxonMem, reported only, no
  limit): a layer that sends through dense connections alone (or to the
  host) takes one axon-map entry per neuron and no axon memory. A layer that
  sends through convolutions alone takes one axon-map entry per spatial
  position (a row of a column: all its channels share it) and per fan-in
  axon of the sending core; its axon memory is not modelled (``None``), nor
  are both columns of a layer that sends both ways. The summary gives the
  mean over the layer's cores, rounded down. Both rules are inferred from
  Intel's table for PilotNet, where they match all ten layers' AxonMap;
  the reason for the fan-in factor is not public.

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
from dataclasses import asdict, dataclass

import numpy as np

USAGE_OF_LIMIT = {"neurons_per_core": "neurons", "synapse_memory_bits_per_core": "synapse_memory_bits",
                  "fan_in_axons_per_core": "fan_in_axons", "fan_out_axons_per_core": "fan_out_axons"}
"""Per-core chip-spec limit -> the ``CoreUsage`` field it bounds."""

REASONS = ("layer end", "conv_tile_neurons_below") + tuple(USAGE_OF_LIMIT)
"""Why a core ends where it does: the layer ends there, a whole convolutional tile is full, or the next
neuron would break that per-core limit."""

HOST_PORT = (-1, 0)
"""Global mesh coordinates where the host's input enters (west of chip 0's core (0, 0))."""


def index_bits(chip) -> int:
    """Bits that address a neuron on a core: part of every sparsely stored synapse."""
    return max(1, math.ceil(math.log2(chip.limit("neurons_per_core"))))


def flat_of_position(shape: tuple[int, ...], by_columns: bool) -> np.ndarray:
    """The flat (C, H, W) index of the neuron at each position of a layer's order."""
    size = int(np.prod(shape))
    if not by_columns:
        return np.arange(size)
    return np.arange(size).reshape(shape).transpose(2, 0, 1).reshape(-1)


def position_of_flat(shape: tuple[int, ...], by_columns: bool) -> np.ndarray:
    """The position in a layer's order of each neuron, by flat index (inverse of ``flat_of_position``)."""
    order = flat_of_position(shape, by_columns)
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return position


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
    """Neurons ``[start, stop)`` of ``layer`` in its order (``by_columns``: column by column, see the
    module docstring), on core (x, y) of chip ``chip``; ``limited_by``: one of ``REASONS``."""

    layer: str
    start: int
    stop: int
    chip: int
    x: int
    y: int
    usage: CoreUsage
    by_columns: bool = False
    limited_by: str = "layer end"

    def __post_init__(self):
        if self.limited_by not in REASONS:
            raise ValueError(f"core of {self.layer}: unknown reason {self.limited_by!r}")
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


def _axon_columns(layer, cores: list[Core], kinds: set[str]) -> dict:
    """AxonMap and AxonMem of a layer's cores, given the kinds of connection it sends through (see
    the module docstring): None where not modelled."""
    if "conv" not in kinds:
        return {"axon_map": sum(c.stop - c.start for c in cores) // len(cores), "axon_mem": 0}
    if kinds != {"conv"}:
        return {"axon_map": None, "axon_mem": None}
    channels = layer.shape[0]
    entries = sum((c.stop - c.start) // channels * c.usage.fan_in_axons for c in cores)
    return {"axon_map": entries // len(cores), "axon_mem": None}


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
            if len({c.by_columns for c in self.cores if c.layer == layer}) > 1:
                raise ValueError(f"cores of {layer} disagree on the layer's order")

    @property
    def chips_used(self) -> int:
        return 1 + max((c.chip for c in self.cores), default=-1)

    def layer_cores(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices into ``cores``, first neuron of each) for the cores of ``layer``."""
        index = np.array([i for i, c in enumerate(self.cores) if c.layer == layer], dtype=np.int64)
        return index, np.array([self.cores[i].start for i in index], dtype=np.int64)

    def utilisation(self, chip) -> dict[str, np.ndarray]:
        """Per core, each resource as a fraction of its per-core limit."""
        return {field: np.array([getattr(c.usage, field) for c in self.cores]) / chip.limit(limit)
                for limit, field in USAGE_OF_LIMIT.items()}

    def summary(self, chip, program=None) -> dict:
        """The mapping report: cores and chips, per layer the per-core distribution (the columns
        Loihi 2's compiler prints: fan-in axons, neurons, synapse words, fan-out axons, cores, and
        given the ``program``, axon map and axon memory as far as they are modelled), the limit
        that ended most of its cores, utilisation; then traffic and hops."""
        use = self.utilisation(chip)
        word = chip.limit("synapse_word_bits")
        sends = None if program is None else {layer.name: {s.kind for s in program.synapses if s.source == layer.name}
                                              for layer in program.layers}
        by_name = {} if program is None else {layer.name: layer for layer in program.layers}
        layers = []
        for layer in dict.fromkeys(c.layer for c in self.cores):
            index, _ = self.layer_cores(layer)
            cores = [self.cores[i] for i in index]
            ended = [c.limited_by for c in cores if c.limited_by != "layer end"]
            layers.append({"layer": layer, "cores": int(index.size),
                           "tiling": "columns" if cores[0].by_columns else "flat",
                           "limited_by": max(dict.fromkeys(ended), key=ended.count) if ended else "layer end",
                           "fan_in_axons": max(c.usage.fan_in_axons for c in cores),
                           "neurons": max(c.usage.neurons for c in cores),
                           "synapse_words": max(math.ceil(c.usage.synapse_memory_bits / word) for c in cores),
                           "fan_out_axons": max(c.usage.fan_out_axons for c in cores),
                           **({} if sends is None else _axon_columns(by_name[layer], cores, sends[layer])),
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
                                          "traffic": asdict(self.traffic), "placement": self.placement,
                                          "reasons": list(REASONS)})
        group["layer"] = np.array([layers.index(c.layer) for c in self.cores], dtype=np.int32)
        for column in self.POSITION_COLUMNS:
            group[column] = np.array([getattr(c, column) for c in self.cores], dtype=np.int64)
        for column in self.USAGE_COLUMNS:
            group[column] = np.array([getattr(c.usage, column) for c in self.cores], dtype=np.int64)
        group["by_columns"] = np.array([c.by_columns for c in self.cores], dtype=np.int8)
        group["limited_by"] = np.array([REASONS.index(c.limited_by) for c in self.cores], dtype=np.int8)

    @classmethod
    def read(cls, group) -> "Mapping":
        """A mapping written by ``write``; files from before tiling by columns read as flat cores."""
        meta = json.loads(group.attrs["meta"])
        layer_names = [meta["layers"][i] for i in group["layer"][()].tolist()]
        positions = zip(*(group[k][()].tolist() for k in cls.POSITION_COLUMNS))
        usages = zip(*(group[k][()].tolist() for k in cls.USAGE_COLUMNS))
        count = len(layer_names)
        by_columns = group["by_columns"][()].astype(bool).tolist() if "by_columns" in group else [False] * count
        reasons = ([meta["reasons"][i] for i in group["limited_by"][()].tolist()] if "limited_by" in group
                   else ["layer end"] * count)
        cores = [Core(layer, start, stop, chip, x, y, CoreUsage(*usage), columns, reason)
                 for layer, (start, stop, chip, x, y), usage, columns, reason
                 in zip(layer_names, positions, usages, by_columns, reasons)]
        return cls(chip=meta["chip"], mesh=Mesh(**meta["mesh"]), cores=cores, traffic=Traffic(**meta["traffic"]),
                   placement=meta["placement"])
