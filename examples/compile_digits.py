"""Train a spiking MLP on digits, compile it for Loihi 2 at 4 bits, compare with the float model."""

import numpy as np

from frontends.datasets import load_dataset
from frontends.nir_export import to_nir
from frontends.training import TrainOptions, train
from snn_compile.compile import CompileOptions, compile_model
from targets.registry import get_target
from toolchain.nir_import import graph_from_nir
from toolchain.passes.quantize import QuantizeOptions

digits = load_dataset("digits")
model, _ = train(digits, TrainOptions(arch="mlp", epochs=15, seed=0))
graph = graph_from_nir(to_nir(model, input_levels=digits.levels))
compiled = compile_model(graph, get_target("loihi2"), CompileOptions(QuantizeOptions(bits=4)))
print(f"passes: {' -> '.join(compiled.passes)}")
for name, target, network in (("float", get_target("reference"), graph),
                              ("loihi2 4-bit", compiled.target, compiled.model)):
    result = target.run(network, digits.x_test)
    print(f"{name:13s} accuracy {np.mean(result.predictions() == digits.y_test):.4f}")
