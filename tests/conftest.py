"""Shared fixtures: small models trained once per test session on digits."""

from __future__ import annotations

import pytest
import torch

from frontends.datasets import load_dataset
from frontends.nir_export import to_nir
from frontends.training import TrainOptions, train
from targets.chips import load_chip
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def loihi2():
    return load_chip("loihi2")


def _trained(digits, arch, epochs):
    model, metrics = train(digits, TrainOptions(arch=arch, epochs=epochs, seed=0, progress=False))
    return model, graph_from_nir(to_nir(model, input_levels=digits.levels))


@pytest.fixture(scope="session")
def mlp(digits):
    """(snnTorch model, float graph) of the digits MLP."""
    return _trained(digits, "mlp", epochs=15)


@pytest.fixture(scope="session")
def csnn(digits):
    """(snnTorch model, float graph) of the digits CSNN."""
    return _trained(digits, "csnn", epochs=15)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of small tensors: extra torch threads only spin and crawl on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mlp_program(mlp, loihi2):
    """The digits MLP compiled for Loihi 2 at 8 bits (quantized, not mapped)."""
    return quantize(mlp[1], loihi2, QuantizeOptions(bits=8))
