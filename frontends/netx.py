"""lava-dl netx networks (``.net``, HDF5) in and out, integers as netx's Lava network holds them.

Intel's slayer exports trained Loihi networks as netx files; lava-dl's
``netx.hdf5.Network`` builds the Lava processes from them. ``read_netx``
builds the program those processes are, number for number:

- CUBA and LOIHI neurons become Lava's LIF: ``du = iDecay - 1``,
  ``dv = vDecay``, ``vth = vThMant``, ``bias_mant = bias`` with
  ``bias_exp = 6`` (per neuron, or per channel after a convolution).
- dense weights go through netx's ``optimize_weight_bits``: the program holds
  ``w << s`` with ``num_weight_bits`` and ``weight_exp = -s`` as Lava's Dense
  does (its clip and truncation then lose nothing). ``dense_rec`` adds the
  self-recurrent weights, optimised together with the forward ones.
- conv weights reach Lava's Conv unchanged (exponent 0, no clip or
  truncation); a program synapse clips and truncates by sign mode, so odd
  mixed-sign kernels are held doubled with exponent -1, which floors to the
  same sums. File kernels (C_out, C_in, kh, kw) are torch cross-correlation
  kernels over (C, H, W), which is the program's convention (netx flips and
  transposes them into Lava's (x, y) order); ``groups`` and ``dilation``
  become the equivalent full kernel, ``pool`` a per-channel kernel.
- the input layer is a LIF whose bias netx's user sets per sample to
  ``trunc(2 W x - W + B)`` (the file's ``weight`` W and ``bias`` B, x the
  image in [0, 1]). The program feeds it the per-sample part ``d = bias_mant
  - (B - W)``, an integer in [0, 2W], through a one-to-one graded synapse
  into the current (iDecay 4096: the current is exactly this step's input)
  and holds B - W as the layer's bias, so v is netx's v and u holds the drive.
- ``concat`` feeds the next layer from the previous layer and the listed
  ones, in that order (the weight's columns, or input channels); a concat
  that lists the next layer itself is its recurrent connection.

Fields the emulator cannot run are refused with one line naming the layer and
the field: axonal ``delay``, ``refDelay`` above 1, graded spikes
(``gradedSpike``, ``messageBits``), a LOIHI ``wgtExp`` other than 0, SDNN and
resonate-and-fire neurons, the ``average`` readout. ``write_netx`` writes a
program back; what netx cannot express (neuron groups with different
parameters inside one layer, a current bias, subtract reset, membrane-only
layers, effective weights off netx's 8-bit grid, biases off its 2^6 grid,
skip connections) is refused with one line. ``netx_grid`` moves a program
onto that grid when the user asks for it (a re-quantization, so it changes
spikes slightly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import nir
import numpy as np

from toolchain.errors import UserError
from toolchain.files import atomic_path, check_readable
from toolchain.ir import INPUT, Connection, Graph, Population, conv_output_shape
from toolchain.isolation import DEFAULT_TIMEOUT_SECONDS, call_isolated
from toolchain.program import Layer, Program, Synapses
from toolchain.sign_mode import held_weights

NETX_BIAS_EXP = 6
"""netx sets every LIF's bias exponent to 6: its bias is ``bias_mant << 6``."""
V_SCALE = 64.0
"""Integer u, v units per float unit of the float view (v > vth << 6 is v / 64 > vth)."""
DEFAULT_INPUT_WEIGHT = 64
"""netx's input weight W when the file gives none."""
CONV_SUM_LIMIT = 2**23
"""Lava's fixed-point Conv clamps its output to 24 signed bits; below this no clamp happens."""
ATTRIBUTE = "snn_compile"
"""Root attribute where ``write_netx`` keeps what netx has no field for (names, steps, readout);
netx reads datasets only, so the file stays a plain netx network."""
NEURON_TYPES = ("CUBA", "LOIHI")
LAYER_TYPES = ("input", "dense", "dense_rec", "conv", "pool", "flatten", "concat", "average")


@dataclass(frozen=True)
class NetxInput:
    """How a netx network takes its input: ``transform`` (W, B) of an input layer, else spikes or
    graded payloads of ``message_bits`` into the first synapse."""

    transform: tuple[int, int] | None
    message_bits: int = 0


# -- reading -------------------------------------------------------------------------------------

