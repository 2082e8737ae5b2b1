"""The Loihi 2 neuron update of one layer over all time steps, compiled once with numba.

The torch path (``emulator.step_neurons``) pays a dozen tensor dispatches
per layer and step; these kernels run the whole step loop of a layer for a
batch in one compiled pass, from the synaptic sums (or the source's spikes)
to the spikes the next layer multiplies and the activity counts. The
per-neuron loop writes no traces (they are copied after it when recorded),
so the compiler vectorises it: a conditional store in it kept it scalar.
They start no threads of their own, so they are safe in forked sweep
workers and in the board server's threads. They compute exactly the
integers of ``step_neurons`` (the tests compare both against the
independent per-neuron reference), and serve every layer whose input does
not depend on its own spikes of the same run (no recurrent synapses).
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
def _shifted(acc, exp, constant):
    """a_in << 6 from one integer synaptic sum: the weight exponent's shift, the int32 channel, the
    current bias added in int32, then the shift into u's scale, wrapped once more."""
    shifted = _wrap_int32(acc << exp if exp > 0 else acc >> -exp)
    return _wrap_int32(_wrap_int32(shifted + constant) << 6)


@numba.njit(inline="always")
def _shifted_input(total, exp, constant):
    """``_shifted`` of a float synaptic sum that holds an exact integer."""
    return _shifted(np.int64(np.rint(total)), exp, constant)


@numba.njit(inline="always")
def _step(b, t, a_in, u, v, u_keep, v_keep, vth, bias, subtract, u_decays, spikes, neuron_counts, u_trace,
          v_trace, record):
    """One step of every neuron of sample ``b`` from its a_in << 6; returns how many fired."""
    fired_in_step = 0
    for n in range(len(u)):
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
        for n in range(len(u)):
            u_trace[b, t, n] = u[n]
            v_trace[b, t, n] = v[n]
    return fired_in_step


@numba.njit(inline="always")
def _layer_state(neurons, du, dv):
    """A layer's state (u, v, a_in, all zero) and what of u and v each step keeps."""
    zeros = np.zeros(neurons, dtype=np.int64)
    return (zeros, zeros.copy(), zeros.copy(), DECAY_MAX - du.astype(np.int64),
            DECAY_UNITY - dv.astype(np.int64))


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
    u, v, a_in, u_keep, v_keep = _layer_state(neurons, du, dv)
    for b in range(samples):
        u[:] = 0
        v[:] = 0
        for t in range(steps):
            if t == 0 or not held:
                src = 0 if held else t
                for n in range(neurons):
                    a_in[n] = _shifted_input(total[b, src, n], exp[n], constant[n])
            step_counts[t] += _step(b, t, a_in, u, v, u_keep, v_keep, vth, bias, subtract, u_decays, spikes,
                                    neuron_counts, u_trace, v_trace, record)
        v_end[b] = v


EVENTS_PER_PASS = 4
"""Fan-out rows one pass over a layer's sums adds (unrolled in ``_event_sums``): each sum is
loaded and stored once per four events instead of once per event."""


@numba.njit(inline="always")
def _event_sums(row, fan_out, binary, active, value, total):
    """Into ``total``, the sums of ``row``'s nonzero inputs' values times their rows of ``fan_out``.

    The nonzero inputs are listed without a branch (a branch per input
    mispredicts on random spikes), padded to whole passes with the zero last
    row of ``fan_out``; a binary source adds its rows without multiplying.
    """
    count = 0
    for i in range(len(row)):
        active[count] = i
        value[count] = np.int32(row[i])
        count += row[i] != 0
    for k in range(count, count + EVENTS_PER_PASS):
        active[k] = len(row)
        value[k] = 0
    total[:] = 0
    for k in range(0, count, EVENTS_PER_PASS):
        w0, w1, w2, w3 = fan_out[active[k]], fan_out[active[k + 1]], fan_out[active[k + 2]], fan_out[active[k + 3]]
        if binary:
            for n in range(len(total)):
                total[n] += (np.int32(w0[n]) + np.int32(w1[n])) + (np.int32(w2[n]) + np.int32(w3[n]))
        else:
            c0, c1, c2, c3 = value[k], value[k + 1], value[k + 2], value[k + 3]
            for n in range(len(total)):
                total[n] += ((c0 * np.int32(w0[n]) + c1 * np.int32(w1[n]))
                             + (c2 * np.int32(w2[n]) + c3 * np.int32(w3[n])))


@numba.njit(cache=True, nogil=True)
def lif_layer_events(x, fan_out, binary, exp, constant, du, dv, vth, bias, subtract, u_decays, spikes,
                     neuron_counts, step_counts, u_trace, v_trace, v_end, record):
    """``lif_layer`` with the synaptic sums formed here, event by event: source activity ``x``
    (samples, steps or 1, inputs), float integers (0 or 1 where ``binary``), and ``fan_out``
    (inputs + 1, neurons), int16, the weights each input reaches and a last row of zeros,
    with every partial sum inside int32 (the emulator's bound).

    For sparse spikes this is a fraction of a matrix product's work, and the
    sums never leave the cache. All other arguments are those of
    ``lif_layer``.
    """
    samples, steps, neurons = spikes.shape
    held = x.shape[1] == 1
    total = np.zeros(neurons, dtype=np.int32)
    active = np.empty(x.shape[2] + EVENTS_PER_PASS, dtype=np.int64)
    value = np.empty(x.shape[2] + EVENTS_PER_PASS, dtype=np.int32)
    u, v, a_in, u_keep, v_keep = _layer_state(neurons, du, dv)
    for b in range(samples):
        u[:] = 0
        v[:] = 0
        for t in range(steps):
            if t == 0 or not held:
                _event_sums(x[b, 0 if held else t], fan_out, binary, active, value, total)
                for n in range(neurons):
                    a_in[n] = _shifted(np.int64(total[n]), exp[n], constant[n])
            step_counts[t] += _step(b, t, a_in, u, v, u_keep, v_keep, vth, bias, subtract, u_decays, spikes,
                                    neuron_counts, u_trace, v_trace, record)
        v_end[b] = v


@numba.njit(cache=True, nogil=True)
def conv_fan_out(weight, in_y, in_x, out_y, out_x, stride_y, stride_x, pad_y, pad_x, fan_out):
    """Write into ``fan_out`` (inputs, outputs), zeros, the weight each input of a convolution sends
    each output, both flattened channel-major: the event path's matrix in one pass over the taps.

    ``weight`` (out channels, in channels, kernel rows, kernel columns); the
    input map is (in channels, ``in_y``, ``in_x``), the output map (out
    channels, ``out_y``, ``out_x``).
    """
    c_out, c_in, k_y, k_x = weight.shape
    for c in range(c_in):  # row by row of ``fan_out``, so that its writes stay in the cache
        for y in range(in_y):
            for x in range(in_x):
                row = fan_out[(c * in_y + y) * in_x + x]
                for ky in range(k_y):
                    oy, rest_y = divmod(y + pad_y - ky, stride_y)
                    if rest_y == 0 and 0 <= oy < out_y:
                        for kx in range(k_x):
                            ox, rest_x = divmod(x + pad_x - kx, stride_x)
                            if rest_x == 0 and 0 <= ox < out_x:
                                for o in range(c_out):
                                    row[(o * out_y + oy) * out_x + ox] = weight[o, c, ky, kx]
