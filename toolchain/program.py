"""The compiled program: backend-neutral integer data a target can run.

A program is everything a chip needs and nothing about where it came from:
integer neuron parameters in the chip's native widths, integer synapses with
their exponents, how the host feeds input and reads output. It is saved as
one HDF5 file (the container NIR uses too) and loads again without the
original model. ``SCHEMA_VERSION`` changes whenever the layout does.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from toolchain.errors import UserError
from toolchain.files import atomic_path
from toolchain.ir import INPUT
from toolchain.mapping import Mapping

SCHEMA_VERSION = 3
FORMAT_NAME = "snn-compile-program"

# The integer widths of a Loihi 2 LIF neuron (lava-nc 0.10.0 PyLifModelBitAcc), the one home of these
# numbers: the quantizer and the emulators read them here, and ``targets.chips.load_chip`` checks that a
# chip spec of this format states the same.
DECAY_BITS = 12
"""du and dv, unsigned; a decay of 2^12 keeps nothing."""
DECAY_UNITY = 2**DECAY_BITS
DECAY_MAX = DECAY_UNITY - 1
VTH_BITS = 17
"""vth, unsigned; compared with v after a shift by 6."""
VTH_MAX = 2**VTH_BITS - 1
BIAS_MANT_BITS = 13
"""bias_mant, signed."""
BIAS_MANT_MAX = 2 ** (BIAS_MANT_BITS - 1) - 1
BIAS_MANT_MIN = -(2 ** (BIAS_MANT_BITS - 1))
BIAS_EXP_MAX = 7
"""bias_exp, unsigned 3 bit."""
STATE_BITS = 24
"""u and v, signed: u wraps, v saturates at +-(2^23 - 1)."""
STATE_MAX = 2 ** (STATE_BITS - 1) - 1
CURRENT_BIAS_MANT_MIN, CURRENT_BIAS_MANT_MAX = -256, 255
"""An always-on axon's 8-bit synapse as Lava stores it (the weight shifted, 9 bit signed)."""
CURRENT_BIAS_EXP_MIN, CURRENT_BIAS_EXP_MAX = -8, 7
WIDTHS = {"decay_bits": DECAY_BITS, "vth_bits": VTH_BITS, "bias_mant_bits": BIAS_MANT_BITS,
          "bias_exp_max": BIAS_EXP_MAX, "state_bits": STATE_BITS}
"""Chip-spec limit -> the width this format holds."""


