"""What a Lava Dense or Conv process holds of the weights it is given.

Lava (``lava.utils.weightutils``) picks one sign mode per process: excitatory
when every weight is >= 0, inhibitory when every weight is <= 0, mixed
otherwise. It clips to 8 bits (0..255 of the magnitude; -256..255 when mixed)
and floors away the low bits that ``weight_bits`` does not keep (one more when
mixed, for the sign). The emulator and the netx writer both need exactly this.
"""

from __future__ import annotations

import numpy as np


def held_weights(weights: np.ndarray, weight_bits: int) -> np.ndarray:
    """``weights`` (one process's block) as that process holds them, int64."""
    weights = np.asarray(weights, dtype=np.int64)
    if weights.min() >= 0:
        sign, mixed = 1, 0
    elif weights.max() <= 0:
        sign, mixed = -1, 0
    else:
        sign, mixed = 1, 1
    drop = 8 - weight_bits + mixed
    return sign * ((np.clip(sign * weights, -256 * mixed, 255) >> drop) << drop)
