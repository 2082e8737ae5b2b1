"""Encoders and decoders on known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from frontends.encoding import Decoder, Encoder
from toolchain.errors import UserError


def test_ttfs_fires_once_at_t0_for_one_and_never_for_zero():
    spikes = Encoder("ttfs", steps=10, t0=2).encode(np.array([[1.0], [0.5], [0.0]]))
    assert spikes.shape == (3, 10, 1)
    assert spikes[0, :, 0].tolist() == [0, 0, 1] + [0] * 7
    assert spikes[1, :, 0].sum() == 1 and spikes[1, :, 0].argmax() == 2 + round(0.5 * 7)
    assert spikes[2].sum() == 0


def test_population_peaks_at_the_nearest_centre():
    enc = Encoder("population", steps=400, neurons=5, width=0.1, seed=3)
    counts = enc.encode(np.array([[0.75]])).sum(axis=1)[0]  # centres 0, .25, .5, .75, 1
    assert counts.argmax() == 3 and counts[3] > 0.95 * 400 and counts[0] == 0


@pytest.mark.parametrize("kind, probability", [("bernoulli", lambda x: x), ("poisson", lambda x: 1 - np.exp(-x))])
def test_rate_statistics(kind, probability):
    x = np.array([[0.1, 0.5, 0.9]])
    rate = Encoder(kind, steps=20000, seed=1).encode(x).mean(axis=1)[0]
    assert np.allclose(rate, probability(x[0]), atol=0.015)


def test_rate_encoding_is_reproducible_with_its_seed():
    x = np.random.default_rng(0).random((4, 6))
    a, b = Encoder("bernoulli", seed=7).encode(x), Encoder("bernoulli", seed=7).encode(x)
    assert np.array_equal(a, b) and not np.array_equal(a, Encoder("bernoulli", seed=8).encode(x))


def test_periodic_rate_is_exact():
    assert Encoder("periodic", steps=20).encode(np.array([[0.25, 1.0, 0.0]])).sum(axis=1).tolist() == [[5, 20, 0]]


def test_direct_holds_graded_levels():
    out = Encoder("direct", steps=3, levels=16).encode(np.array([[0.5, 1.0]]))
    assert out.tolist() == [[[8, 16]] * 3]


def test_delta_marks_rises_and_falls():
    series = np.array([[[0.0], [0.25], [0.3], [0.0]]])
    out = Encoder("delta", steps=4, threshold=0.2).encode(series)
    assert out[0, :, 0].tolist() == [0, 1, 0, 0] and out[0, :, 1].tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("bad", [1.5, -0.1, np.nan])
def test_out_of_range_is_rejected_or_clipped(bad):
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        Encoder("bernoulli").encode(np.array([[0.5, bad]]))
    if not np.isnan(bad):
        clipped = Encoder("direct", levels=10, clip=True).encode(np.array([[bad]]))
        assert clipped[0, 0, 0] == (10 if bad > 1 else 0)


def test_linear_decoders_recover_a_linear_target():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 16, size=(200, 3)).astype(float)
    y = 0.3 * counts[:, 0] / 16 - 2.0 * counts[:, 2] / 16 + 0.5
    dec = Decoder("rate", steps=16).fit(y, counts=counts)
    assert np.allclose(dec.decode(counts=counts), y)
    trains = np.zeros((2, 5, 1))
    trains[0, 1, 0] = trains[1, 3, 0] = 1
    fs = Decoder("first-spike", steps=5).fit(np.array([1.0, 0.0]), trains=trains)
    assert np.allclose(fs.decode(trains=trains), [1.0, 0.0])  # y = k1 - k2 t with t = 1, 3
    assert Decoder("count").decode(counts=np.array([[1, 5, 2]])).tolist() == [1]
    with pytest.raises(UserError, match="not fitted"):
        Decoder("membrane").decode(membrane=np.ones((2, 2)))
