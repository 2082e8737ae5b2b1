"""An independent, deliberately plain Loihi 2 reference: one neuron, one step at a time.

Written from lava-nc 0.10.0's PyLifResetModelBitAcc and PyDenseModelBitAcc
with Python integers (no numpy, no torch), so the vectorised emulator is
checked against code that shares nothing with it. Two Loihi 2 neuron
features beyond Lava's LIF are written from their definitions: a current
bias, which is an always-on input (1 every step) through one 8-bit Dense
synapse per neuron with its own exponent, and reset by subtraction
(v <- v - (vth << 6) on a spike instead of v <- 0).
"""

from __future__ import annotations


def _int32(x: int) -> int:
    return (x + 2**31) % 2**32 - 2**31


def _decay(x: int, factor: int) -> int:
    prod = x * factor
    magnitude = abs(prod) >> 12
    return magnitude if prod >= 0 else -magnitude


def _held_weight(w: int, bits: int, block: list[int]) -> int:
    """Lava's per-process sign mode, 8-bit clip and truncation to ``bits``."""
    if min(block) >= 0:
        sign, mixed = 1, 0
    elif max(block) <= 0:
        sign, mixed = -1, 0
    else:
        sign, mixed = 1, 1
    w = min(max(sign * w, -256 * mixed), 255)
    drop = 8 - bits + mixed
    return sign * ((w >> drop) << drop)


def _shifted(acc: int, exp: int) -> int:
    return _int32(acc << exp if exp > 0 else acc >> -exp)


def run_dense_chain(layers, inputs):
    """``layers``: list of dicts with dense integer ``weights`` (rows = neurons), ``weight_exp``,
    ``bits``, optional ``recurrent`` weights/exp, ``du``, ``dv``, ``vth`` (one group per layer),
    per-neuron ``bias_mant``, ``bias_exp``, optional per-neuron ``current_bias`` with one
    ``current_bias_exp``, optional ``reset`` ("zero" or "subtract"). ``inputs``: per sample,
    per step, a list of input values. Returns per layer: spikes, u, v as [sample][step][neuron]."""
    out = []
    for sample in inputs:
        source = sample
        per_layer = []
        for layer in layers:
            n = len(layer["weights"])
            flat = [w for row in layer["weights"] for w in row]
            weights = [[_held_weight(w, layer["bits"], flat) for w in row] for row in layer["weights"]]
            constant = [0] * n
            if "current_bias" in layer:
                held = [_held_weight(w, 8, layer["current_bias"]) for w in layer["current_bias"]]
                constant = [_shifted(h * 1, layer["current_bias_exp"]) for h in held]
            subtract = layer.get("reset", "zero") == "subtract"
            rec = layer.get("recurrent")
            if rec is not None:
                rflat = [w for row in rec for w in row]
                rec = [[_held_weight(w, layer["bits"], rflat) for w in row] for row in rec]
            u, v = [0] * n, [0] * n
            spikes, us, vs = [], [], []
            previous = [0] * n
            for t, x in enumerate(source):
                s_t, u_t, v_t = [], [], []
                for i in range(n):
                    acc = sum(weights[i][j] * x[j] for j in range(len(x)))
                    e = layer["weight_exp"]
                    a_in = _int32(acc << e if e > 0 else acc >> -e)
                    if rec is not None and t > 0:
                        racc = sum(rec[i][j] * previous[j] for j in range(n))
                        re = layer["recurrent_exp"]
                        a_in = _int32(a_in + _int32(racc << re if re > 0 else racc >> -re))
                    a_in = _int32(a_in + constant[i])
                    cur = _int32(_decay(u[i], 4096 - (layer["du"] + 1)) + _int32(a_in << 6))
                    if cur > 2**23:
                        new_u = cur - 2**24
                    elif cur <= -2**23:
                        new_u = cur + 2**24
                    else:
                        new_u = cur
                    u[i] = new_u
                    bias = layer["bias_mant"][i] << layer["bias_exp"][i]
                    volt = _int32(_decay(v[i], 4096 - layer["dv"]) + u[i] + bias)
                    volt = max(-(2**23 - 1), min(2**23 - 1, volt))
                    fired = volt > (layer["vth"] << 6)
                    v[i] = (volt - (layer["vth"] << 6) if subtract else 0) if fired else volt
                    s_t.append(int(fired))
                    u_t.append(u[i])
                    v_t.append(v[i])
                spikes.append(s_t)
                us.append(u_t)
                vs.append(v_t)
                previous = s_t
            per_layer.append((spikes, us, vs))
            source = spikes
        out.append(per_layer)
    return out
