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
"""

from __future__ import annotations

import numpy as np
import torch

from targets.results import LayerActivity, RunResult
from targets.batching import iterate_batches
from targets.loihi2.kernel import lif_layer
from toolchain.synaptic import accumulate
from toolchain.errors import UserError
from toolchain.ir import INPUT
from toolchain.program import Layer, Program, Synapses

STATE_MAX = 2**23
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
        block = original[index]
        if block.min() >= 0:
            sign, mixed = 1, 0
        elif block.max() <= 0:
            sign, mixed = -1, 0
        else:
            sign, mixed = 1, 1
        block = np.clip(sign * block, -256 * mixed, 255)
        drop = 8 - syn.weight_bits + mixed
        held = sign * ((block >> drop) << drop)
        if np.any(held_by_a_process[index] & np.any((w[index] != held).reshape(len(index), -1), axis=1)):
            raise UserError(f"synapses {syn.name}: neuron groups that share a channel hold different kernels "
                            "after Lava's per-process clip and truncation; use weights on the symmetric grid")
        held_by_a_process[index] = True
        w[index] = held
    return w


class _CompiledLayer:
    """Per-layer tensors prepared once per run."""

    def __init__(self, program: Program, layer: Layer):
        self.layer = layer
        groups = process_groups(program, layer)
        self.du = torch.as_tensor(layer.du, dtype=torch.int64)
        self.dv = torch.as_tensor(layer.dv, dtype=torch.int64)
        self.vth = torch.as_tensor(layer.vth, dtype=torch.int64) << 6
        mant = torch.as_tensor(layer.bias_mant, dtype=torch.int64)
        self.bias = wrap_int32(mant << torch.as_tensor(layer.bias_exp, dtype=torch.int64))
        self.u_decays = bool(np.any(layer.du != 4095))
        self.subtract = layer.reset == "subtract"
        self.feed, self.recurrent = [], []
        input_bound = 0.0
        self.constant_input = None  # a_in of the current bias, the same every step
        if layer.has_current_bias:
            held = lava_weights(current_bias_synapses(layer), groups, layer.shape)[:, 0]
            exp = layer.current_bias_exp.astype(np.int64)
            constant = np.where(exp > 0, held << np.maximum(exp, 0), held >> np.maximum(-exp, 0))
            self.constant_input = wrap_int32(torch.as_tensor(constant, dtype=torch.int64))
            input_bound += float(np.abs(constant).max()) + 1
        for syn in program.incoming(layer.name):
            w = lava_weights(syn, groups, layer.shape)
            in_shape = program.shape_of(syn.source)
            max_in = program.input_levels if syn.source == INPUT else 1
            bound = np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max() * max_in if w.size else 0
            dtype = torch.float32 if bound < FLOAT32_EXACT else torch.float64
            exp = torch.as_tensor(syn.weight_exp, dtype=torch.int64)
            if syn.kind == "conv":
                exp = exp.reshape(layer.shape[0], -1)[:, 0].repeat_interleave(layer.size // layer.shape[0])
            entry = (syn, torch.as_tensor(w, dtype=dtype), in_shape, exp)
            (self.recurrent if syn.recurrent else self.feed).append(entry)
            input_bound += float(bound) * 2.0 ** int(syn.weight_exp.max()) + 1
        # u accumulates at most a_in * 64 * 4096 / (du + 1); below 2^23 nothing ever wraps
        current_bound = input_bound * 64 * 4096 / (int(layer.du.min()) + 1)
        self.exact_path = current_bound >= STATE_MAX or not layer.size
        if self.constant_input is not None and not self.exact_path:
            self.constant_input = self.constant_input.to(torch.float64)
        self.vth_f = self.vth.to(torch.float64)
        self.bias_f = self.bias.to(torch.float64)
        self.dv_keep = (4096 - self.dv).to(torch.float64) / 4096
        self.du_keep = (4095 - self.du).to(torch.float64) / 4096

    def synaptic_input(self, entry, x: torch.Tensor) -> torch.Tensor:
        """a_in from source activity x (rows, source size): accumulate, shift, int32 channel.

        Exact path: int64 with the int32 wrap. Fast path: float64, where every
        value is an integer below 2^53, so the same numbers without the wrap
        the bound analysis proved unnecessary.
        """
        syn, weight, in_shape, exp = entry
        total = accumulate(syn.kind, weight, x.to(weight.dtype), in_shape, syn.stride, syn.padding)
        if not self.exact_path:
            return torch.floor(total.to(torch.float64) * torch.pow(2.0, exp.to(torch.float64)))
        total = torch.round(total).to(torch.int64)
        shifted = torch.where(exp > 0, total << exp.clamp(min=0), total >> (-exp).clamp(min=0))
        return wrap_int32(shifted)


def step_neurons(cl: _CompiledLayer, u, v, a_in):
    """One Loihi LIF time step; returns (u, v, spikes). All tensors int64."""
    if cl.u_decays:
        prod = u * (4095 - cl.du)
        decayed = torch.sign(prod) * (prod.abs() >> 12)
    else:
        decayed = torch.zeros_like(u)
    current = wrap_int32(decayed + wrap_int32(a_in << 6))
    u = torch.where(current > STATE_MAX, current - 2 * STATE_MAX, current)
    u = torch.where(u <= -STATE_MAX, current + 2 * STATE_MAX, u)
    prod = v * (4096 - cl.dv)
    decayed_v = torch.sign(prod) * (prod.abs() >> 12)
    v = torch.clamp(wrap_int32(decayed_v + u + cl.bias), -(STATE_MAX - 1), STATE_MAX - 1)
    spikes = v > cl.vth
    v = torch.where(spikes, v - cl.vth if cl.subtract else torch.zeros_like(v), v)
    return u, v, spikes


def step_neurons_fast(cl: _CompiledLayer, u, v, a_in):
    """The same step for layers whose current provably stays inside 24 bits: float64, in place.

    Every value is an integer below 2^36 and (4096 - dv) / 4096 is a dyadic
    fraction, so ``trunc(v * ((4096 - dv) / 4096))`` is exactly Loihi's
    sign-magnitude shift.
    """
    if cl.u_decays:
        u = u.mul_(cl.du_keep).trunc_().add_(a_in, alpha=64)
    else:
        u = a_in * 64
    v = v.mul_(cl.dv_keep).trunc_().add_(u).add_(cl.bias_f).clamp_(-(STATE_MAX - 1), STATE_MAX - 1)
    spikes = v > cl.vth_f
    if cl.subtract:
        return u, torch.where(spikes, v - cl.vth_f, v), spikes
    return u, v.masked_fill_(spikes, 0.0), spikes


NEURON_PATHS = ("kernel", "torch")


def run(program: Program, inputs: np.ndarray, record: bool = False, batch_size: int = 256,
        progress: str | None = None, neurons: str = "kernel") -> RunResult:
    """Run ``inputs`` (samples, *input_shape) integers held for every step, or
    (samples, steps, *input_shape) per step, through the program.

    ``neurons``: "kernel" updates each feed-forward layer's neurons over all
    steps in one compiled pass; "torch" steps them with tensor operations
    (the reference the kernel is tested against). Both give the same integers.
    """
    if neurons not in NEURON_PATHS:
        raise ValueError(f"neurons must be one of {NEURON_PATHS}, got {neurons!r}")
    inputs = np.asarray(inputs)
    if inputs.size and (inputs.min() < 0 or inputs.max() > program.input_levels
                        or not np.array_equal(inputs, np.round(inputs))):
        raise UserError(f"inputs must be integers in [0, {program.input_levels}] (the program's input levels)")
    compiled = [_CompiledLayer(program, layer) for layer in program.layers]
    parts = [_run_batch(program, compiled, inputs[batch], record, neurons)
             for batch in iterate_batches(len(inputs), batch_size, progress)]
    return RunResult.concatenate(parts)


def _run_batch(program: Program, compiled: list[_CompiledLayer], x: np.ndarray, record: bool,
               neurons: str) -> RunResult:
    steps, n_in = program.steps, int(np.prod(program.input_shape))
    b = len(x)
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() == 1 + len(program.input_shape):
        x = x.unsqueeze(1).expand(b, steps, *program.input_shape)
    acts = {INPUT: x.reshape(b * steps, n_in)}
    nonzero = (acts[INPUT] != 0).reshape(b, steps, n_in)
    activity = {INPUT: LayerActivity(nonzero.sum((0, 1)).numpy().astype(np.int64),
                                     nonzero.sum((0, 2)).numpy().astype(np.int64))}
    trains, us, vs = {}, {}, {}
    readout = None
    for cl in compiled:
        n = cl.layer.size
        dtype = torch.int64 if cl.exact_path else torch.float64
        combine = (lambda a, c: wrap_int32(a + c)) if cl.exact_path else torch.add
        a_ff = None
        for entry in cl.feed:
            a_in = cl.synaptic_input(entry, acts[entry[0].source])
            a_ff = a_in if a_ff is None else combine(a_ff, a_in)
        if cl.constant_input is not None:
            a_ff = combine(a_ff, cl.constant_input)
        a_ff = a_ff.reshape(b, steps, n)
        if neurons == "kernel" and not cl.recurrent:
            spikes, u_trace, v_trace, v = _kernel_steps(cl, a_ff, record)
        else:
            spikes, u_trace, v_trace, v = _torch_steps(cl, a_ff, record, combine, dtype)
        acts[cl.layer.name] = spikes.reshape(b * steps, n).to(torch.float32)
        activity[cl.layer.name] = LayerActivity(spikes.sum((0, 1)).numpy().astype(np.int64),
                                                spikes.sum((0, 2)).numpy().astype(np.int64))
        if record:
            trains[cl.layer.name] = spikes.numpy().astype(np.uint8)
            us[cl.layer.name], vs[cl.layer.name] = u_trace.numpy(), v_trace.numpy()
        if cl.layer.name == program.output:
            if program.readout == "spike_count":
                readout = spikes.sum(1).numpy().astype(np.float64)
            else:
                readout = v.to(torch.float64).numpy() / cl.layer.v_scale
    return RunResult(output=readout, activity=activity, samples=b, steps=steps,
                     trains=trains, u=us, v=vs)


def _torch_steps(cl: _CompiledLayer, a_ff: torch.Tensor, record: bool, combine, dtype):
    """The neuron update step by step in torch: the reference path, and the one recurrent layers take."""
    b, steps, n = a_ff.shape
    step = step_neurons if cl.exact_path else step_neurons_fast
    u = torch.zeros(b, n, dtype=dtype)
    v = torch.zeros(b, n, dtype=dtype)
    spikes = torch.zeros(b, steps, n, dtype=torch.bool)
    u_trace = torch.zeros(b, steps, n, dtype=torch.int32) if record else None
    v_trace = torch.zeros(b, steps, n, dtype=torch.int32) if record else None
    for t in range(steps):
        a_in = a_ff[:, t]
        if cl.recurrent and t > 0:
            prev = spikes[:, t - 1].to(torch.float32)
            for entry in cl.recurrent:
                a_in = combine(a_in, cl.synaptic_input(entry, prev))
        u, v, spikes[:, t] = step(cl, u, v, a_in)
        if record:
            u_trace[:, t], v_trace[:, t] = u.to(torch.int32), v.to(torch.int32)
    return spikes, u_trace, v_trace, v


def _kernel_steps(cl: _CompiledLayer, a_ff: torch.Tensor, record: bool):
    """The neuron update of all steps in one compiled pass (``kernel.lif_layer``), same integers."""
    b, steps, n = a_ff.shape
    spikes = np.empty((b, steps, n), dtype=np.bool_)
    trace_shape = (b, steps, n) if record else (0, 0, 0)
    u_trace, v_trace = np.empty(trace_shape, dtype=np.int32), np.empty(trace_shape, dtype=np.int32)
    v_end = np.empty((b, n), dtype=np.int64)
    lif_layer(a_ff.to(torch.int64).contiguous().numpy(), cl.du.numpy(), cl.dv.numpy(), cl.vth.numpy(),
              cl.bias.numpy(), cl.subtract, cl.u_decays, spikes, u_trace, v_trace, v_end, record)
    traces = (torch.from_numpy(u_trace), torch.from_numpy(v_trace)) if record else (None, None)
    return torch.from_numpy(spikes), *traces, torch.from_numpy(v_end)
