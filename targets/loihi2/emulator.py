"""Bit-accurate Loihi 2 emulator, vectorised over samples and time.

Semantics are those of lava-nc 0.10.0's fixed-point models (PyLifModelBitAcc,
PyLifResetModelBitAcc, PyDenseModelBitAcc), including its integer widths:
the accumulated input is shifted by the weight exponent and carried as
int32 (the channel type), ``a_in << 6`` and the current update wrap in
int32, u then wraps once into signed 24 bit, v saturates at +-(2^23 - 1).

Timing. Every synapse connection delays by one step, so layer k (k
connections from the input) sees sample-local step 0 at chip step k. The
chip resets each layer (LIFReset) at the step its first input arrives, so
samples stream through one long run and each layer computes exactly the
sequence a zero-delay network would, k steps late. The emulator therefore
computes each layer over all steps of a sample at once (one large matrix
product per connection, exact in float32 while sums stay below 2^24), then
runs the neuron dynamics step by step. A recurrent connection starts each
sample with an empty buffer.

Beyond Lava's LIF, two things a Loihi 2 programmable neuron does: a current
bias (``Layer.current_bias_mant``/``_exp``), computed exactly as Lava runs it,
an always-on input axon through an 8-bit synapse (``current_bias_synapses``),
and reset by subtraction (``v <- v - (vth << 6)`` on a spike), which Lava
0.10 has no process for.

Speed. On the CPU each feed-forward layer's neurons run in one compiled pass
over all steps. A layer whose source is sparse enough (``EVENT_WORK``, as
spikes usually are) forms its sums in that pass, adding the fan-out row of
each active input (``kernel.lif_layer_events``); otherwise the pass is fed
the float32 sums of one matrix product (``kernel.lif_layer``; small
convolutions as a dense matrix, an input held for every step multiplied
once per sample). The prepared layers, with their matrices, stay with the
program for its next run while its contents are unchanged
(``compiled_layers``). On a CUDA device, and for recurrent layers, the
neurons step in torch; on the device every sum is float64, so no library
choice of algorithm or precision can change an integer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref

import numpy as np
import torch
import torch.nn.functional as F

from targets.loihi2.kernel import conv_fan_out, lif_layer, lif_layer_events
from toolchain.batching import iterate_batches
from toolchain.errors import UserError
from toolchain.ir import INPUT
from toolchain.program import DECAY_MAX, DECAY_UNITY, STATE_BITS, Layer, Program, Synapses
from toolchain.results import LayerActivity, RunResult
from toolchain.sign_mode import held_weights
from toolchain.synaptic import accumulate

STATE_WRAP = 2 ** (STATE_BITS - 1)
"""u wraps at +-2^23; v saturates one below."""
FLOAT32_EXACT = 2**24
ALWAYS_ON = "always-on"
"""Source name of the synapse that carries a layer's current bias."""


def wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """Two's-complement wrap of int64 values into int32's range."""
    return ((x + 2**31) & (2**32 - 1)) - 2**31


