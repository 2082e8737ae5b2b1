"""The Loihi 2 neuron update of one layer over all time steps, compiled once with numba.

The torch path (``emulator.step_neurons``) pays a dozen tensor dispatches
per layer and step; this kernel runs the whole step loop of a layer for a
batch in one compiled pass. It starts no threads of its own, so it is safe
in forked sweep workers and in the board server's threads. It computes
exactly the integers of ``step_neurons`` (the tests compare both against
the independent per-neuron reference), and serves every layer whose input
does not depend on its own spikes of the same run (no recurrent synapses).
"""

from __future__ import annotations

import numba
import numpy as np

STATE_MAX = 2**23
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


@numba.njit(cache=True, nogil=True)
def lif_layer(a_in, du, dv, vth, bias, subtract, u_decays, spikes, u_trace, v_trace, v_end, record):
    """Run ``a_in`` (samples, steps, neurons) int64 through Loihi's LIF, writing every output array.

    ``vth`` is already shifted (``vth << 6``) and ``bias`` is ``bias_mant <<
    bias_exp`` wrapped into int32, as the emulator prepares them; ``subtract``
    resets by ``v - (vth << 6)`` instead of to zero. The traces are written
    only when ``record``.
    """
    samples, steps, neurons = a_in.shape
    for b in range(samples):
        for n in range(neurons):
            u = np.int64(0)
            v = np.int64(0)
            u_keep = 4095 - du[n]
            v_keep = 4096 - dv[n]
            threshold = vth[n]
            for t in range(steps):
                decayed = _decay(u, u_keep) if u_decays else np.int64(0)
                current = _wrap_int32(decayed + _wrap_int32(a_in[b, t, n] << 6))
                if current > STATE_MAX:
                    u = current - 2 * STATE_MAX
                elif current <= -STATE_MAX:
                    u = current + 2 * STATE_MAX
                else:
                    u = current
                v = _wrap_int32(_decay(v, v_keep) + u + bias[n])
                if v > STATE_MAX - 1:
                    v = np.int64(STATE_MAX - 1)
                elif v < -(STATE_MAX - 1):
                    v = np.int64(-(STATE_MAX - 1))
                fired = v > threshold
                if fired:
                    v = v - threshold if subtract else np.int64(0)
                spikes[b, t, n] = fired
                if record:
                    u_trace[b, t, n] = u
                    v_trace[b, t, n] = v
            v_end[b, n] = v
