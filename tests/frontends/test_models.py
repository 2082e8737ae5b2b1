"""The snnTorch models' training-only behaviour."""

from __future__ import annotations

import pytest
import torch

from frontends.models import SpikingNetwork, default_config


def _always_firing_mlp(channel_dropout: float, steps: int = 6) -> SpikingNetwork:
    """An MLP whose 128 hidden neurons fire at every step whatever the input."""
    model = SpikingNetwork(default_config("mlp", (1, 8, 8), 10, channel_dropout), (1, 8, 8), 10, steps)
    hidden = model.blocks[0].synapse[1]
    hidden.weight.data.zero_()
    hidden.bias.data.fill_(2.0)
    return model


def _hidden_spikes(model: SpikingNetwork, samples: int = 16) -> torch.Tensor:
    """What the readout layer receives: (steps, samples, hidden)."""
    seen = []
    handle = model.blocks[1].synapse.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].detach()))
    model(torch.rand(samples, 1, 8, 8))
    handle.remove()
    return torch.stack(seen)


def test_channel_dropout_silences_whole_units_for_the_whole_sample():
    torch.manual_seed(0)
    model = _always_firing_mlp(channel_dropout=0.5).train()
    spikes = _hidden_spikes(model)
    first = spikes[0]
    assert torch.equal(spikes, first.expand_as(spikes)), "a unit's mask must hold for every step"
    assert set(first.unique().tolist()) == {0.0, 2.0}, "kept units are scaled by 1 / keep"
    assert 0.4 < float((first == 0).float().mean()) < 0.6
    assert not torch.equal(first[0], first[1]), "each sample draws its own mask"


def test_channel_dropout_is_off_when_evaluating():
    model = _always_firing_mlp(channel_dropout=0.5).eval()
    assert torch.equal(_hidden_spikes(model), torch.ones(6, 16, 128))


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_channel_dropout_out_of_range_is_refused(rate):
    with pytest.raises(ValueError, match=r"channel dropout must be in \[0, 1\)"):
        default_config("csnn", (1, 28, 28), 10, rate)


def test_widths_replace_the_recipes_hidden_sizes():
    csnn = SpikingNetwork(default_config("csnn", (1, 28, 28), 10, widths=[8, 24]), (1, 28, 28), 10, 4)
    assert [block.synapse[0].out_channels for block in csnn.blocks[:-1]] == [8, 24]
    assert csnn.blocks[-1].synapse[1].in_features == 24 * 4 * 4
    mlp = SpikingNetwork(default_config("mlp", (1, 8, 8), 10, widths=[40, 20]), (1, 8, 8), 10, 4)
    assert [block.synapse[-1].out_features for block in mlp.blocks] == [40, 20, 10]
    assert mlp(torch.rand(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("widths", [[], [16, 0]])
def test_empty_or_zero_widths_are_refused(widths):
    with pytest.raises(ValueError, match="widths must be one or more positive sizes"):
        default_config("csnn", (1, 28, 28), 10, widths=widths)
