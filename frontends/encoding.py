"""Spike encoders (host side, before the chip) and decoders (reading the chip's output).

Every encoder turns real values into what the host sends each step: an
array (samples, steps, *shape) of integers, binary spikes for the spiking
codes and graded levels for ``direct``. Because the encoding happens on the
host, every target (float reference, Loihi 2 emulator, Lava) receives the
identical array, so accuracy and MSE compare across targets.

Values outside an encoder's range [0, 1] are rejected with a clear error, or
clipped when ``clip=True``; they are never silently wrapped. Every random
choice takes a seed.

Decoders map a run's output (spike counts, spike trains or membrane
potentials) to real values; their free coefficients are fitted by least
squares on training data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolchain.errors import UserError

ENCODERS = ("direct", "bernoulli", "poisson", "periodic", "ttfs", "population", "delta")
DECODERS = ("rate", "first-spike", "membrane", "population-vote", "count", "max-membrane")


@dataclass(frozen=True)
class Encoder:
    """``kind``: one of ENCODERS. ``levels``: graded levels of ``direct``.
    ``t0``: first step of ``ttfs``. ``neurons``/``width``: Gaussian tuning
    curves of ``population`` (centres evenly over [0, 1], standard deviation
    ``width``). ``threshold``: step size of ``delta``."""

    kind: str = "direct"
    steps: int = 16
    levels: int = 255
    t0: int = 0
    neurons: int = 8
    width: float = 0.1
    threshold: float = 0.1
    clip: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.kind not in ENCODERS:
            raise UserError(f"unknown encoder {self.kind!r}; known: {', '.join(ENCODERS)}")
        if self.steps < 1 or not 0 <= self.t0 < self.steps:
            raise UserError(f"encoder needs steps >= 1 and 0 <= t0 < steps (got steps={self.steps}, t0={self.t0})")

    def output_levels(self) -> int:
        """The integer range the program's input must accept: 0..levels."""
        return self.levels if self.kind == "direct" else 1

    def channels(self) -> int:
        """Inputs per value: population coding fans each value out to ``neurons`` inputs."""
        return self.neurons if self.kind == "population" else 2 if self.kind == "delta" else 1

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(samples, *shape) values -> (samples, steps, *shape') integers.

        ``delta`` takes time series (samples, steps, features) of any real values.
        """
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "delta":
            return _delta(x, self.threshold)
        x = self._in_range(x)
        rng = np.random.default_rng(self.seed)
        t = np.arange(self.steps).reshape((1, -1) + (1,) * (x.ndim - 1))
        held = x[:, None]
        if self.kind == "direct":
            return np.broadcast_to(np.round(held * self.levels), (len(x), self.steps) + x.shape[1:]).astype(np.int64)
        if self.kind == "bernoulli":
            return (rng.random((len(x), self.steps) + x.shape[1:]) < held).astype(np.int64)
        if self.kind == "poisson":  # a Poisson process of rate x per step, at most one spike per step
            return (rng.random((len(x), self.steps) + x.shape[1:]) < 1 - np.exp(-held)).astype(np.int64)
        if self.kind == "periodic":  # deterministic: a spike whenever the running count of x crosses an integer
            return (np.floor((t + 1) * held) > np.floor(t * held)).astype(np.int64)
        if self.kind == "ttfs":
            span = self.steps - 1 - self.t0
            fire_at = self.t0 + np.round((1 - held) * span)
            return ((t == fire_at) & (held > 0)).astype(np.int64)
        centres = np.linspace(0, 1, self.neurons)
        response = np.exp(-((x[..., None] - centres) ** 2) / (2 * self.width**2))  # (samples, *shape, neurons)
        response = np.moveaxis(response, -1, 1).reshape(len(x), -1)
        return (rng.random((len(x), self.steps, response.shape[1])) < response[:, None]).astype(np.int64)

    def _in_range(self, x: np.ndarray) -> np.ndarray:
        if self.clip:
            return np.clip(x, 0.0, 1.0)
        if x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1 or np.isnan(x).any()):
            raise UserError(f"{self.kind} encoder takes values in [0, 1]; got [{np.nanmin(x):g}, {np.nanmax(x):g}] "
                            "(scale the data, or pass clip=True to clip)")
        return x


def _delta(series: np.ndarray, threshold: float) -> np.ndarray:
    """Threshold-crossing code: channel 0 spikes when the signal rose by ``threshold`` since the
    last spike's reference, channel 1 when it fell; the reference moves by one threshold per spike."""
    if series.ndim != 3:
        raise UserError("delta encoder takes time series shaped (samples, steps, features)")
    reference = series[:, 0].copy()
    out = np.zeros((series.shape[0], series.shape[1], 2, series.shape[2]), dtype=np.int64)
    for t in range(series.shape[1]):
        up = series[:, t] - reference >= threshold
        down = reference - series[:, t] >= threshold
        out[:, t, 0], out[:, t, 1] = up, down
        reference = reference + threshold * (up.astype(float) - down)
    return out.reshape(series.shape[0], series.shape[1], -1)


@dataclass
class Decoder:
    """``kind``: one of DECODERS. Regression decoders are linear in a feature of the
    output layer (rate, first-spike time, final membrane, population vote) with an
    offset; ``fit`` finds the coefficients by least squares."""

    kind: str = "rate"
    steps: int = 16
    coefficients: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self):
        if self.kind not in DECODERS:
            raise UserError(f"unknown decoder {self.kind!r}; known: {', '.join(DECODERS)}")

    def features(self, counts=None, trains=None, membrane=None) -> np.ndarray:
        """The per-sample features the linear read-out uses."""
        if self.kind in ("rate", "count"):
            return _need(counts, "spike counts", self.kind) / self.steps
        if self.kind == "first-spike":
            trains = _need(trains, "spike trains", self.kind)
            fired = trains.any(axis=1)
            first = np.where(fired, trains.argmax(axis=1), self.steps)
            return first.astype(np.float64)
        if self.kind in ("membrane", "max-membrane"):
            return _need(membrane, "membrane potentials", self.kind)
        counts = _need(counts, "spike counts", self.kind)
        return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)

    def fit(self, target: np.ndarray, **outputs) -> "Decoder":
        features = self.features(**outputs)
        design = np.column_stack([features, np.ones(len(features))])
        self.coefficients, *_ = np.linalg.lstsq(design, np.asarray(target, dtype=np.float64), rcond=None)
        return self

    def decode(self, **outputs) -> np.ndarray:
        """Regression value per sample, or the class for ``count``/``max-membrane``."""
        features = self.features(**outputs)
        if self.kind in ("count", "max-membrane"):
            return np.argmax(features, axis=1)
        if self.coefficients.size == 0:
            raise UserError(f"{self.kind} decoder is not fitted; call fit() on training outputs first")
        return np.column_stack([features, np.ones(len(features))]) @ self.coefficients


def _need(value, what: str, kind: str):
    if value is None:
        raise UserError(f"{kind} decoder needs the run's {what}")
    return np.asarray(value, dtype=np.float64)
