"""The emulator on a CUDA device computes the CPU's integers; asking for a device that is not there is
a user error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from targets.loihi2.emulator import run
from tests.builders import chains, conv_program, to_program
from toolchain.errors import UserError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


def assert_same_run(a, b, names):
    for name in names:
        assert np.array_equal(a.trains[name], b.trains[name]), name
        assert np.array_equal(a.u[name], b.u[name]), name
        assert np.array_equal(a.v[name], b.v[name]), name
        assert np.array_equal(a.activity[name].spike_counts, b.activity[name].spike_counts), name
    assert np.array_equal(a.output, b.output)


@cuda
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_cuda_equals_cpu_at_the_wrap_and_saturation_corners(case):
    layers, inputs, levels = case
    program = to_program(layers, len(inputs[0][0]), len(inputs[0]), levels)
    cpu = run(program, np.array(inputs), record=True, device="cpu")
    gpu = run(program, np.array(inputs), record=True, device="cuda")
    assert_same_run(cpu, gpu, [f"l{i}" for i in range(len(layers))])


@cuda
@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_cuda_equals_cpu_on_conv_programs(seed, exact):
    program = conv_program(seed, exact=exact)
    x = np.random.default_rng(seed).integers(0, 16, (40,) + program.input_shape)
    cpu = run(program, x, record=True, device="cpu", batch_size=16)
    gpu = run(program, x, record=True, device="cuda", batch_size=16)
    assert_same_run(cpu, gpu, ["c1", "c2", "out"])
    assert run(program, x, device="auto").output.tolist() == cpu.output.tolist()


def test_cuda_without_a_device_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    program = conv_program(0)
    x = np.random.default_rng(0).integers(0, 16, (3,) + program.input_shape)
    with pytest.raises(UserError, match=r"^device cuda: torch sees no CUDA device on this machine; use "
                                         r"--device cpu or auto$"):
        run(program, x, device="cuda")
    assert run(program, x, device="auto").output.tolist() == run(program, x, device="cpu").output.tolist()


def test_unknown_device_is_a_user_error():
    program = conv_program(0)
    with pytest.raises(UserError, match=r"^device must be one of cpu, cuda, auto, got 'tpu'$"):
        run(program, np.zeros((1,) + program.input_shape, dtype=np.int64), device="tpu")