@dataclass(eq=False)
class Layer:
    r"""A population on the chip, in Loihi 2's integer LIF form, per time step:

    .. math::
        u \leftarrow \mathrm{sgn}(u(4095-du)) \lfloor |u(4095-du)| / 2^{12} \rfloor
        + 2^6 (a_{in} + c_{mant} 2^{c_{exp}}) \quad (\text{wrapped into signed 24 bit})

        v \leftarrow \mathrm{clip}(\mathrm{sgn}(v(4096-dv)) \lfloor |v(4096-dv)| / 2^{12} \rfloor
        + u + b_{mant} 2^{b_{exp}}, \; \pm(2^{23}-1))

        s = v > 2^6 v_{th}, \qquad v \leftarrow 0 \text{ where } s
        \quad (\text{reset "subtract": } v \leftarrow v - 2^6 v_{th})

    du, dv: 12 bit unsigned; vth: 17 bit unsigned; bias_mant: 13 bit signed;
    bias_exp: 3 bit unsigned. ``current_bias_mant`` / ``current_bias_exp``
    (c): a constant drive into the current u, as an always-on input axon
    through an 8-bit synapse with its weight exponent (so Lava's per-process
    clip, truncation and shift apply to it as to any synapse; a negative
    exponent floors). All are stored per neuron; neurons that share (du, dv,
    vth) form one group, the unit a chip process is made of. ``reset``: Loihi's
    LIF resets to zero; "subtract" is a programmable Loihi 2 neuron model
    (Lava 0.10 has no such process). ``v_scale`` is integer v units per float
    unit (for reading v back).
    """

    name: str
    shape: tuple[int, ...]
    du: np.ndarray
    dv: np.ndarray
    vth: np.ndarray
    bias_mant: np.ndarray
    bias_exp: np.ndarray
    v_scale: np.ndarray
    spiking: bool = True
    model: str = "LIF"
    reset: Literal["zero", "subtract"] = "zero"
    current_bias_mant: np.ndarray = 0
    current_bias_exp: np.ndarray = 0

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        if self.reset not in ("zero", "subtract"):
            raise ValueError(f"layer {self.name}: unknown reset {self.reset!r}")
        n = self.size
        for attr, dtype, lo, hi in (("du", np.int32, 0, DECAY_MAX), ("dv", np.int32, 0, DECAY_MAX),
                                    ("vth", np.int32, 0, VTH_MAX),
                                    ("bias_mant", np.int32, BIAS_MANT_MIN, BIAS_MANT_MAX),
                                    ("bias_exp", np.int32, 0, BIAS_EXP_MAX),
                                    ("current_bias_mant", np.int32, CURRENT_BIAS_MANT_MIN, CURRENT_BIAS_MANT_MAX),
                                    ("current_bias_exp", np.int32, CURRENT_BIAS_EXP_MIN, CURRENT_BIAS_EXP_MAX)):
            arr = np.broadcast_to(np.asarray(getattr(self, attr)), (n,)).astype(dtype)
            if arr.size and (arr.min() < lo or arr.max() > hi):
                raise ValueError(f"layer {self.name}: {attr} outside [{lo}, {hi}]")
            setattr(self, attr, arr.copy())
        self.v_scale = np.broadcast_to(np.asarray(self.v_scale, dtype=np.float64), (n,)).copy()

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def has_current_bias(self) -> bool:
        return bool(np.any(self.current_bias_mant != 0))

    def groups(self) -> list[np.ndarray]:
        """Neuron indices of each group sharing (du, dv, vth), in first-seen order."""
        keys = np.stack([self.du, self.dv, self.vth], axis=1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first)
        return [np.flatnonzero(inverse.reshape(-1) == g) for g in order]


@dataclass(eq=False)
class Synapses:
    """Integer synapses from ``source`` (a layer or the input) into ``target``.

    ``weights``: int, dense (target size, source size) or conv (C_out, C_in,
    kh, kw), on Loihi's 8-bit grid for ``weight_bits``. The accumulated input
    of target neuron n is shifted by ``weight_exp[n]`` (left if positive,
    arithmetic right if negative). ``message_bits`` > 0 means the source sends
    graded integer payloads (the host's analog input) rather than binary
    spikes. Every synapse connection delays its output by one time step.
    """

    source: str
    target: str
    weights: np.ndarray
    weight_exp: np.ndarray
    weight_bits: int
    kind: Literal["dense", "conv"] = "dense"
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    message_bits: int = 0

    def __post_init__(self):
        self.weights = np.asarray(self.weights).astype(np.int32)
        self.weight_exp = np.asarray(self.weight_exp).astype(np.int32).reshape(-1)
        self.stride = tuple(int(s) for s in self.stride)
        self.padding = tuple(int(p) for p in self.padding)
        if not 1 <= self.weight_bits <= 8:
            raise ValueError(f"synapses {self.name}: weight_bits must be 1..8")

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"

    @property
    def recurrent(self) -> bool:
        return self.source == self.target


