"""The compiler's internal graph: float neuron populations and the synapses between them.

NIR describes continuous-time nodes joined by many small linear nodes. The
compiler needs something closer to the chip: populations of neurons, each fed
by a few weighted connections. ``toolchain.nir_import`` discretises NIR into
this form (forward Euler, step ``dt``) and fuses chains of linear nodes
(pooling, flatten, scale, affine, convolution) into single connections.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

INPUT = "input"
"""Name of the pseudo-population that stands for the host-supplied input."""

ResetMode = Literal["zero", "subtract"]


@dataclass(eq=False)
class Population:
    r"""A layer of neurons with discrete-time float dynamics, one step per tick.

    .. math::
        i[t] = \alpha \, i[t-1] + \sum_c W_c x_c[t] + b_i

        v[t] = \beta \, v[t-1] + i[t] + b

        s[t] = v[t] > \theta, \qquad v[t] \leftarrow 0 \text{ where } s[t]
        \quad (\text{or } v - \theta \text{ for reset "subtract"})

    ``alpha = 0`` is a LIF without synaptic state, ``beta = 1`` an IF neuron.
    ``bias`` (b) drives the membrane, ``current_bias`` (b_i) the synaptic
    current: NIR feeds an Affine's bias into a CubaLIF's current, which
    low-pass filters it (with ``alpha = 0`` the two are the same).
    Every parameter is one value per neuron (flattened, C-order); a
    non-spiking population (an LI readout) never fires and is read out by its
    membrane potential.
    """

    name: str
    shape: tuple[int, ...]
    alpha: np.ndarray
    beta: np.ndarray
    threshold: np.ndarray
    bias: np.ndarray
    spiking: bool = True
    reset: ResetMode = "zero"
    model: str = "LIF"
    current_bias: np.ndarray = 0.0

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        for attr in ("alpha", "beta", "threshold", "bias", "current_bias"):
            value = np.asarray(getattr(self, attr), dtype=np.float64)
            if value.size != self.size:
                value = np.broadcast_to(value, self.shape)
            setattr(self, attr, value.reshape(-1).copy())
        if np.any((self.alpha < 0) | (self.alpha > 1)) or np.any((self.beta < 0) | (self.beta > 1)):
            raise ValueError(f"population {self.name}: decay factors must lie in [0, 1]")
        if self.spiking and np.any(self.threshold <= 0):
            raise ValueError(f"population {self.name}: thresholds must be positive")
        if self.reset not in ("zero", "subtract"):
            raise ValueError(f"population {self.name}: unknown reset {self.reset!r}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(eq=False)
class Connection:
    """Synapses from ``source`` (a population or ``INPUT``) into ``target``.

    ``kind="dense"``: ``weight`` has shape (target size, source size) over
    flattened neurons. ``kind="conv"``: ``weight`` is a 2-D cross-correlation
    kernel (C_out, C_in, kh, kw) applied with ``stride`` and zero ``padding``
    to the source's (C, H, W) spikes.
    """

    source: str
    target: str
    weight: np.ndarray
    kind: Literal["dense", "conv"] = "dense"
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self):
        self.weight = np.asarray(self.weight, dtype=np.float64)
        self.stride = tuple(int(s) for s in self.stride)
        self.padding = tuple(int(p) for p in self.padding)
        expected_ndim = 2 if self.kind == "dense" else 4
        if self.weight.ndim != expected_ndim:
            raise ValueError(f"{self.kind} connection {self.source}->{self.target}: "
                             f"weight must be {expected_ndim}-D, got shape {self.weight.shape}")

    @property
    def recurrent(self) -> bool:
        return self.source == self.target

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


def pair(value) -> tuple[int, int]:
    """A kernel size, stride or padding as (height, width): an int, or a sequence of one or two
    (torch and NIR write both)."""
    arr = np.atleast_1d(np.asarray(value)).astype(int)
    return int(arr[0]), int(arr[-1])


def conv_output_shape(in_shape, weight_shape, stride, padding) -> tuple[int, int, int]:
    """(C_out, H_out, W_out) of a cross-correlation, as torch computes it."""
    _, h, w = in_shape
    c_out, _, kh, kw = weight_shape
    return (c_out, (h + 2 * padding[0] - kh) // stride[0] + 1,
            (w + 2 * padding[1] - kw) // stride[1] + 1)


@dataclass(eq=False)
class Graph:
    """A network ready for the backend passes.

    ``populations`` is in feed-forward order; every non-recurrent connection
    goes from an earlier population (or the input) to a later one. ``steps``
    and ``dt`` say how the network is run; ``input_levels`` says how the
    host's analog input is represented (values are multiples of
    1/input_levels in [0, 1]; ``1`` means binary spikes).
    """

    input_shape: tuple[int, ...]
    populations: list[Population]
    connections: list[Connection]
    output: str
    steps: int
    dt: float
    input_levels: int = 255
    metadata: dict = field(default_factory=dict)

    def replace(self, **changes) -> "Graph":
        """A copy with ``changes`` (populations, connections, ...), validated again; the metadata is
        copied so the two graphs do not share it."""
        return dataclasses.replace(self, **{"metadata": dict(self.metadata), **changes})

    def __post_init__(self):
        self.input_shape = tuple(int(d) for d in self.input_shape)
        names = [p.name for p in self.populations]
        if len(set(names)) != len(names) or INPUT in names:
            raise ValueError(f"population names must be unique and not {INPUT!r}: {names}")
        if self.output not in names:
            raise ValueError(f"output population {self.output!r} is not in the graph")
        if self.steps < 1:
            raise ValueError("steps must be at least 1")
        order = {INPUT: -1, **{n: i for i, n in enumerate(names)}}
        for conn in self.connections:
            if conn.source not in order or conn.target not in order or conn.target == INPUT:
                raise ValueError(f"connection {conn.name} names an unknown population")
            if not conn.recurrent and order[conn.source] >= order[conn.target]:
                raise ValueError(f"connection {conn.name} goes backwards; only self-recurrence is supported")
            self._check_shapes(conn)

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self.input_shape if name == INPUT else self.population(name).shape

    def population(self, name: str) -> Population:
        for pop in self.populations:
            if pop.name == name:
                return pop
        raise KeyError(name)

    def incoming(self, name: str) -> list[Connection]:
        return [c for c in self.connections if c.target == name]

    def outgoing(self, name: str) -> list[Connection]:
        return [c for c in self.connections if c.source == name]

    def _check_shapes(self, conn: Connection):
        src, dst = self.shape_of(conn.source), self.shape_of(conn.target)
        if conn.kind == "dense":
            expected = (int(np.prod(dst)), int(np.prod(src)))
            if conn.weight.shape != expected:
                raise ValueError(f"connection {conn.name}: weight {conn.weight.shape}, expected {expected}")
        else:
            if len(src) != 3 or conv_output_shape(src, conn.weight.shape, conn.stride, conn.padding) != dst \
                    or conn.weight.shape[1] != src[0]:
                raise ValueError(f"connection {conn.name}: convolution of {src} with kernel "
                                 f"{conn.weight.shape} does not give {dst}")
