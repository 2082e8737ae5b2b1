"""Compression options and the sweep: behaviour, every requested row, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from targets import reference
from toolchain.errors import UserError
from toolchain.ir import INPUT, Connection, Graph, Population
from toolchain.passes.quantize import QuantizeOptions, fake_quantize, quantize
from toolchain.sweep import check_settings, evaluate_setting, run_sweep, split_data, sweep_settings


def test_per_channel_beats_per_tensor_on_uneven_channel_ranges(loihi2):
    """Channel 0's weights are 100x channel 1's: one shared step rounds channel 1 to nothing."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(2, 16)) * np.array([[1.0], [0.01]])
    graph = Graph((16,), [Population("out", (2,), 0.0, 0.9, 0.5, 0.0)], [Connection(INPUT, "out", weight)],
                  "out", steps=4, dt=1e-3, input_levels=255)
    errors = {}
    for granularity in ("tensor", "channel"):
        snapped = fake_quantize(graph, QuantizeOptions(4, "max", granularity)).connections[0].weight
        errors[granularity] = np.abs(snapped - weight)[1].sum() / np.abs(weight[1]).sum()
        program = quantize(graph, loihi2, QuantizeOptions(4, "max", granularity))
        assert len(program.layers[0].groups()) == (1 if granularity == "tensor" else 2)
    assert errors["tensor"] > 0.9 and errors["channel"] < 0.2


def test_sweep_has_every_requested_row(mlp, digits, loihi2, capsys):
    _, graph = mlp
    data = split_data(digits, calibration=128, validation=128, test_samples=150)
    rows = run_sweep(graph, loihi2, data, [16, 8, 4], [0.2], methods=("baseline", "best"), workers=2)
    settings = {(r["method"], r["bits"], r["prune"]) for r in rows}
    expected = {("baseline", 32, 0.0)} | {(m, b, p) for m in ("baseline", "best") for b in (16, 8, 4)
                                         for p in (0.0, 0.2)} | {(m, 32, 0.2) for m in ("baseline", "best")}
    assert settings == expected and len(rows) == len(expected)
    # without a terminal, progress is one line per finished setting
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sweep: ")]
    assert sorted(int(line.split()[1].split("/")[0]) for line in progress) == list(range(1, len(rows) + 1))
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["samples"] == 150 and row["size_bits"] > 0
    by = {(r["method"], r["bits"], r["prune"]): r for r in rows}
    assert by[("best", 4, 0.2)]["neurons"] < by[("best", 4, 0.0)]["neurons"]
    assert by[("baseline", 4, 0.0)]["size_bits"] < by[("baseline", 8, 0.0)]["size_bits"]
    assert all(row["energy_45nm_nj"] > 0 for row in rows)
    assert all(row["loihi_latency_us"] > 0 for row in rows if row["bits"] <= 8)
    # structured pruning removes neurons, so the chip spends less on them
    assert by[("best", 4, 0.2)]["loihi_energy_nj"] < by[("best", 4, 0.0)]["loihi_energy_nj"]


def test_greedy_pruning_search_can_be_left_out(mlp, digits, loihi2):
    data = split_data(digits, calibration=128, validation=128, test_samples=150)
    row = evaluate_setting(mlp[1], loihi2, data, None, 0.2, "best", prune_search=False)
    assert row["pruning"].startswith("structured/") and "greedy" not in row["pruning"]


def test_axes_grid_is_the_seeds_study():
    settings = sweep_settings([8, 4], [0.1, 0.3], ("baseline",), grid="axes")
    assert settings == [(None, 0.0, "baseline"), (8, 0.0, "baseline"), (4, 0.0, "baseline"),
                        (None, 0.1, "baseline"), (None, 0.3, "baseline")]
    with pytest.raises(UserError, match="--grid 'diagonal'"):
        sweep_settings([8], [0.1], ("baseline",), grid="diagonal")


def test_sweep_reproduces_the_float_model_at_16_bits(mlp, digits, loihi2):
    _, graph = mlp
    graph16 = fake_quantize(graph, QuantizeOptions(16, "max"))
    a = reference.run(graph, digits.x_test).predictions()
    b = reference.run(graph16, digits.x_test).predictions()
    assert np.mean(a == b) > 0.99


@pytest.mark.parametrize("bits, ratios, message", [([], [0.1], "--bits needs at least one"),
                                                   ([8], [], "--prune needs at least one"), ([17], [0.1], "1..16"),
                                                   ([0], [0.1], "1..16"), ([8], [1.0], "--prune 1 is out of range"),
                                                   ([8], [-0.2], "--prune -0.2 is out of range")])
def test_bad_settings(bits, ratios, message):
    with pytest.raises(UserError, match=message):
        check_settings(bits, ratios)
