"""A Xylo program: the integer configuration of one Xylo core, as Rockpool's specification holds it.

Weights are stored (pre, post) as Rockpool and xylosim take them: ``w_in``
(inputs, hidden), ``w_rec`` (hidden, hidden), ``w_out`` (hidden, outputs),
each with one left shift. ``layers`` names the hidden id ranges (and the
output) the float graph's populations were mapped to, so runs report
activity per layer and the reports see the same layers, synapses and
weight exponents a Loihi program shows them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import h5py
import numpy as np

from toolchain.ir import INPUT

FORMAT_NAME = "snn-compile-xylo-program"
OUTPUT = "output"
"""``LayerSlot.kind`` of the layer mapped to the output neurons."""


@dataclass(frozen=True)
class LayerSlot:
    """A float population's place on the core: hidden ids ``start:start+size`` (or output ids), its
    distance in synapse hops from the input (``depth``: it answers that many steps late)."""

    name: str
    kind: str
    start: int
    size: int
    depth: int

    @property
    def ids(self) -> slice:
        return slice(self.start, self.start + self.size)


@dataclass(eq=False)
class XyloProgram:
    w_in: np.ndarray
    w_rec: np.ndarray
    w_out: np.ndarray
    shift_in: int
    shift_rec: int
    shift_out: int
    dash_syn: np.ndarray
    dash_mem: np.ndarray
    threshold: np.ndarray
    bias: np.ndarray
    dash_syn_out: np.ndarray
    dash_mem_out: np.ndarray
    threshold_out: np.ndarray
    bias_out: np.ndarray
    slots: list[LayerSlot]
    steps: int
    input_shape: tuple[int, ...]
    input_levels: int
    weight_bits: int = 8
    edges: list[tuple[str, str]] = field(default_factory=list)
    """The float graph's connections (source, target), in its order."""
    metadata: dict = field(default_factory=dict)
    chip: str = "xylo"
    readout: str = "spike_count"
    mapping = None
    """Xylo has no cores to place on: the reports' core map does not apply."""

    def __post_init__(self):
        for name in ("w_in", "w_rec", "w_out", "dash_syn", "dash_mem", "threshold", "bias", "dash_syn_out",
                     "dash_mem_out", "threshold_out", "bias_out"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        self.input_shape = tuple(int(d) for d in self.input_shape)

    @property
    def n_in(self) -> int:
        return self.w_in.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.w_rec.shape[0]

    @property
    def n_out(self) -> int:
        return self.w_out.shape[1]

    @property
    def latency(self) -> int:
        """Steps the output answers late: one per hidden-to-hidden and hidden-to-output hop."""
        return self.slots[-1].depth

    def slot(self, name: str) -> LayerSlot:
        for slot in self.slots:
            if slot.name == name:
                return slot
        raise KeyError(name)

    # The program interface the reports and operation counts read (``toolchain.program.Program``'s).
    @property
    def layers(self) -> list["LayerView"]:
        return [LayerView(self, s) for s in self.slots]

    @property
    def synapses(self) -> list["SynapsesView"]:
        return [SynapsesView(self, source, target) for source, target in self.edges]

    def layer(self, name: str) -> "LayerView":
        return LayerView(self, self.slot(name))

    def incoming(self, name: str) -> list["SynapsesView"]:
        return [s for s in self.synapses if s.target == name]

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self.input_shape if name == INPUT else (self.slot(name).size,)

    def weights(self, source: str, target: str) -> np.ndarray:
        """Integer weights (target, source) of one float connection, cut from the core's matrices."""
        t = self.slot(target)
        if source == INPUT:
            return self.w_in[:, t.ids].T
        s = self.slot(source)
        matrix = self.w_out if t.kind == OUTPUT else self.w_rec
        return matrix[s.ids, t.ids].T

    def shift(self, source: str, target: str) -> int:
        if source == INPUT:
            return self.shift_in
        return self.shift_out if self.slot(target).kind == OUTPUT else self.shift_rec

    def to_bytes(self) -> bytes:
        """The program as one HDF5 file."""
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            for name in ("w_in", "w_rec", "w_out", "dash_syn", "dash_mem", "threshold", "bias", "dash_syn_out",
                         "dash_mem_out", "threshold_out", "bias_out"):
                f.create_dataset(name, data=getattr(self, name))
            header = {"shifts": [self.shift_in, self.shift_rec, self.shift_out], "steps": self.steps,
                      "input_shape": list(self.input_shape), "input_levels": self.input_levels,
                      "weight_bits": self.weight_bits, "edges": self.edges,
                      "slots": [vars(s) for s in self.slots]}
            f.attrs["header"] = json.dumps(header)
            f.attrs["metadata"] = json.dumps(self.metadata, default=str)
        return buffer.getvalue()


@dataclass(frozen=True)
class LayerView:
    program: XyloProgram
    slot: LayerSlot
    model: str = "Xylo LIF"
    spiking: bool = True

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def size(self) -> int:
        return self.slot.size

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.slot.size,)

    @property
    def vth(self) -> np.ndarray:
        p = self.program
        return p.threshold_out if self.slot.kind == OUTPUT else p.threshold[self.slot.ids]

    def groups(self) -> list[np.ndarray]:
        """Every Xylo neuron has its own parameters: one group of all."""
        return [np.arange(self.size)]


@dataclass(frozen=True)
class SynapsesView:
    program: XyloProgram
    source: str
    target: str
    kind: str = "dense"
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"

    @property
    def recurrent(self) -> bool:
        return self.source == self.target

    @property
    def weights(self) -> np.ndarray:
        return self.program.weights(self.source, self.target)

    @property
    def weight_bits(self) -> int:
        return self.program.weight_bits

    @property
    def weight_exp(self) -> np.ndarray:
        return np.full(self.program.slot(self.target).size, self.program.shift(self.source, self.target))
