"""Quantization-aware fine-tuning on the compiled graph."""

from __future__ import annotations

import numpy as np

from targets.loihi2 import run
from toolchain.finetune import FinetuneOptions, finetune
from toolchain.passes.quantize import QuantizeOptions, quantize


def test_finetuning_recovers_2bit_accuracy_and_lands_on_the_chip_grid(mlp, digits, loihi2):
    _, graph = mlp
    accuracy = lambda p: np.mean(run(p, digits.x_test).predictions() == digits.y_test)  # noqa: E731
    plain = accuracy(quantize(graph, loihi2, QuantizeOptions(2, "max")))
    tuned_graph = finetune(graph, digits.x_train, digits.y_train,
                           FinetuneOptions(bits=2, epochs=3, granularity="channel", progress=False))
    tuned = quantize(tuned_graph, loihi2, QuantizeOptions(2, "max", "channel"))
    assert accuracy(tuned) > plain + 0.3
    # every fine-tuned weight is a grid point the chip holds: integer weight x step == float weight
    for syn, conn in zip(tuned.synapses, tuned_graph.connections):
        rows = conn.weight.reshape(conn.weight.shape[0], -1)
        ints = syn.weights.reshape(rows.shape[0], -1)
        for row, q in zip(rows, ints):
            if np.any(q):
                step = row[q != 0][0] / q[q != 0][0]
                assert np.allclose(q * step, row, rtol=1e-6, atol=1e-9)
    # pruned synapses stay pruned
    assert np.all(tuned_graph.connections[0].weight[graph.connections[0].weight == 0] == 0)
