"""Train a spiking MLP on digits, compile it for Loihi 2 at 4 bits, compare with the float model."""

import numpy as np

from frontends.datasets import load_dataset
from frontends.nir_export import to_nir
from frontends.training import TrainOptions, train
from targets import reference
from targets.chips import load_chip
from targets.loihi2 import run
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions, quantize

digits = load_dataset("digits")
model, _ = train(digits, TrainOptions(arch="mlp", epochs=15, seed=0))
graph = graph_from_nir(to_nir(model, input_levels=digits.levels))
program = quantize(graph, load_chip("loihi2"), QuantizeOptions(bits=4))
for name, result in (("float", reference.run(graph, digits.x_test)), ("loihi2 4-bit", run(program, digits.x_test))):
    print(f"{name:13s} accuracy {np.mean(result.predictions() == digits.y_test):.4f}")