@dataclass(eq=False)
class Program:
    """A compiled network: layers in feed-forward order, synapses, I/O contract.

    Input: the host sends integers in [0, input_levels] each step (graded
    payloads; binary spikes when input_levels == 1). Output: ``readout`` says
    whether the class is the output layer's spike count or its membrane
    potential at the last step. The chip answers ``latency`` steps late
    (one step per synapse connection on the longest path). ``mapping``: where
    the neurons live on the chip's cores, once partitioned and placed.
    """

    chip: str
    input_shape: tuple[int, ...]
    input_levels: int
    steps: int
    layers: list[Layer]
    synapses: list[Synapses]
    output: str
    readout: Literal["spike_count", "membrane"] = "spike_count"
    metadata: dict = field(default_factory=dict)
    mapping: Mapping | None = None

    def __post_init__(self):
        self.input_shape = tuple(int(d) for d in self.input_shape)
        names = [layer.name for layer in self.layers]
        if int(self.steps) < 1 or int(self.input_levels) < 1:
            raise ValueError(f"steps ({self.steps}) and input_levels ({self.input_levels}) must be at least 1")
        if self.output not in names:
            raise ValueError(f"output layer {self.output!r} is not in the program")
        for syn in self.synapses:
            if syn.target not in names or (syn.source not in names and syn.source != INPUT):
                raise ValueError(f"synapses {syn.name} name an unknown layer")

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)

    def check_inputs(self, inputs: np.ndarray) -> None:
        """Refuse inputs the chip cannot take: anything but integers in [0, input_levels]."""
        inputs = np.asarray(inputs)
        if inputs.size and (inputs.min() < 0 or inputs.max() > self.input_levels
                            or not np.array_equal(inputs, np.round(inputs))):
            raise UserError(f"inputs must be integers in [0, {self.input_levels}] (the program's input levels)")

    def incoming(self, name: str) -> list[Synapses]:
        return [s for s in self.synapses if s.target == name]

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self.input_shape if name == INPUT else self.layer(name).shape

    @property
    def depth(self) -> dict[str, int]:
        """Synapse connections between the input and each layer: its delay in steps."""
        depth = {INPUT: 0}
        for layer in self.layers:
            depth[layer.name] = 1 + max(depth[s.source] for s in self.incoming(layer.name) if not s.recurrent)
        return depth

    @property
    def latency(self) -> int:
        return self.depth[self.output]

    # -- persistence ---------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write atomically: a crash never leaves a half-written program."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                self._write(f)
        return path

    def to_bytes(self) -> bytes:
        """The bytes of a program file, built in memory (for sending to a board)."""
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as f:
            self._write(f)
        return buffer.getvalue()

    def _write(self, f: h5py.File) -> None:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["schema_version"] = SCHEMA_VERSION
        header = {k: getattr(self, k) for k in ("chip", "input_shape", "input_levels", "steps",
                                                "output", "readout", "metadata")}
        f.attrs["header"] = json.dumps(header)
        for i, layer in enumerate(self.layers):
            g = f.create_group(f"layers/{i:03d}")
            g.attrs["meta"] = json.dumps({"name": layer.name, "shape": layer.shape, "spiking": layer.spiking,
                                          "model": layer.model, "reset": layer.reset})
            for attr in ("du", "dv", "vth", "bias_mant", "bias_exp", "current_bias_mant", "current_bias_exp",
                         "v_scale"):
                g[attr] = getattr(layer, attr)
        for i, syn in enumerate(self.synapses):
            g = f.create_group(f"synapses/{i:03d}")
            g.attrs["meta"] = json.dumps({k: getattr(syn, k) for k in (
                "source", "target", "weight_bits", "kind", "stride", "padding", "message_bits")})
            g.create_dataset("weights", data=syn.weights, compression="gzip")
            g["weight_exp"] = syn.weight_exp
        if self.mapping is not None:
            self.mapping.write(f.create_group("mapping"))

    @classmethod
    def load(cls, path: str | Path) -> "Program":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such program file")
        return cls._read(path, str(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "program") -> "Program":
        """A program from the bytes of a program file; ``name`` labels errors."""
        return cls._read(io.BytesIO(data), name)

    @classmethod
    def _read(cls, source, name: str) -> "Program":
        try:
            with h5py.File(source, "r") as f:
                if f.attrs.get("format") != FORMAT_NAME:
                    raise UserError(f"{name}: not an snn-compile program")
                version = int(f.attrs["schema_version"])
                if version != SCHEMA_VERSION:
                    raise UserError(f"{name}: program schema {version}, this toolchain reads "
                                    f"{SCHEMA_VERSION}; compile the model again")
                header = json.loads(f.attrs["header"])
                layers = [Layer(**json.loads(g.attrs["meta"]), **{k: g[k][()] for k in g})
                          for _, g in sorted(f.get("layers", {}).items())]
                synapses = [Synapses(**json.loads(g.attrs["meta"]), weights=g["weights"][()],
                                     weight_exp=g["weight_exp"][()])
                            for _, g in sorted(f.get("synapses", {}).items())]
                mapping = Mapping.read(f["mapping"]) if "mapping" in f else None
            return cls(layers=layers, synapses=synapses, mapping=mapping, **header)
        except OSError:
            raise UserError(f"{name}: not an snn-compile program (not HDF5)") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{name}: inconsistent program ({exc}); compile the model again") from None