def neuron_weight_exp(syn: Synapses, layer: Layer) -> np.ndarray:
    """The weight exponent of every target neuron (conv programs may store one per channel)."""
    exp = syn.weight_exp
    return exp if exp.size == layer.size else np.repeat(exp, layer.size // exp.size)


def current_bias_synapses(layer: Layer) -> Synapses:
    """A layer's current bias as Lava runs it: a source that sends 1 every step, one 8-bit synapse
    per neuron."""
    return Synapses(ALWAYS_ON, layer.name, layer.current_bias_mant[:, None], layer.current_bias_exp, 8)


def process_groups(program: Program, layer: Layer) -> list[np.ndarray]:
    """Neurons that can share one Lava LIF process and one Dense per incoming synapse.

    A Lava LIF process has one du, dv and vth and a Dense one weight
    exponent, so a neuron group whose neurons differ in the exponent of some
    incoming synapse (the current bias's included) is split by it.
    """
    exps = [neuron_weight_exp(syn, layer) for syn in program.incoming(layer.name)]
    if layer.has_current_bias:
        exps.append(layer.current_bias_exp)
    processes = []
    for rows in layer.groups():
        keys = np.stack([e[rows] for e in exps], axis=1) if exps else np.zeros((len(rows), 1))
        if len(rows) and np.all(keys == keys[0]):  # the common case, without sorting a large layer's rows
            processes.append(rows)
            continue
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        processes += [rows[inverse.reshape(-1) == k] for k in np.argsort(first)]
    return processes


def lava_weights(syn: Synapses, rows_of_groups: list[np.ndarray], shape) -> np.ndarray:
    """The weights a Lava Dense/Conv process holds after its clip and truncation.

    Lava picks a sign mode per process (see ``process_groups``), clips to 8
    bits and floors away the low bits for ``weight_bits``. A convolution's
    kernel is shared by a channel, so processes that split a channel must
    hold the same kernel after that.
    """
    original = syn.weights.astype(np.int64)
    w = original.copy()
    held_by_a_process = np.zeros(len(w), dtype=bool)
    for rows in rows_of_groups:
        index = rows if syn.kind == "dense" else np.unique(np.unravel_index(rows, shape)[0])
        held = held_weights(original[index], syn.weight_bits)
        if np.any(held_by_a_process[index] & np.any((w[index] != held).reshape(len(index), -1), axis=1)):
            raise UserError(f"synapses {syn.name}: neuron groups that share a channel hold different kernels "
                            "after Lava's per-process clip and truncation; use weights on the symmetric grid")
        held_by_a_process[index] = True
        w[index] = held
    return w


DENSE_CONV_ENTRIES = 2**22
"""A convolution whose (outputs, inputs) matrix has at most this many entries, and not many more
than the convolution's own multiply-accumulates, runs in the kernel path as one matrix product:
on small feature maps that is faster than conv2d, with the same exact sums."""
FAN_OUT_ENTRIES = 2**23
"""The largest (inputs, neurons) matrix the event path builds (32 MiB of int32): a larger layer
keeps its matrix product, and memory stays bounded."""
EVENT_WORK = 0.25
"""The event path forms a layer's sums when adding each nonzero input's fan-out row costs at most
this fraction of the matrix product's multiply-accumulates (a matrix product does each several
times faster)."""
SMALL_EVENT_WORK = 2**23
"""Additions (about a millisecond) below which the event path forms a batch's sums even where a
matrix product would do fewer operations: work this small costs less than handing it to a
library's thread pool, which on a loaded machine waits for its threads."""
BATCH_MEMORY = 2**30
"""Bytes of per-step activity one batch may hold: a program too large for ``batch_size`` samples
in this runs in smaller batches (same results, bounded memory)."""
BYTES_PER_NEURON_STEP = 16
"""What one neuron-step costs in a batch: its synaptic sum, its spike as the next layer's float
input and the torch path's float64 input (the recorded traces come on top)."""
RECORD_BYTES_PER_NEURON_STEP = 9
"""A recorded neuron-step: its spike (uint8), u and v (int32)."""
DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str) -> torch.device:
    """The torch device of ``device`` ("auto": CUDA when torch sees one, else the CPU)."""
    if device not in DEVICES:
        raise UserError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda: torch sees no CUDA device on this machine; use --device cpu or auto")
    return torch.device(device)


def conv_as_dense(weight: torch.Tensor, in_shape, stride, padding) -> torch.Tensor:
    """The (outputs, inputs) matrix of a convolution, outputs and inputs flattened channel-major
    as ``accumulate`` flattens them: one matrix product then gives the convolution's sums."""
    n_in = int(np.prod(in_shape))
    index = torch.arange(1, n_in + 1, dtype=torch.float64).reshape((1,) + tuple(in_shape))
    sources = F.unfold(index, tuple(weight.shape[2:]), stride=tuple(stride), padding=tuple(padding))[0]
    sources = sources.round().to(torch.int64)  # (taps, positions); 0 where a tap reads padding
    c_out, (taps, positions) = weight.shape[0], sources.shape
    rows = (torch.arange(c_out)[:, None, None] * positions + torch.arange(positions)).expand(c_out, taps, positions)
    columns = sources.expand(c_out, taps, positions)
    values = weight.reshape(c_out, taps, 1).expand(c_out, taps, positions)
    real = columns > 0
    dense = torch.zeros(c_out * positions, n_in, dtype=weight.dtype)
    dense.index_put_((rows[real], columns[real] - 1), values[real], accumulate=True)
    return dense


