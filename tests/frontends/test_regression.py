"""SNN regression survives compilation: Loihi 2 8-bit MSE within 10% of float."""

from __future__ import annotations

import sys

import pytest

from frontends.regression import RegressionOptions, load_task
from tests.paths import ROOT

sys.path.insert(0, str(ROOT / "examples"))
from regression import evaluate  # noqa: E402


@pytest.mark.parametrize("encoder, decoder", [("direct", "rate"), ("direct", "membrane"),
                                              ("population", "population-vote")])
def test_loihi2_mse_within_ten_percent_of_float(encoder, decoder):
    row = evaluate(load_task("projectile"), RegressionOptions(encoder=encoder, decoder=decoder, epochs=12,
                                                               progress=False))
    assert row["mse_float"] < 0.15, row
    assert row["mse_loihi2"] <= 1.10 * row["mse_float"], row
    assert row["latency_steps"] == 16 + 2
    assert row["energy_45nm_nj"] > 0 and row["ann_45nm_nj"] > 0 and row["loihi_nj"] > 0


def test_unknown_task():
    from toolchain.errors import UserError
    with pytest.raises(UserError, match="unknown regression task"):
        load_task("weather")
