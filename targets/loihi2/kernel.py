"""The Loihi 2 neuron update of one layer over all time steps, compiled once with numba.

The torch path (``emulator.step_neurons``) pays a dozen tensor dispatches
per layer and step; this kernel runs the whole step loop of a layer for a
batch in one compiled pass, from the synaptic sums to the spikes the next
layer multiplies and the activity counts. It starts no threads of its own,
so it is safe in forked sweep workers and in the board server's threads. It
computes exactly the integers of ``step_neurons`` (the tests compare both
against the independent per-neuron reference), and serves every layer whose
input does not depend on its own spikes of the same run (no recurrent
synapses).
"""

from __future__ import annotations

import numba
import numpy as np

from toolchain.program import DECAY_MAX, DECAY_UNITY, STATE_BITS

STATE_WRAP = 2 ** (STATE_BITS - 1)
"""u wraps at +-2^23; v saturates one below."""
_INT32_SPAN = 2**32
_INT32_HALF = 2**31


@numba.njit(inline="always")
def _wrap_int32(x):
    return ((x + _INT32_HALF) & (_INT32_SPAN - 1)) - _INT32_HALF


@numba.njit(inline="always")
def _decay(x, keep):
    """sign(x * keep) * (|x * keep| >> 12): Loihi's sign-magnitude decay."""
    prod = x * keep
    return prod >> 12 if prod >= 0 else -((-prod) >> 12)


@numba.njit(inline="always")
def _shifted_input(total, exp, constant):
    """a_in << 6 from one synaptic sum: the weight exponent's shift, the int32 channel, the current
    bias added in int32, then the shift into u's scale, wrapped once more."""
    acc = np.int64(np.rint(total))
    shifted = _wrap_int32(acc << exp if exp > 0 else acc >> -exp)
    return _wrap_int32(_wrap_int32(shifted + constant) << 6)


@numba.njit(cache=True, nogil=True)
def lif_layer(total, exp, constant, du, dv, vth, bias, subtract, u_decays, spikes, neuron_counts, step_counts,
              u_trace, v_trace, v_end, record):
    """Run the synaptic sums ``total`` (samples, steps or 1, neurons), float, exact integers, through
    Loihi's LIF, writing every output array.

    ``total`` with one step is an input held for every step (its a_in is
    computed once per sample). Each neuron's sum is shifted by ``exp`` and
    ``constant`` (the current bias's a_in) is added in int32. ``vth`` is
    already shifted (``vth << 6``) and ``bias`` is ``bias_mant << bias_exp``
    wrapped into int32, as the emulator prepares them; ``subtract`` resets by
    ``v - (vth << 6)`` instead of to zero. ``spikes`` (samples, steps,
    neurons) receives 0.0 or 1.0, ready to be the next layer's input;
    ``neuron_counts`` and ``step_counts`` are incremented by the spikes. The
    traces are written only when ``record``.
    """
    samples, steps, neurons = spikes.shape
    held = total.shape[1] == 1
    u = np.zeros(neurons, dtype=np.int64)
    v = np.zeros(neurons, dtype=np.int64)
    a_in = np.zeros(neurons, dtype=np.int64)
    u_keep = DECAY_MAX - du.astype(np.int64)
    v_keep = DECAY_UNITY - dv.astype(np.int64)
    for b in range(samples):
        u[:] = 0
        v[:] = 0
        for t in range(steps):
            if t == 0 or not held:
                src = 0 if held else t
                for n in range(neurons):
                    a_in[n] = _shifted_input(total[b, src, n], exp[n], constant[n])
            fired_in_step = 0
            for n in range(neurons):
                decayed = _decay(u[n], u_keep[n]) if u_decays else np.int64(0)
                current = _wrap_int32(decayed + a_in[n])
                if current > STATE_WRAP:
                    un = current - 2 * STATE_WRAP
                elif current <= -STATE_WRAP:
                    un = current + 2 * STATE_WRAP
                else:
                    un = current
                vn = _wrap_int32(_decay(v[n], v_keep[n]) + un + bias[n])
                vn = min(max(vn, -(STATE_WRAP - 1)), STATE_WRAP - 1)
                fired = vn > vth[n]
                reset = vn - vth[n] if subtract else np.int64(0)
                vn = reset if fired else vn
                neuron_counts[n] += fired
                fired_in_step += fired
                spikes[b, t, n] = np.float32(fired)
                u[n] = un
                v[n] = vn
                if record:
                    u_trace[b, t, n] = un
                    v_trace[b, t, n] = vn
            step_counts[t] += fired_in_step
        v_end[b] = v