class CompiledLayer:
    """Per-layer tensors prepared once per run."""

    def __init__(self, program: Program, layer: Layer, device: torch.device = torch.device("cpu")):
        self.layer = layer
        self.binary_input = program.input_levels == 1
        groups = process_groups(program, layer)
        self.du = torch.as_tensor(layer.du, dtype=torch.int64)
        self.dv = torch.as_tensor(layer.dv, dtype=torch.int64)
        self.vth = torch.as_tensor(layer.vth, dtype=torch.int64) << 6
        mant = torch.as_tensor(layer.bias_mant, dtype=torch.int64)
        self.bias = wrap_int32(mant << torch.as_tensor(layer.bias_exp, dtype=torch.int64))
        self.u_decays = bool(np.any(layer.du != DECAY_MAX))
        self.subtract = layer.reset == "subtract"
        self.feed, self.recurrent = [], []
        input_bound = 0.0
        self.constant_input = None  # a_in of the current bias, the same every step
        constant = np.zeros(layer.size, dtype=np.int64)
        if layer.has_current_bias:
            held = lava_weights(current_bias_synapses(layer), groups, layer.shape)[:, 0]
            exp = layer.current_bias_exp.astype(np.int64)
            constant = np.where(exp > 0, held << np.maximum(exp, 0), held >> np.maximum(-exp, 0))
            self.constant_input = wrap_int32(torch.as_tensor(constant, dtype=torch.int64))
            input_bound += float(np.abs(constant).max()) + 1
        # On a GPU every sum is float64: exact whatever algorithm or precision mode a library picks.
        float_type = torch.float64 if device.type != "cpu" else torch.float32
        for syn in program.incoming(layer.name):
            w = lava_weights(syn, groups, layer.shape)
            in_shape = program.shape_of(syn.source)
            max_in = program.input_levels if syn.source == INPUT else 1
            bound = np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max() * max_in if w.size else 0
            dtype = float_type if bound < FLOAT32_EXACT else torch.float64
            exp = torch.as_tensor(syn.weight_exp, dtype=torch.int64)
            if syn.kind == "conv":
                exp = exp.reshape(layer.shape[0], -1)[:, 0].repeat_interleave(layer.size // layer.shape[0])
            entry = (syn, torch.as_tensor(w, dtype=dtype), in_shape, exp)
            (self.recurrent if syn.recurrent else self.feed).append(entry)
            input_bound += float(bound) * 2.0 ** int(syn.weight_exp.max()) + 1
        # u accumulates at most a_in * 64 * 4096 / (du + 1); below 2^23 nothing ever wraps
        current_bound = input_bound * 64 * DECAY_UNITY / (int(layer.du.min()) + 1)
        self.exact_path = current_bound >= STATE_WRAP or not layer.size
        if self.constant_input is not None and not self.exact_path:
            self.constant_input = self.constant_input.to(torch.float64)
        self.vth_f = self.vth.to(torch.float64)
        self.bias_f = self.bias.to(torch.float64)
        self.dv_keep = (DECAY_UNITY - self.dv).to(torch.float64) / DECAY_UNITY
        self.du_keep = (DECAY_MAX - self.du).to(torch.float64) / DECAY_UNITY
        if device.type == "cpu":
            self.kernel_constant = wrap_int32(torch.as_tensor(constant, dtype=torch.int64)).numpy()
            self.kernel_arrays = tuple(t.numpy() for t in (self.du, self.dv, self.vth, self.bias))
            self.fan_out = None  # built on first use by the event path
            if len(self.feed) == 1:
                syn, weight, in_shape, exp = self.feed[0]
                self.kernel_exp = torch.broadcast_to(exp, (layer.size,)).contiguous().numpy()
                dense_entries = layer.size * int(np.prod(in_shape))
                self.dense_conv = syn.kind == "conv" and dense_entries <= min(
                    DENSE_CONV_ENTRIES, 4 * layer.size * weight[0].numel())
                self.product = None  # the kernel path's matrix, built on first use
        else:
            self._to(device)

    def _to(self, device: torch.device) -> None:
        for name in ("du", "dv", "vth", "bias", "constant_input", "vth_f", "bias_f", "dv_keep", "du_keep"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        self.feed = [(syn, w.to(device), shape, exp.to(device)) for syn, w, shape, exp in self.feed]
        self.recurrent = [(syn, w.to(device), shape, exp.to(device)) for syn, w, shape, exp in self.recurrent]

    def synaptic_input(self, entry, x: torch.Tensor) -> torch.Tensor:
        """a_in from source activity x (rows, source size): accumulate, shift, int32 channel.

        Exact path: int64 with the int32 wrap. Fast path: float64, where every
        value is an integer below 2^53, so the same numbers without the wrap
        the bound analysis proved unnecessary.
        """
        syn, weight, in_shape, exp = entry
        total = torch.round(accumulate(syn.kind, weight, x.to(weight.dtype), in_shape, syn.stride, syn.padding))
        if not self.exact_path:
            return torch.floor(total.to(torch.float64) * torch.pow(2.0, exp.to(torch.float64)))
        total = total.to(torch.int64)
        shifted = torch.where(exp > 0, total << exp.clamp(min=0), total >> (-exp).clamp(min=0))
        return wrap_int32(shifted)

    def feed_input(self, acts: dict, b: int) -> torch.Tensor:
        """a_in of the feed-forward synapses and the current bias, (samples, steps or 1, neurons):
        one step where every source is an input held for all steps."""
        combine = (lambda a, c: wrap_int32(a + c)) if self.exact_path else torch.add
        a_ff = None
        for entry in self.feed:
            source = acts[entry[0].source]
            a_in = self.synaptic_input(entry, source.reshape(-1, source.shape[2])).reshape(b, source.shape[1], -1)
            a_ff = a_in if a_ff is None else combine(a_ff, a_in)
        return a_ff if self.constant_input is None else combine(a_ff, self.constant_input)

    def kernel_input(self, acts: dict, b: int):
        """(sums, exponent, constant) for ``kernel.lif_layer``: the single feed's raw sums, or every
        feed's a_in already combined (exponent 0, constant 0)."""
        if len(self.feed) != 1:
            zeros = np.zeros(self.layer.size, dtype=np.int64)
            return (self.feed_input(acts, b).to(torch.float64).numpy(),), zeros, zeros
        syn, weight, in_shape, _ = self.feed[0]
        if self.product is None:
            self.product = conv_as_dense(weight, in_shape, syn.stride, syn.padding) if self.dense_conv else weight
        x = acts[syn.source]
        rows = x.reshape(-1, x.shape[2]).to(weight.dtype)
        kind = "dense" if self.dense_conv else syn.kind
        total = accumulate(kind, self.product, rows, in_shape, syn.stride, syn.padding)
        return (total.reshape(b, x.shape[1], -1).numpy(),), self.kernel_exp, self.kernel_constant

    def events(self, acts: dict, activity: dict) -> bool:
        """Whether to sum the single feed event by event: when that costs at most ``EVENT_WORK``
        times the multiply-accumulates of its matrix product (from the nonzero values per sample and
        step the batch's ``activity`` counted), or in all below ``SMALL_EVENT_WORK``. The
        fan-out matrix must be small enough to hold and the sums fit float32 (hence int32) exactly."""
        if len(self.feed) != 1 or self.feed[0][1].dtype != torch.float32:
            return False
        syn, weight, in_shape, _ = self.feed[0]
        if self.layer.size * int(np.prod(in_shape)) > FAN_OUT_ENTRIES:
            return False
        per_neuron = int(np.prod(in_shape)) if syn.kind == "dense" or self.dense_conv else weight[0].numel()
        macs = self.layer.size * per_neuron
        samples, rows = acts[syn.source].shape[0], acts[syn.source].shape[:2].numel()
        source = activity[syn.source]
        work = int(source.spike_counts.sum()) / (samples * len(source.spikes_per_step)) * self.layer.size
        return work <= EVENT_WORK * macs or rows * work <= SMALL_EVENT_WORK

    def event_input(self, acts: dict):
        """(source activity, fan-out, whether the source is binary), exponent and constant for
        ``kernel.lif_layer_events``. The fan-out is int16, which holds every weight Lava holds
        (8 bits, see ``lava_weights``) in half the bytes of int32, with the zero last row the kernel
        pads its passes with."""
        syn, weight, in_shape, _ = self.feed[0]
        if self.fan_out is None:
            n_in = int(np.prod(in_shape))
            fan_out = np.zeros((n_in + 1, self.layer.size), dtype=np.int16)
            if syn.kind == "dense":
                fan_out[:n_in] = weight.T.numpy()
            else:
                conv_fan_out(weight.to(torch.int32).numpy(), *in_shape[1:], *self.layer.shape[1:], *syn.stride,
                             *syn.padding, fan_out)
            self.fan_out = fan_out  # set once whole: another thread's run may share these layers
        binary = syn.source != INPUT or self.binary_input
        return (acts[syn.source].numpy(), self.fan_out, binary), self.kernel_exp, self.kernel_constant


def step_neurons(cl: CompiledLayer, u, v, a_in):
    """One Loihi LIF time step; returns (u, v, spikes). All tensors int64."""
    if cl.u_decays:
        prod = u * (DECAY_MAX - cl.du)
        decayed = torch.sign(prod) * (prod.abs() >> 12)
    else:
        decayed = torch.zeros_like(u)
    current = wrap_int32(decayed + wrap_int32(a_in << 6))
    u = torch.where(current > STATE_WRAP, current - 2 * STATE_WRAP, current)
    u = torch.where(u <= -STATE_WRAP, current + 2 * STATE_WRAP, u)
    prod = v * (DECAY_UNITY - cl.dv)
    decayed_v = torch.sign(prod) * (prod.abs() >> 12)
    v = torch.clamp(wrap_int32(decayed_v + u + cl.bias), -(STATE_WRAP - 1), STATE_WRAP - 1)
    spikes = v > cl.vth
    v = torch.where(spikes, v - cl.vth if cl.subtract else torch.zeros_like(v), v)
    return u, v, spikes


def step_neurons_fast(cl: CompiledLayer, u, v, a_in):
    """The same step for layers whose current provably stays inside 24 bits: float64, in place.

    Every value is an integer below 2^36 and (4096 - dv) / 4096 is a dyadic
    fraction, so ``trunc(v * ((4096 - dv) / 4096))`` is exactly Loihi's
    sign-magnitude shift.
    """
    if cl.u_decays:
        u = u.mul_(cl.du_keep).trunc_().add_(a_in, alpha=64)
    else:
        u = a_in * 64
    v = v.mul_(cl.dv_keep).trunc_().add_(u).add_(cl.bias_f).clamp_(-(STATE_WRAP - 1), STATE_WRAP - 1)
    spikes = v > cl.vth_f
    if cl.subtract:
        return u, torch.where(spikes, v - cl.vth_f, v), spikes
    return u, v.masked_fill_(spikes, 0.0), spikes


_COMPILED = weakref.WeakKeyDictionary()
"""program -> (fingerprint of its contents, device, its CompiledLayers): the last preparation."""


def fingerprint(program: Program) -> bytes:
    """A digest of everything ``CompiledLayer`` reads from ``program``: its I/O contract and every
    field of every layer and synapse, arrays by dtype, shape and bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((program.input_shape, program.input_levels, program.steps, program.output,
                        program.readout)).encode())
    for item in (*program.layers, *program.synapses):
        for f in dataclasses.fields(item):
            value = getattr(item, f.name)
            if isinstance(value, np.ndarray):
                digest.update(f"{f.name} {value.dtype.str} {value.shape}".encode())
                digest.update(np.ascontiguousarray(value).data)
            else:
                digest.update(f"{f.name} {value!r}".encode())
    return digest.digest()


def compiled_layers(program: Program, device: torch.device) -> list[CompiledLayer]:
    """The program's CompiledLayers, reused while its contents are unchanged: a program's arrays
    can be edited in place between runs, so the cache is keyed by their digest, not by identity.
    Repeated runs of one program (batches, sweeps, the board server) skip rebuilding the matrices."""
    key = fingerprint(program)
    cached = _COMPILED.get(program)
    if cached is not None and cached[0] == key and cached[1] == device:
        return cached[2]
    compiled = [CompiledLayer(program, layer, device) for layer in program.layers]
    _COMPILED[program] = (key, device, compiled)
    return compiled


NEURON_PATHS = ("kernel", "torch")


def run(program: Program, inputs: np.ndarray, record: bool = False, batch_size: int = 256,
        progress: str | None = None, neurons: str = "kernel", device: str = "cpu") -> RunResult:
    """Run ``inputs`` (samples, *input_shape) integers held for every step, or
    (samples, steps, *input_shape) per step, through the program.

    ``neurons``: "kernel" updates each feed-forward layer's neurons over all
    steps in one compiled pass; "torch" steps them with tensor operations
    (the reference the kernel is tested against). Both give the same integers.
    ``device``: "cpu", "cuda" or "auto" (CUDA when torch sees one); on CUDA
    every layer takes the torch path on the device, with the same integers.
    Batches shrink below ``batch_size`` where a program's activity would
    exceed ``BATCH_MEMORY``.
    """
    if neurons not in NEURON_PATHS:
        raise ValueError(f"neurons must be one of {NEURON_PATHS}, got {neurons!r}")
    target = resolve_device(device)
    inputs = np.asarray(inputs)
    program.check_inputs(inputs)
    compiled = compiled_layers(program, target)
    neuron_steps = program.steps * sum(layer.size for layer in program.layers)
    per_sample = neuron_steps * (BYTES_PER_NEURON_STEP + (RECORD_BYTES_PER_NEURON_STEP if record else 0))
    batch_size = max(1, min(batch_size, BATCH_MEMORY // max(per_sample, 1)))
    last_use = {}
    for i, cl in enumerate(compiled):
        for entry in cl.feed:
            last_use[entry[0].source] = i
    parts = [_run_batch(program, compiled, inputs[batch], record, neurons, target, last_use)
             for batch in iterate_batches(len(inputs), batch_size, progress)]
    return RunResult.concatenate(parts)


def _run_batch(program: Program, compiled: list[CompiledLayer], x: np.ndarray, record: bool,
               neurons: str, device: torch.device, last_use: dict) -> RunResult:
    steps, b = program.steps, len(x)
    held = x.ndim == 1 + len(program.input_shape)
    x = x.reshape(b, 1 if held else steps, int(np.prod(program.input_shape)))
    nonzero = x != 0  # counted in numpy: a torch reduction this small waits on its thread pool
    per_neuron, per_step = nonzero.sum((0, 1), dtype=np.int64), nonzero.sum((0, 2), dtype=np.int64)
    x = torch.as_tensor(x, dtype=torch.float32)
    if held:
        per_neuron, per_step = per_neuron * steps, np.repeat(per_step, steps)
    activity = {INPUT: LayerActivity(per_neuron, per_step)}
    acts = {INPUT: x.to(device)}
    trains, us, vs = {}, {}, {}
    readout = None
    for i, cl in enumerate(compiled):
        name = cl.layer.name
        if neurons == "kernel" and not cl.recurrent and device.type == "cpu" and cl.events(acts, activity):
            spikes, counts, u_trace, v_trace, v = _kernel_steps(cl, *cl.event_input(acts), steps, record,
                                                                lif_layer_events)
        elif neurons == "kernel" and not cl.recurrent and device.type == "cpu":
            spikes, counts, u_trace, v_trace, v = _kernel_steps(cl, *cl.kernel_input(acts, b), steps, record)
        else:
            spikes, counts, u_trace, v_trace, v = _torch_steps(cl, cl.feed_input(acts, b), steps, record)
        acts[name] = spikes
        activity[name] = counts
        for source in [s for s, last in last_use.items() if last == i]:
            del acts[source]
        if record:
            trains[name] = spikes.cpu().numpy().astype(np.uint8)
            us[name], vs[name] = u_trace, v_trace
        if name == program.output:
            if program.readout == "spike_count":
                readout = spikes.cpu().numpy().sum(1, dtype=np.float64)
            else:
                readout = v.to(torch.float64).cpu().numpy() / cl.layer.v_scale
    return RunResult(output=readout, activity=activity, samples=b, steps=steps,
                     trains=trains, u=us, v=vs)


def _torch_steps(cl: CompiledLayer, a_ff: torch.Tensor, steps: int, record: bool):
    """The neuron update step by step in torch: the reference path, the one recurrent layers take,
    and the one on a GPU. Returns (spikes as floats, activity, u and v traces, final v)."""
    b, n = a_ff.shape[0], cl.layer.size
    a_ff = a_ff.expand(b, steps, n)
    combine = (lambda a, c: wrap_int32(a + c)) if cl.exact_path else torch.add
    step = step_neurons if cl.exact_path else step_neurons_fast
    dtype, device = a_ff.dtype, a_ff.device
    u = torch.zeros(b, n, dtype=dtype, device=device)
    v = torch.zeros(b, n, dtype=dtype, device=device)
    spikes = torch.zeros(b, steps, n, dtype=torch.bool, device=device)
    u_trace = torch.zeros(b, steps, n, dtype=torch.int32, device=device) if record else None
    v_trace = torch.zeros(b, steps, n, dtype=torch.int32, device=device) if record else None
    for t in range(steps):
        a_in = a_ff[:, t]
        if cl.recurrent and t > 0:
            prev = spikes[:, t - 1].to(torch.float32)
            for entry in cl.recurrent:
                a_in = combine(a_in, cl.synaptic_input(entry, prev))
        u, v, spikes[:, t] = step(cl, u, v, a_in)
        if record:
            u_trace[:, t], v_trace[:, t] = u.to(torch.int32), v.to(torch.int32)
    counts = LayerActivity(spikes.sum((0, 1)).cpu().numpy().astype(np.int64),
                           spikes.sum((0, 2)).cpu().numpy().astype(np.int64))
    traces = (u_trace.cpu().numpy(), v_trace.cpu().numpy()) if record else (None, None)
    return spikes.to(torch.float32), counts, *traces, v


def _kernel_steps(cl: CompiledLayer, sums: tuple, exp: np.ndarray, constant: np.ndarray, steps: int,
                  record: bool, kernel=lif_layer):
    """The neuron update of all steps in one compiled pass, same integers: ``kernel.lif_layer`` from
    ``sums`` = (synaptic sums,), or ``kernel.lif_layer_events`` from (source activity, fan-out)."""
    b, n = sums[0].shape[0], cl.layer.size
    spikes = np.empty((b, steps, n), dtype=np.float32)
    neuron_counts, step_counts = np.zeros(n, dtype=np.int64), np.zeros(steps, dtype=np.int64)
    trace_shape = (b, steps, n) if record else (0, 0, 0)
    u_trace, v_trace = np.empty(trace_shape, dtype=np.int32), np.empty(trace_shape, dtype=np.int32)
    v_end = np.empty((b, n), dtype=np.int64)
    kernel(*sums, exp, constant, *cl.kernel_arrays, cl.subtract, cl.u_decays, spikes, neuron_counts,
           step_counts, u_trace, v_trace, v_end, record)
    traces = (u_trace, v_trace) if record else (None, None)
    return torch.from_numpy(spikes), LayerActivity(neuron_counts, step_counts), *traces, torch.from_numpy(v_end)
