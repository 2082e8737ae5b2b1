"""Who feeds whom through one synapse connection, counted without expanding synapses.

Mapping a program onto cores needs four counts per connection (source: a
layer or the host input; target: a layer), all from the nonzero weights:

- synapses per target neuron (what its synapse memory holds),
- distinct source neurons feeding a range of target neurons (the fan-in
  axons of a core holding that range),
- for each source neuron, the target-layer cores it reaches (its fan-out
  axons, and the spike messages it sends),
- synaptic operations per target neuron for a run's spike counts.

The target layer of a convolution may be tiled by whole columns (see
``toolchain.mapping``); ``destinations`` then counts cores by column.

Dense connections are counted exactly from the nonzero pattern. A
convolution's neuron needs only the inputs in its receptive field; we bound
that field by the box spanned by the kernel's nonzero taps, so conv fan-in
and fan-out counts are conservative: never below the exact count, and equal
to it when every tap is nonzero, the stride is at most the kernel size and
a core's range lies in one output row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from toolchain.program import Synapses


class Wiring:
    """The nonzero structure of ``synapses`` between populations of the given (C, H, W) or (N,) shapes."""

    def __init__(self, synapses: Synapses, source_shape: tuple[int, ...], target_shape: tuple[int, ...]):
        self.synapses = synapses
        self.source_size = int(np.prod(source_shape))
        self.target_size = int(np.prod(target_shape))
        if synapses.kind == "dense":
            self.by_target = sp.csr_matrix(synapses.weights != 0, dtype=np.float64)
            return
        self.kernel_nonzero = synapses.weights != 0
        self.source_shape, self.target_shape = tuple(source_shape), tuple(target_shape)
        self.channel_links = self.kernel_nonzero.any(axis=(2, 3))  # (C_out, C_in)
        taps = self.kernel_nonzero.any(axis=(0, 1))
        rows, cols = np.flatnonzero(taps.any(axis=1)), np.flatnonzero(taps.any(axis=0))
        self.empty = rows.size == 0
        self.tap_rows = (int(rows.min()), int(rows.max())) if rows.size else (0, -1)
        self.tap_cols = (int(cols.min()), int(cols.max())) if cols.size else (0, -1)

    # -- per target neuron ---------------------------------------------------

    def synapses_per_target(self) -> np.ndarray:
        """Nonzero synapses of each target neuron (conv: taps that land inside the input)."""
        if self.synapses.kind == "dense":
            return np.diff(self.by_target.indptr).astype(np.int64)
        (_, h_out, w_out), (_, h_in, w_in) = self.target_shape, self.source_shape
        taps = self.kernel_nonzero.sum(axis=1)  # (C_out, kh, kw)
        inside_y = self._inside(taps.shape[1], h_out, h_in, 0)
        inside_x = self._inside(taps.shape[2], w_out, w_in, 1)
        return np.einsum("okl,ky,lx->oyx", taps, inside_y, inside_x).reshape(-1).astype(np.int64)

    def kernel_nonzero_per_channel(self) -> np.ndarray:
        """Nonzero kernel weights of each output channel of a convolution (stored once with shared weights)."""
        return self.kernel_nonzero.sum(axis=(1, 2, 3)).astype(np.int64)

    def synaptic_ops_per_target(self, source_counts: np.ndarray) -> np.ndarray:
        """Synaptic operations each target neuron receives: source events times nonzero synapses."""
        counts = np.asarray(source_counts, dtype=np.float64)
        if self.synapses.kind == "dense":
            return self.by_target @ counts
        (c_out, h_out, w_out), (c_in, h_in, w_in) = self.target_shape, self.source_shape
        (sy, sx), (py, px) = self.synapses.stride, self.synapses.padding
        padded = np.pad(counts.reshape(c_in, h_in, w_in), ((0, 0), (py, py), (px, px)))
        mask = self.kernel_nonzero.astype(np.float64)
        ops = np.zeros((c_out, h_out * w_out))
        for ky in range(mask.shape[2]):
            for kx in range(mask.shape[3]):
                window = padded[:, ky:ky + sy * (h_out - 1) + 1:sy, kx:kx + sx * (w_out - 1) + 1:sx]
                ops += mask[:, :, ky, kx] @ window.reshape(c_in, -1)
        return ops.reshape(-1)

    def _inside(self, taps: int, out_size: int, in_size: int, axis: int) -> np.ndarray:
        """(taps, out_size) booleans: does tap k of output position i read a real (unpadded) input?"""
        stride, pad = self.synapses.stride[axis], self.synapses.padding[axis]
        position = np.arange(out_size)[None, :] * stride - pad + np.arange(taps)[:, None]
        return (position >= 0) & (position < in_size)

    # -- per range of target neurons (one core) ------------------------------

    def fan_in(self, start: int, stop: int) -> int:
        """Distinct source neurons with a nonzero synapse onto target neurons [start, stop)."""
        if self.synapses.kind == "dense":
            indptr = self.by_target.indptr
            sources = self.by_target.indices[indptr[start]:indptr[stop]]
            return int(np.count_nonzero(np.bincount(sources, minlength=self.source_size)))
        if self.empty:
            return 0
        (_, h_out, w_out), (_, h_in, w_in) = self.target_shape, self.source_shape
        plane = h_out * w_out
        first_channel, first = divmod(start, plane)
        last_channel, last = divmod(stop - 1, plane)
        channels = int(np.count_nonzero(self.channel_links[first_channel:last_channel + 1].any(axis=0)))
        if first_channel != last_channel:  # spans a channel boundary: every output row and column
            rows, cols = (0, h_out - 1), (0, w_out - 1)
        else:
            (y0, x0), (y1, x1) = divmod(first, w_out), divmod(last, w_out)
            rows = (y0, y1)
            cols = (x0, x1) if y0 == y1 else (0, w_out - 1)
        return channels * self._input_span(rows, self.tap_rows, h_in, 0) * self._input_span(cols, self.tap_cols, w_in, 1)

    def _input_span(self, outputs: tuple[int, int], taps: tuple[int, int], in_size: int, axis: int) -> int:
        stride, pad = self.synapses.stride[axis], self.synapses.padding[axis]
        lo = max(outputs[0] * stride - pad + taps[0], 0)
        hi = min(outputs[1] * stride - pad + taps[1], in_size - 1)
        return max(hi - lo + 1, 0)

    # -- per source neuron ---------------------------------------------------

    def destinations(self, core_starts: np.ndarray, by_columns: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The target-layer cores each source neuron reaches, as intervals.

        ``core_starts``: first target neuron of each core of the target layer
        (ascending, starting at 0), in its order (``by_columns``: tiled by
        whole columns, a convolution's target only). Returns (source,
        first_core, last_core) arrays, sorted by source, non-overlapping per
        source.
        """
        core_starts = np.asarray(core_starts)
        if by_columns:
            if self.synapses.kind != "conv":
                raise ValueError("only a convolution's target can be tiled by columns")
            return self._column_destinations(core_starts)
        core_of = np.repeat(np.arange(core_starts.size), np.diff(np.append(core_starts, self.target_size)))
        if self.synapses.kind == "dense":
            by_source = self.by_target.T.tocsr()
            by_source.sort_indices()
            source = np.repeat(np.arange(self.source_size), np.diff(by_source.indptr))
            core = core_of[by_source.indices]
            new = np.ones(core.size, dtype=bool)
            new[1:] = (source[1:] != source[:-1]) | (core[1:] != core[:-1])
            return source[new], core[new], core[new]
        return self._conv_destinations(core_of)

    def _conv_reach(self):
        """Per input position (y, x): the output rows [y_lo, y_hi] and columns [x_lo, x_hi] whose
        receptive field's nonzero taps cover it."""
        (_, h_out, w_out), (_, h_in, w_in) = self.target_shape, self.source_shape
        (sy, sx), (py, px) = self.synapses.stride, self.synapses.padding
        # outputs reading input row y through taps ky in tap_rows: y = yo*s - p + ky
        y, x = np.arange(h_in), np.arange(w_in)
        y_lo = np.maximum(-((-(y + py - self.tap_rows[1])) // sy), 0)
        y_hi = np.minimum((y + py - self.tap_rows[0]) // sy, h_out - 1)
        x_lo = np.maximum(-((-(x + px - self.tap_cols[1])) // sx), 0)
        x_hi = np.minimum((x + px - self.tap_cols[0]) // sx, w_out - 1)
        return y_lo, y_hi, x_lo, x_hi

    def _column_destinations(self, core_starts: np.ndarray):
        """``destinations`` for a target tiled by whole columns: ``core_starts`` are positions in its
        column-by-column order, and a source reaches the cores of the columns it feeds."""
        (c_out, h_out, w_out), (_, h_in, w_in) = self.target_shape, self.source_shape
        core_of_column = np.searchsorted(core_starts, np.arange(w_out) * c_out * h_out, side="right") - 1
        y_lo, y_hi, x_lo, x_hi = self._conv_reach()
        reached = ((y_lo <= y_hi)[:, None] & (x_lo <= x_hi)[None, :]).reshape(-1)
        positions = np.flatnonzero(reached)
        first = np.broadcast_to(core_of_column[np.minimum(x_lo, w_out - 1)][None, :], (h_in, w_in)).reshape(-1)
        last = np.broadcast_to(core_of_column[np.maximum(x_hi, 0)][None, :], (h_in, w_in)).reshape(-1)
        channels = np.flatnonzero(self.channel_links.any(axis=0))
        source = (channels[:, None] * (h_in * w_in) + positions[None, :]).reshape(-1)
        return (source, np.tile(first[positions], channels.size).astype(np.int64),
                np.tile(last[positions], channels.size).astype(np.int64))

    def _conv_destinations(self, core_of: np.ndarray):
        (_, h_out, w_out), (c_in, h_in, w_in) = self.target_shape, self.source_shape
        y_lo, y_hi, x_lo, x_hi = self._conv_reach()
        reached = ((y_lo <= y_hi)[:, None] & (x_lo <= x_hi)[None, :]).reshape(-1)
        first_in_plane = (y_lo[:, None] * w_out + x_lo[None, :]).reshape(-1)[reached]
        last_in_plane = (y_hi[:, None] * w_out + x_hi[None, :]).reshape(-1)[reached]
        positions = np.flatnonzero(reached)
        sources, firsts, lasts = [], [], []
        for channel in range(c_in):
            outs = np.flatnonzero(self.channel_links[:, channel]) * (h_out * w_out)
            if outs.size == 0:
                continue
            sources.append(np.repeat(channel * h_in * w_in + positions, outs.size))
            firsts.append((first_in_plane[:, None] + outs[None, :]).reshape(-1))
            lasts.append((last_in_plane[:, None] + outs[None, :]).reshape(-1))
        if not sources:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        source = np.concatenate(sources)
        first, last = core_of[np.concatenate(firsts)], core_of[np.concatenate(lasts)]
        # a core straddling two output channels is reached once, not twice
        same = np.zeros(source.size, dtype=bool)
        same[1:] = source[1:] == source[:-1]
        first[1:] = np.where(same[1:], np.maximum(first[1:], last[:-1] + 1), first[1:])
        keep = first <= last
        return source[keep], first[keep], last[keep]
