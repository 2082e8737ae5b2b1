"""snnTorch -> NIR -> graph -> Loihi 2 program -> emulator, on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from targets import reference
from targets.loihi2 import run
from targets.loihi2.emulator import lava_weights
from toolchain.passes.quantize import QuantizeOptions, quantize
from toolchain.program import Program


@pytest.mark.parametrize("name", ["mlp", "csnn"])
def test_reference_reproduces_snntorch_spike_counts(name, request, digits):
    model, graph = request.getfixturevalue(name)
    with torch.no_grad():
        counts = model(torch.as_tensor(digits.x_test, dtype=torch.float32) / digits.levels).numpy()
    result = reference.run(graph, digits.x_test)
    assert np.mean(np.all(counts == result.output, axis=1)) > 0.99


@pytest.mark.parametrize("name", ["mlp", "csnn"])
def test_loihi2_8bit_within_one_point_of_float(name, request, digits, loihi2):
    _, graph = request.getfixturevalue(name)
    float_acc = np.mean(reference.run(graph, digits.x_test).predictions() == digits.y_test)
    program = quantize(graph, loihi2, QuantizeOptions(bits=8))
    chip_acc = np.mean(run(program, digits.x_test).predictions() == digits.y_test)
    assert float_acc > 0.85
    assert chip_acc >= float_acc - 0.01, (float_acc, chip_acc)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantized_weights_are_what_lava_holds(bits, mlp, loihi2):
    _, graph = mlp
    if bits == 1:
        with pytest.raises(Exception, match="single-sign"):
            quantize(graph, loihi2, QuantizeOptions(bits=bits))
        return
    program = quantize(graph, loihi2, QuantizeOptions(bits=bits))
    for syn in program.synapses:
        layer = program.layer(syn.target)
        assert np.array_equal(lava_weights(syn, layer.groups(), layer.shape), syn.weights)
        assert len(np.unique(syn.weights)) <= 2**bits
    for layer in program.layers:
        assert 0 < layer.vth.min() and layer.vth.max() < 2**17


def test_program_round_trip(tmp_path, csnn, loihi2, digits):
    program = quantize(csnn[1], loihi2, QuantizeOptions(bits=4))
    loaded = Program.load(program.save(tmp_path / "p.h5"))
    sent = Program.from_bytes(program.to_bytes())
    a, b, c = (run(p, digits.x_test[:50]) for p in (program, loaded, sent))
    assert np.array_equal(a.output, b.output) and np.array_equal(a.output, c.output)
    assert loaded.latency == sent.latency == program.latency == 3