def read_netx(path: str | Path, steps: int | None = None, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Program:
    """The program netx builds from ``path``; ``steps`` per sample when the file does not say.
    Read in an isolated child given ``timeout`` seconds (libhdf5 parses the file)."""
    path = Path(path)
    check_readable(path)
    return call_isolated(_read_program, str(path), steps, what=path.name, timeout=timeout)


def load_netx(path: str | Path, steps: int | None = None) -> tuple[Program, Graph, nir.NIRGraph]:
    """What the compile flow needs of a netx file: its program, the float view, and that view as NIR."""
    program = read_netx(path, steps)
    graph = float_graph(program)
    return program, graph, nir_graph(graph)


def netx_input(program: Program) -> NetxInput:
    """How netx feeds ``program`` (as ``read_netx`` recorded it, or as ``write_netx`` will write it)."""
    meta = program.metadata.get("netx", {})
    transform = meta.get("input_transform")
    message_bits = 0 if transform else _payload_bits(program.input_levels)
    return NetxInput(tuple(transform) if transform else None, message_bits)


def input_drive(images: np.ndarray, program: Program) -> np.ndarray:
    """Program inputs for float images in [0, 1] (C, H, W), as netx's users feed its input layer:
    ``bias_mant = trunc(2 W x - W + B)``, of which the program's input is the part above B - W."""
    transform = netx_input(program).transform
    if transform is None:
        raise UserError("this netx network has no input layer: it takes spikes, not images")
    weight, bias = transform
    images = np.asarray(images, dtype=np.float64)
    if images.size and (images.min() < 0 or images.max() > 1):
        raise UserError("netx's input transform takes images in [0, 1]")
    return (2 * weight * images - weight + bias).astype(np.int32) - (bias - weight)


class _File:
    """One netx layer group read with one-line errors naming the layer."""

    def __init__(self, group: h5py.Group, index: int, kind: str):
        self.group, self.index, self.kind = group, index, kind

    def where(self) -> str:
        return f"layer {self.index} ({self.kind})"

    def has(self, key: str) -> bool:
        return key in self.group

    def array(self, key: str, default=None) -> np.ndarray:
        if key not in self.group:
            if default is not None:
                return np.asarray(default)
            raise UserError(f"{self.where()}: the file has no '{key}' field")
        value = self.group[key]
        if not isinstance(value, h5py.Dataset):
            raise UserError(f"{self.where()}: '{key}' is not a dataset")
        array = np.asarray(value[()])
        if array.dtype.kind not in "iufb" or not np.all(np.isfinite(array)):
            raise UserError(f"{self.where()}: '{key}' must hold finite numbers")
        return array

    def integers(self, key: str, default=None) -> np.ndarray:
        array = self.array(key, default)
        if not np.array_equal(array, np.round(array)):
            raise UserError(f"{self.where()}: '{key}' holds non-integers; netx files hold Loihi integers")
        return array.astype(np.int64)

    def scalar(self, key: str, default=None) -> int:
        array = self.integers(key, default)
        if array.size != 1:
            raise UserError(f"{self.where()}: '{key}' must be one number, found shape {array.shape}")
        return int(array.reshape(-1)[0])

    def pair(self, key: str, default) -> tuple[int, int]:
        """(y, x) as netx files store them; a scalar means both."""
        array = self.integers(key, default).reshape(-1)
        if array.size == 1:
            return int(array[0]), int(array[0])
        if array.size != 2:
            raise UserError(f"{self.where()}: '{key}' must be one or two numbers, found {array.size}")
        return int(array[0]), int(array[1])

    def shape(self) -> tuple[int, ...]:
        shape = tuple(int(d) for d in self.integers("shape").reshape(-1))
        if not shape or min(shape) < 1:
            raise UserError(f"{self.where()}: 'shape' must be positive sizes, found {shape}")
        return shape


def _text(value) -> str:
    value = np.asarray(value)
    item = value.reshape(-1)[0] if value.size else b""
    return item.decode("ascii", "replace") if isinstance(item, bytes) else str(item)


def _read_program(path: str, steps: int | None) -> Program:
    name = Path(path).name
    try:
        with h5py.File(path, "r") as f:
            return _program_from_file(f, steps)
    except OSError:
        raise UserError(f"{name}: not a netx network (not HDF5)") from None
    except UserError as exc:
        raise UserError(f"{name}: {exc}") from None


def _type(group: h5py.Group, where: str, what: str, known: tuple[str, ...], supported: str) -> str:
    """The ``type`` field of a layer or neuron ``group``: one of ``known``, else one line naming ``where``."""
    if "type" not in group:
        raise UserError(f"{where}: the {what} has no 'type' field")
    kind = _text(group["type"][()])
    if kind not in known:
        raise UserError(f"{where}: {what} type {kind!r} is not supported; {supported}")
    return kind


def _program_from_file(f: h5py.File, steps: int | None) -> Program:
    if "layer" not in f or not isinstance(f["layer"], h5py.Group) or not len(f["layer"]):
        raise UserError("not a netx network: the file has no 'layer' group")
    saved = json.loads(f.attrs[ATTRIBUTE]) if ATTRIBUTE in f.attrs else {}
    groups = f["layer"]
    count = len(groups)
    if sorted(groups) != sorted(str(i) for i in range(count)):
        raise UserError(f"the netx layers must be numbered 0..{count - 1}, found {sorted(groups)}")
    builder = _Builder(saved)
    for index in range(count):
        group = groups[str(index)]
        kind = _type(group, f"layer {index}", "layer", LAYER_TYPES, f"netx layers are {', '.join(LAYER_TYPES)}")
        builder.add(_File(group, index, kind))
    steps = steps or saved.get("steps") or _file_steps(f)
    if not steps:
        raise UserError("the netx file does not say how many time steps a sample runs "
                        "(no simulation/tSample); pass --steps N")
    return builder.program(int(steps))


def _file_steps(f: h5py.File) -> int | None:
    if "simulation" in f and "tSample" in f["simulation"]:
        ts = np.asarray(f["simulation/tSample"][()]).reshape(-1)
        return int(ts[0]) if ts.size and ts[0] >= 1 else None
    return None


class _Builder:
    """Walks the netx layers in order, as ``netx.hdf5.Network._create`` does."""

    def __init__(self, saved: dict):
        self.saved = saved
        self.names = saved.get("names", {})
        self.layers: list[Layer] = []
        self.synapses: list[Synapses] = []
        self.by_index: dict[int, str] = {}
        self.input_shape: tuple[int, ...] | None = tuple(saved["input_shape"]) if "input_shape" in saved else None
        self.input_levels = int(saved.get("input_levels", 1))
        self.transform: tuple[int, int] | None = None
        self.sources: list[str] | None = None  # what feeds the next layer; None: the previous one
        self.pending_recurrent = False
        self.flatten_next = False

    # the layer kinds ----------------------------------------------------------------------------

    def add(self, layer: _File) -> None:
        if layer.kind in ("input", "dense", "dense_rec", "conv", "pool"):
            if layer.has("delay"):
                raise UserError(f"{layer.where()}: axonal delays ('delay') are not supported by the emulator; "
                                "export the network without delays")
        if layer.kind == "input":
            self._input(layer)
        elif layer.kind == "flatten":
            self.flatten_next = True
        elif layer.kind == "average":
            raise UserError(f"{layer.where()}: slayer's 'average' readout has no neurons or synapses to run; "
                            "remove it and read the previous layer's spikes")
        elif layer.kind == "concat":
            self._concat(layer)
        else:
            self._neuron_layer(layer)

    def _input(self, layer: _File) -> None:
        if self.layers:
            raise UserError(f"{layer.where()}: an input layer must come first")
        shape = layer.shape()
        self.input_shape = shape
        if "neuron" not in layer.group:
            return
        du, dv, vth = _neuron(layer)
        if du != 4095:
            raise UserError(f"{layer.where()}: iDecay {du + 1}; the emulator feeds the input layer through its "
                            "current, which needs iDecay 4096 (no current state)")
        weight = layer.scalar("weight", DEFAULT_INPUT_WEIGHT)
        bias = layer.scalar("bias", 0)
        if weight < 1:
            raise UserError(f"{layer.where()}: input 'weight' {weight} must be at least 1")
        if bias - weight < -4096 or bias + weight > 4095:
            raise UserError(f"{layer.where()}: input 'weight' {weight} and 'bias' {bias} give biases beyond "
                            "Lava's 13-bit bias_mant")
        self.transform = (weight, bias)
        self.input_levels = 2 * weight
        name = self._name(layer)
        self.layers.append(_layer(name, shape, du, dv, vth, np.full(int(np.prod(shape)), bias - weight)))
        size = shape[0] if len(shape) == 3 else int(np.prod(shape))
        identity = np.eye(size, dtype=np.int32)
        kind = "conv" if len(shape) == 3 else "dense"
        self.synapses.append(Synapses(INPUT, name, identity[:, :, None, None] if kind == "conv" else identity,
                                      np.zeros(int(np.prod(shape)) if kind == "dense" else shape[0]), 8, kind,
                                      message_bits=_payload_bits(self.input_levels)))
        self.by_index[layer.index] = name

    def _concat(self, layer: _File) -> None:
        listed = [int(i) for i in layer.integers("layers").reshape(-1)]
        previous = self._previous_name(layer)
        sources = [previous]
        for i in listed:
            if i in self.by_index:
                sources.append(self.by_index[i])
            elif i == layer.index + 1:
                self.pending_recurrent = True
            else:
                raise UserError(f"{layer.where()}: 'layers' lists layer {i}, which is neither an earlier neuron "
                                "layer nor the next one (a recurrence the emulator holds only within one layer)")
        self.sources = sources

    def _neuron_layer(self, layer: _File) -> None:
        if "neuron" not in layer.group:
            raise UserError(f"{layer.where()}: the file has no 'neuron' group (netx's default non-leaky "
                            "integrator, iDecay 0, is not a Loihi LIF the emulator runs)")
        du, dv, vth = _neuron(layer)
        shape = layer.shape()
        name = self._name(layer)
        sources = self.sources or [self._previous_name(layer)]
        recurrent = self.pending_recurrent or layer.kind == "dense_rec"
        self.sources, self.pending_recurrent = None, False
        n = int(np.prod(shape))
        if layer.kind in ("conv", "pool") and len(shape) != 3:
            raise UserError(f"{layer.where()}: 'shape' {shape} must be (C, H, W)")
        bias = layer.integers("bias", 0).reshape(-1)
        if bias.size == 1:
            bias = np.full(n, bias[0])
        elif bias.size == shape[0] and len(shape) == 3 and bias.size != n:
            bias = np.repeat(bias, n // shape[0])
        elif bias.size != n:
            raise UserError(f"{layer.where()}: 'bias' has {bias.size} values for {n} neurons")
        self.layers.append(_layer(name, shape, du, dv, vth, bias, where=layer.where()))
        if layer.kind in ("dense", "dense_rec"):
            self._dense(layer, name, shape, sources, recurrent)
        else:
            self._conv(layer, name, shape, sources, recurrent)
        self.by_index[layer.index] = name
        self.flatten_next = False

    def _dense(self, layer: _File, name: str, shape, sources: list[str], recurrent: bool) -> None:
        n = int(np.prod(shape))
        weight = layer.integers("weight")
        if weight.ndim == 1:
            if weight.size % n:
                raise UserError(f"{layer.where()}: 'weight' has {weight.size} values, not a multiple of {n}")
            weight = weight.reshape(n, -1)
        if weight.ndim != 2 or weight.shape[0] != n:
            raise UserError(f"{layer.where()}: 'weight' of shape {weight.shape} does not fit {n} neurons")
        widths = [self._flat_size(layer, s) for s in sources]
        blocks = [weight]
        if layer.kind == "dense_rec":
            blocks.append(layer.integers("weight_rec").reshape(n, -1))
            widths.append(n)
        elif recurrent:
            widths.append(n)
        full = np.hstack(blocks)
        if full.shape[1] != sum(widths):
            raise UserError(f"{layer.where()}: 'weight' has {full.shape[1]} inputs but its sources give "
                            f"{sum(widths)}")
        held, bits, exponent = _optimize_weight_bits(full, layer.where())
        targets = sources + ([name] if recurrent else [])
        start = 0
        for source, width in zip(targets, widths):
            self.synapses.append(Synapses(source, name, held[:, start:start + width], np.full(n, exponent), bits,
                                          "dense", message_bits=self._message_bits(source)))
            start += width

    def _conv(self, layer: _File, name: str, shape, sources: list[str], recurrent: bool) -> None:
        if recurrent:
            raise UserError(f"{layer.where()}: a recurrent convolution is not supported; recurrence is dense")
        in_shapes = [self._shape(s) for s in sources]
        if any(len(s) != 3 for s in in_shapes) or len({s[1:] for s in in_shapes}) != 1:
            raise UserError(f"{layer.where()}: its sources {in_shapes} are not (C, H, W) maps of one size")
        channels = sum(s[0] for s in in_shapes)
        kernel = self._kernel(layer, shape, channels)
        stride, padding = layer.pair("stride", 1), layer.pair("padding", 0)
        in_shape = (channels,) + in_shapes[0][1:]
        if min(stride) < 1 or min(padding) < 0:
            raise UserError(f"{layer.where()}: 'stride' {stride} and 'padding' {padding} must be positive and "
                            "non-negative")
        out = conv_output_shape(in_shape, kernel.shape, stride, padding)
        if out != tuple(shape):
            raise UserError(f"{layer.where()}: a {kernel.shape[2]}x{kernel.shape[3]} kernel with stride {stride} "
                            f"and padding {padding} over {in_shape} gives {out}, but 'shape' says {tuple(shape)}")
        levels = max(self.input_levels if s == INPUT else 1 for s in sources)
        if np.abs(kernel).reshape(len(kernel), -1).sum(axis=1).max() * levels >= CONV_SUM_LIMIT:
            raise UserError(f"{layer.where()}: its sums can reach 2^23, where Lava's Conv clamps and the "
                            "emulator does not")
        held, exponent = _conv_representation(kernel, layer.where())
        start = 0
        for source, source_shape in zip(sources, in_shapes):
            part = held[:, start:start + source_shape[0]]
            self.synapses.append(Synapses(source, name, part, np.full(shape[0], exponent), 8, "conv", stride,
                                          padding, message_bits=self._message_bits(source)))
            start += source_shape[0]

    def _kernel(self, layer: _File, shape, channels: int) -> np.ndarray:
        """The full (C_out, C_in, kh, kw) cross-correlation kernel: groups, dilation and pooling unrolled."""
        dilation = layer.pair("dilation", 1)
        if min(dilation) < 1:
            raise UserError(f"{layer.where()}: 'dilation' {dilation} must be at least 1")
        weight = layer.integers("weight")
        if layer.kind == "pool":
            if weight.size == 1:
                kh, kw = layer.pair("kernelSize", None)
                weight = np.full((kh, kw), int(weight.reshape(-1)[0]))
            weight = weight.reshape(weight.shape[-2:] if weight.ndim >= 2 else (1, 1))
            if shape[0] != channels:
                raise UserError(f"{layer.where()}: pooling keeps the {channels} channels, 'shape' says {shape[0]}")
            kernel = np.zeros((channels, channels) + weight.shape, dtype=np.int64)
            kernel[np.arange(channels), np.arange(channels)] = weight
        else:
            if weight.ndim == 5 and weight.shape[-1] == 1:
                weight = weight[..., 0]
            groups = layer.scalar("groups", 1)
            if weight.ndim != 4 or weight.shape[0] != shape[0] or groups < 1 or channels % groups \
                    or shape[0] % groups or weight.shape[1] * groups != channels:
                raise UserError(f"{layer.where()}: 'weight' of shape {weight.shape} with groups {groups} does not "
                                f"map {channels} input channels to {shape[0]}")
            kernel = np.zeros((shape[0], channels) + weight.shape[2:], dtype=np.int64)
            per_in, per_out = channels // groups, shape[0] // groups
            for g in range(groups):
                kernel[g * per_out:(g + 1) * per_out, g * per_in:(g + 1) * per_in] = \
                    weight[g * per_out:(g + 1) * per_out]
        if dilation != (1, 1):
            kh, kw = kernel.shape[2:]
            dilated = np.zeros(kernel.shape[:2] + (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1),
                               dtype=np.int64)
            dilated[:, :, ::dilation[0], ::dilation[1]] = kernel
            kernel = dilated
        return kernel

    # helpers ------------------------------------------------------------------------------------

    def _name(self, layer: _File) -> str:
        return self.names.get(str(layer.index), f"{layer.kind}{layer.index}")

    def _previous_name(self, layer: _File) -> str:
        if self.layers:
            return self.layers[-1].name
        if self.input_shape is None:
            if layer.kind in ("dense", "dense_rec"):
                self.input_shape = (int(layer.integers("weight").shape[-1]),) \
                    if layer.integers("weight").ndim == 2 else None
            if self.input_shape is None:
                raise UserError(f"{layer.where()}: the first layer needs the input's shape; add an input layer")
        return INPUT

    def _shape(self, source: str) -> tuple[int, ...]:
        return tuple(self.input_shape) if source == INPUT else next(l.shape for l in self.layers if l.name == source)

    def _flat_size(self, layer: _File, source: str) -> int:
        shape = self._shape(source)
        if len(shape) > 1 and not self.flatten_next and source != INPUT:
            raise UserError(f"{layer.where()}: a dense layer after the {shape} map of {source!r} needs a flatten "
                            "layer between them")
        return int(np.prod(shape))

    def _message_bits(self, source: str) -> int:
        return _payload_bits(self.input_levels) if source == INPUT else 0

    def program(self, steps: int) -> Program:
        if not self.layers:
            raise UserError("the netx file has no neuron layers")
        meta = {"format": "lava-dl netx", "input_transform": list(self.transform) if self.transform else None}
        return Program(chip="loihi2", input_shape=self.input_shape, input_levels=self.input_levels, steps=steps,
                       layers=self.layers, synapses=self.synapses, output=self.layers[-1].name,
                       readout=self.saved.get("readout", "spike_count"), metadata={"netx": meta})


def _neuron(layer: _File) -> tuple[int, int, int]:
    """(du, dv, vth) of a CUBA/LOIHI neuron group, as netx maps them onto Lava's LIF."""
    group = layer.group["neuron"]
    neuron = _File(group, layer.index, layer.kind)
    _type(group, layer.where(), "neuron", NEURON_TYPES, f"the emulator runs {' and '.join(NEURON_TYPES)} (Loihi LIF)")
    i_decay, v_decay, vth = neuron.scalar("iDecay"), neuron.scalar("vDecay"), neuron.scalar("vThMant")
    if neuron.scalar("refDelay", 1) > 1:
        raise UserError(f"{layer.where()}: 'refDelay' {neuron.scalar('refDelay')} is a refractory period, which "
                        "netx's LIF and the emulator do not have")
    if neuron.has("gradedSpike") and bool(neuron.array("gradedSpike")) or neuron.scalar("messageBits", 0) > 0:
        raise UserError(f"{layer.where()}: graded spikes ('gradedSpike'/'messageBits') are not supported; "
                        "the emulator's LIF sends binary spikes")
    if neuron.scalar("wgtExp", 0) != 0:
        raise UserError(f"{layer.where()}: 'wgtExp' {neuron.scalar('wgtExp')} is a Loihi 1 weight exponent that "
                        "netx ignores; export the weights with the exponent applied")
    if not 1 <= i_decay <= 4096:
        raise UserError(f"{layer.where()}: 'iDecay' {i_decay} outside 1..4096 (Lava's du = iDecay - 1, 12 bit)")
    if not 0 <= v_decay <= 4095:
        raise UserError(f"{layer.where()}: 'vDecay' {v_decay} outside 0..4095 (Lava's dv, 12 bit)")
    if not 0 <= vth < 2**17:
        raise UserError(f"{layer.where()}: 'vThMant' {vth} outside 0..2^17-1 (Lava's vth, 17 bit)")
    return i_decay - 1, v_decay, vth


def _layer(name, shape, du, dv, vth, bias, where: str | None = None) -> Layer:
    bias = np.asarray(bias, dtype=np.int64)
    if bias.size and (bias.min() < -4096 or bias.max() > 4095):
        raise UserError(f"{where or name}: 'bias' reaches {int(np.abs(bias).max())}, beyond Lava's 13-bit bias_mant")
    return Layer(name=name, shape=shape, du=du, dv=dv, vth=vth, bias_mant=bias, bias_exp=NETX_BIAS_EXP,
                 v_scale=V_SCALE)


def _payload_bits(levels: int) -> int:
    return 0 if levels <= 1 else int(levels).bit_length()


def _optimize_weight_bits(weight: np.ndarray, where: str) -> tuple[np.ndarray, int, int]:
    """netx's ``optimize_weight_bits``: (held weights, num_weight_bits, weight_exp), refusing what it
    would clip or what an 8-bit program synapse cannot hold."""
    low, high = int(weight.min()), int(weight.max())
    if low == 0 and high == 0:
        raise UserError(f"{where}: every weight is zero (netx's weight optimisation divides by the largest)")
    if low < 0 < high and (high > 254 or low < -256) or high > 255 or low < -256:
        raise UserError(f"{where}: weights in [{low}, {high}] exceed the 8-bit range netx keeps "
                        "([-256, 254] for mixed signs, 0..255 or -256..0 otherwise)")
    signed = int(low < 0 < high)
    if signed:
        scale = min(127 / high, -128 / low)
    elif high <= 0:
        scale = -256 / low
    else:
        scale = 255 / high
    scale_bits = int(np.floor(np.log2(scale))) + signed
    shared_zeros = 8
    while shared_zeros > 0 and np.any(weight % (2**shared_zeros)):
        shared_zeros -= 1
    bits = 8 - scale_bits - (shared_zeros - signed)
    if bits > 8:
        raise UserError(f"{where}: odd mixed-sign weights above 127 need netx's 9-bit synapses, which a program "
                        "synapse (8 bits) cannot hold")
    return weight.astype(np.int64) << scale_bits, int(bits), -scale_bits


def _conv_representation(kernel: np.ndarray, where: str) -> tuple[np.ndarray, int]:
    """An 8-bit program synapse that sums exactly what Lava's Conv sums with ``kernel`` (no clip or
    truncation there): mixed signs lose the lowest bit to truncation, so odd kernels are held doubled."""
    low, high = int(kernel.min()), int(kernel.max())
    if low >= 0 and high <= 255 or high <= 0 and low >= -255:
        return kernel, 0
    if not np.any(kernel % 2) and -256 <= low and high <= 255:
        return kernel, 0
    if -128 <= low and high <= 127:
        return 2 * kernel, -1
    raise UserError(f"{where}: odd mixed-sign kernel weights in [{low}, {high}] do not fit an 8-bit synapse")


# -- writing -------------------------------------------------------------------------------------

def write_netx(program: Program, path: str | Path) -> Path:
    """Write ``program`` as a netx network (atomically); refuse what netx cannot express."""
    layers = _netx_layers(program)
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for index, entries in enumerate(layers):
                group = f.create_group(f"layer/{index}")
                for key, value in entries.items():
                    if key == "type":
                        group.create_dataset("type", (1,), "S10", [value.encode("ascii")])
                    elif key == "neuron":
                        for field_name, field_value in value.items():
                            data = np.array(field_value, dtype=object) if field_name == "type" else field_value
                            group.create_dataset(f"neuron/{field_name}", data=data)
                    else:
                        group.create_dataset(key, data=value)
            f.create_dataset("simulation/Ts", data=1)
            f.create_dataset("simulation/tSample", data=program.steps)
            saved = {"steps": program.steps, "readout": program.readout, "input_shape": list(program.input_shape),
                     "input_levels": program.input_levels,
                     "names": {str(i): e["name"] for i, e in enumerate(layers) if "name" in e}}
            f.attrs[ATTRIBUTE] = json.dumps(saved)
    return path


def _netx_layers(program: Program) -> list[dict]:
    """The netx layer entries of ``program``, each a dict of datasets (plus its ``name``)."""
    if program.chip != "loihi2":
        raise UserError(f"netx networks run on Loihi; this program was compiled for {program.chip!r}")
    entries: list[dict] = []
    previous = INPUT
    for layer in program.layers:
        incoming = program.incoming(layer.name)
        forward = [s for s in incoming if not s.recurrent]
        recurrent = [s for s in incoming if s.recurrent]
        if len(forward) != 1 or forward[0].source != previous:
            raise UserError(f"layer {layer.name!r}: netx networks written here are chains; its inputs come from "
                            f"{[s.source for s in forward]} instead of {previous!r} alone")
        du, dv, vth, bias = _netx_neuron(layer)
        syn = forward[0]
        neuron = {"type": "CUBA", "iDecay": du + 1, "vDecay": dv, "vThMant": vth, "refDelay": 1,
                  "gradedSpike": False}
        if _is_netx_input(program, layer, syn):
            weight = program.input_levels // 2
            entries.append({"name": layer.name, "type": "input", "shape": np.array(layer.shape),
                            "weight": np.array([weight], dtype=np.float32),
                            "bias": np.array([bias[0] + weight], dtype=np.float32), "neuron": neuron})
            previous = layer.name
            continue
        source_shape = program.shape_of(syn.source)
        if syn.kind == "dense" and len(source_shape) > 1 and syn.source != INPUT:
            entries.append({"type": "flatten", "shape": np.array([int(np.prod(source_shape))])})
        entry = {"name": layer.name, "shape": np.array(layer.shape), "neuron": neuron,
                 "bias": bias.astype(np.float32)}
        if syn.kind == "dense":
            weights = [_effective(syn)] + [_effective(s) for s in recurrent]
            entry.update(type="dense_rec" if recurrent else "dense", inFeatures=weights[0].shape[1],
                         outFeatures=layer.size, weight=weights[0].astype(np.float32))
            if recurrent:
                entry["weight_rec"] = weights[1].astype(np.float32)
        else:
            if recurrent:
                raise UserError(f"layer {layer.name!r}: a recurrent convolution has no netx form")
            kernel = _effective(syn)
            entry.update(type="conv", inChannels=kernel.shape[1], outChannels=kernel.shape[0],
                         kernelSize=np.array(kernel.shape[2:]), stride=np.array(syn.stride),
                         padding=np.array(syn.padding), dilation=np.array([1, 1]), groups=1,
                         weight=kernel[..., None].astype(np.float32))
            entry["bias"] = bias.reshape(layer.shape[0], -1)[:, 0].astype(np.float32) \
                if np.all(bias.reshape(layer.shape[0], -1) == bias.reshape(layer.shape[0], -1)[:, :1]) \
                else entry["bias"]
        entries.append(entry)
        previous = layer.name
    if program.output != program.layers[-1].name:
        raise UserError(f"netx reads the last layer; this program's output {program.output!r} is not last")
    return entries


def _is_netx_input(program: Program, layer: Layer, syn: Synapses) -> bool:
    """A first layer that ``read_netx`` built from a netx input layer (a one-to-one graded feed)."""
    if syn.source != INPUT or not program.metadata.get("netx", {}).get("input_transform"):
        return False
    size = layer.shape[0] if syn.kind == "conv" else layer.size
    w = syn.weights.reshape(size, size) if syn.kind == "conv" and syn.weights.shape[2:] == (1, 1) else syn.weights
    return w.shape == (size, size) and np.array_equal(w, np.eye(size)) and not np.any(syn.weight_exp)


def _netx_neuron(layer: Layer) -> tuple[int, int, int, np.ndarray]:
    """(du, dv, vth, netx bias) of a layer netx can hold in one LIF process."""
    if len(layer.groups()) > 1:
        raise UserError(f"layer {layer.name!r}: its neurons form {len(layer.groups())} groups with different "
                        "(du, dv, vth); a netx layer has one neuron parameter set")
    if layer.reset != "zero":
        raise UserError(f"layer {layer.name!r} resets by subtraction; netx's LIF resets to zero")
    if layer.has_current_bias:
        raise UserError(f"layer {layer.name!r} has a current bias; netx's LIF has a voltage bias only")
    if not layer.spiking:
        raise UserError(f"layer {layer.name!r} is a membrane readout; netx layers spike")
    total = layer.bias_mant.astype(np.int64) << layer.bias_exp.astype(np.int64)
    if np.any(total % 2**NETX_BIAS_EXP):
        raise UserError(f"layer {layer.name!r}: its biases are not multiples of 2^6, netx's bias step; "
                        "move the program onto netx's grid (netx_grid) first")
    bias = total >> NETX_BIAS_EXP
    if bias.min() < -4096 or bias.max() > 4095:
        raise UserError(f"layer {layer.name!r}: its biases exceed netx's 13-bit bias_mant at exponent 6")
    return int(layer.du[0]), int(layer.dv[0]), int(layer.vth[0]), bias


def _effective(syn: Synapses) -> np.ndarray:
    """The integer weights netx must read so its Lava network sums what the program's synapse sums."""
    exps = np.unique(syn.weight_exp)
    if exps.size != 1:
        raise UserError(f"synapses {syn.name}: {exps.size} weight exponents; a netx layer has one")
    held = _held_weights(syn)
    exponent = int(exps[0])
    if exponent >= 0:
        effective = held << exponent
    elif np.any(held % 2**-exponent):
        raise UserError(f"synapses {syn.name}: weight exponent {exponent} floors the summed input, which "
                        "netx's integer weights cannot express; move the program onto netx's grid (netx_grid)")
    else:
        effective = held >> -exponent
    if syn.kind == "dense":
        _optimize_weight_bits(effective, f"synapses {syn.name}")
    else:
        _conv_representation(effective, f"synapses {syn.name}")
    return effective


def _held_weights(syn: Synapses) -> np.ndarray:
    """What one Lava Dense holds of ``syn``'s weights, its sign mode taken over the whole matrix
    (a netx layer is one process, see ``_netx_neuron``)."""
    return held_weights(syn.weights, syn.weight_bits)


# -- moving a program onto netx's grid ------------------------------------------------------------

def netx_grid(program: Program) -> Program:
    """``program`` re-quantized onto what netx holds: per layer one scale 2^-k that brings the
    effective weights into netx's 8-bit range (mixed signs even, as slayer writes them), the
    threshold scaled likewise and the bias rounded to netx's 2^6 step. Changes spikes slightly;
    the result writes and reads back exactly."""
    layers, synapses = [], []
    for layer in program.layers:
        _netx_neuron_shape_checks(layer)
        incoming = program.incoming(layer.name)
        effective = {id(s): _held_weights(s) * 2.0 ** int(s.weight_exp[0]) for s in incoming}
        factor = 1.0
        while any(_off_netx_range(w * factor) for w in effective.values()):
            factor /= 2
        for syn in incoming:
            scaled = effective[id(syn)] * factor
            mixed = scaled.min() < 0 < scaled.max()
            grid = 2 * np.round(scaled / 2) if mixed and (syn.kind == "dense" or np.abs(scaled).max() > 127) \
                else np.round(scaled)
            grid = grid.astype(np.int64)
            where = f"synapses {syn.name}"
            if syn.kind == "dense":
                held, bits, exponent = _optimize_weight_bits(grid, where)
            else:
                (held, exponent), bits = _conv_representation(grid, where), 8
            synapses.append(replace(syn, weights=held, weight_exp=np.full(syn.weight_exp.size, exponent),
                                    weight_bits=bits))
        total = (layer.bias_mant.astype(np.int64) << layer.bias_exp.astype(np.int64)) * factor
        bias = np.clip(np.round(total / 2**NETX_BIAS_EXP), -4096, 4095)
        layers.append(replace(layer, vth=np.round(layer.vth * factor).astype(np.int64), bias_mant=bias,
                              bias_exp=NETX_BIAS_EXP, v_scale=layer.v_scale * factor))
    metadata = dict(program.metadata, passes=list(program.metadata.get("passes", [])) + ["netx-grid()"])
    return replace(program, layers=layers, synapses=_in_program_order(program, synapses), metadata=metadata,
                   mapping=None)


def _in_program_order(program: Program, synapses: list[Synapses]) -> list[Synapses]:
    by_name = {s.name: s for s in synapses}
    return [by_name[s.name] for s in program.synapses]


def _netx_neuron_shape_checks(layer: Layer) -> None:
    if len(layer.groups()) > 1 or layer.reset != "zero" or layer.has_current_bias or not layer.spiking:
        _netx_neuron(layer)  # raises the one-line reason


def _off_netx_range(weights: np.ndarray) -> bool:
    low, high = float(weights.min()), float(weights.max())
    return (high > 254 or low < -256) if low < 0 < high else (high > 255 or low < -256)


# -- float view and NIR -----------------------------------------------------------------------------

def float_graph(program: Program) -> Graph:
    """The program as float dynamics (units of 2^-6 of the integer state, dt = 1 step) for the float
    reference: the same equations without Loihi's truncations and wraps."""
    populations = []
    for layer in program.layers:
        bias = (layer.bias_mant.astype(np.float64) * 2.0 ** layer.bias_exp) / V_SCALE
        # integer v > 0 is v >= 1, i.e. above half a unit: vth 0 stays a positive float threshold
        threshold = np.maximum(layer.vth.astype(np.float64), 0.5 / V_SCALE)
        populations.append(Population(name=layer.name, shape=layer.shape, alpha=(4095 - layer.du) / 4096,
                                      beta=(4096 - layer.dv) / 4096, threshold=threshold, bias=bias,
                                      spiking=layer.spiking, model="CUBA LIF"))
    connections = []
    for syn in program.synapses:
        weight = syn.weights.astype(np.float64)
        exp = syn.weight_exp.astype(np.float64)
        scale = 2.0 ** (exp[:, None] if syn.kind == "dense" else exp.reshape(weight.shape[0], -1)[:, 0, None, None, None])
        gain = program.input_levels if syn.source == INPUT else 1
        connections.append(Connection(syn.source, syn.target, weight * scale * gain, syn.kind, syn.stride, syn.padding))
    return Graph(input_shape=program.input_shape, populations=populations, connections=connections,
                 output=program.output, steps=program.steps, dt=1.0, input_levels=program.input_levels,
                 metadata={"format": "lava-dl netx", "dt_source": "netx (one step)", "reset": "zero"})


def nir_graph(graph: Graph) -> nir.NIRGraph:
    """``graph`` as NIR (CubaLIF neurons, Affine and Conv2d synapses, dt = 1 in the metadata)."""
    nodes = {INPUT: nir.Input(input_type={"input": np.array(graph.input_shape)})}
    edges = []
    for pop in graph.populations:
        tau_syn = 1.0 / (1.0 - pop.alpha)
        tau_mem = np.where(pop.beta < 1, 1.0 / np.maximum(1.0 - pop.beta, 1e-12), 1e12)
        shaped = lambda values: np.asarray(values, dtype=np.float64).reshape(pop.shape)  # noqa: E731
        nodes[pop.name] = nir.CubaLIF(tau_syn=shaped(tau_syn), tau_mem=shaped(tau_mem), r=shaped(tau_mem * tau_syn),
                                      v_leak=shaped(pop.bias * tau_mem), v_threshold=shaped(pop.threshold),
                                      w_in=shaped(np.ones(pop.size)))
    for i, conn in enumerate(graph.connections):
        name, source_shape = f"synapse{i}", graph.shape_of(conn.source)
        previous = conn.source
        if conn.kind == "dense" and len(source_shape) > 1:
            nodes[f"flatten{i}"] = nir.Flatten(input_type={"input": np.array(source_shape)}, start_dim=0)
            edges.append((previous, f"flatten{i}"))
            previous = f"flatten{i}"
        if conn.kind == "dense":
            nodes[name] = nir.Affine(weight=conn.weight, bias=np.zeros(conn.weight.shape[0]))
        else:
            nodes[name] = nir.Conv2d(input_shape=source_shape[1:], weight=conn.weight, stride=conn.stride,
                                     padding=conn.padding, dilation=1, groups=1, bias=np.zeros(conn.weight.shape[0]))
        edges += [(previous, name), (name, conn.target)]
    nodes["output"] = nir.Output(output_type={"output": np.array(graph.population(graph.output).shape)})
    edges.append((graph.output, "output"))
    metadata = {"dt": 1.0, "steps": graph.steps, "reset": "zero", "input_levels": graph.input_levels,
                "producer": "snn-compile frontends.netx"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def events_to_spikes(events: np.ndarray, channels: int, steps: int) -> np.ndarray:
    """(steps, channels) binary spikes from 1-D events (rows x, polarity, t in steps), binned as
    slayer's ``Event.to_tensor(dim=(1, channels, steps))`` does: every coordinate rounded half to
    even, polarity 0 only, events outside the tensor dropped, coincident events OR-ed."""
    events = np.asarray(events, dtype=np.float64)
    if events.ndim != 2 or events.shape[1] != 3:
        raise UserError(f"events must be rows of (x, polarity, t), found shape {events.shape}")
    x, polarity, t = (np.round(events[:, k]).astype(np.int64) for k in range(3))
    keep = (x >= 0) & (x < channels) & (polarity == 0) & (t >= 0) & (t < steps)
    spikes = np.zeros((steps, channels), dtype=np.uint8)
    spikes[t[keep], x[keep]] = 1
    return spikes
