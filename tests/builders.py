"""Hand-built programs and graphs the tests share: random LIF chains (a hypothesis strategy),
convolution programs, a program with a skip connection, NIR graphs with synaptic currents."""

from __future__ import annotations

import nir
import numpy as np
import snntorch as snn
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from toolchain.ir import INPUT
from toolchain.program import Layer, Program, Synapses


def lif(shape, tau=2e-3, threshold=1.0, dt=1e-3):
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / dt), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, threshold))


DT = 1e-4


def cuba(alpha, beta, threshold, n):
    """A CubaLIF as snnTorch's export_to_nir writes Synaptic(alpha, beta): float32 decays, dt = 1e-4."""
    alpha, beta = np.full(n, alpha, dtype=np.float32), np.full(n, beta, dtype=np.float32)
    tau_syn, tau_mem = DT / (1 - alpha), DT / (1 - beta)
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / DT, v_leak=np.zeros(n), w_in=tau_syn / DT,
                       v_threshold=np.full(n, threshold, dtype=np.float32), v_reset=np.zeros(n))


@st.composite
def chains(draw):
    """Random 1-2 layer dense programs whose values reach the 24-bit wrap and the v clip."""
    steps = draw(st.integers(1, 6))
    n_in = draw(st.integers(1, 5))
    samples = draw(st.integers(1, 3))
    levels = draw(st.sampled_from([1, 15, 255]))
    inputs = draw(st.lists(st.lists(st.lists(st.integers(0, levels), min_size=n_in, max_size=n_in),
                                    min_size=steps, max_size=steps), min_size=samples, max_size=samples))
    layers, size = [], n_in
    for depth in range(draw(st.integers(1, 2))):
        n = draw(st.integers(1, 4))
        weight = st.integers(-300, 300)
        layer = {
            "weights": draw(st.lists(st.lists(weight, min_size=size, max_size=size), min_size=n, max_size=n)),
            "weight_exp": draw(st.integers(-8, 7)), "bits": draw(st.integers(1, 8)),
            "du": draw(st.sampled_from([0, 1, 2047, 4094, 4095]) | st.integers(0, 4095)),
            "dv": draw(st.sampled_from([0, 1, 2048, 4095]) | st.integers(0, 4095)),
            "vth": draw(st.sampled_from([0, 1, 2**17 - 1]) | st.integers(0, 2**17 - 1)),
            "bias_mant": draw(st.lists(st.integers(-4096, 4095), min_size=n, max_size=n)),
            "bias_exp": draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)),
            "reset": draw(st.sampled_from(["zero", "subtract"])),
        }
        if draw(st.booleans()):
            layer["current_bias"] = draw(st.lists(st.sampled_from([-256, -255, -1, 0, 1, 255]) | weight,
                                                  min_size=n, max_size=n).map(lambda b: [min(max(w, -256), 255)
                                                                                         for w in b]))
            layer["current_bias_exp"] = draw(st.integers(-8, 7))
        if draw(st.booleans()):
            layer["recurrent"] = draw(st.lists(st.lists(weight, min_size=n, max_size=n), min_size=n, max_size=n))
            layer["recurrent_exp"] = draw(st.integers(-8, 7))
        layers.append(layer)
        size = n
    return layers, inputs, levels


def to_program(layers, n_in, steps, levels) -> Program:
    prog_layers, synapses, source = [], [], INPUT
    for i, spec in enumerate(layers):
        name, n = f"l{i}", len(spec["weights"])
        prog_layers.append(Layer(name=name, shape=(n,), du=spec["du"], dv=spec["dv"], vth=spec["vth"],
                                 bias_mant=spec["bias_mant"], bias_exp=spec["bias_exp"], v_scale=1.0,
                                 reset=spec.get("reset", "zero"), current_bias_mant=spec.get("current_bias", 0),
                                 current_bias_exp=spec.get("current_bias_exp", 0)))
        bits = 8 if levels > 1 else 0
        synapses.append(Synapses(source, name, np.array(spec["weights"]), np.full(n, spec["weight_exp"]),
                                 spec["bits"], message_bits=bits if source == INPUT else 0))
        if "recurrent" in spec:
            synapses.append(Synapses(name, name, np.array(spec["recurrent"]), np.full(n, spec["recurrent_exp"]),
                                     spec["bits"]))
        source = name
    return Program(chip="loihi2", input_shape=(n_in,), input_levels=levels, steps=steps, layers=prog_layers,
                   synapses=synapses, output=source)


def conv_program(seed: int, steps: int = 5, exact: bool = False) -> Program:
    """A random conv-conv-dense program: padding, a stride, a per-channel exponent, a current bias and,
    with ``exact``, sums large enough that the 24-bit wrap of u happens."""
    rng = np.random.default_rng(seed)
    shapes = {INPUT: (2, 6, 6), "c1": (4, 6, 6), "c2": (3, 3, 3), "out": (5,)}
    layers = [Layer(name, shapes[name], du=int(rng.integers(0, 4096)), dv=int(rng.integers(0, 4096)),
                    vth=int(rng.integers(1, 2**10 if name == "c1" else 2**5)), bias_mant=rng.integers(-50, 50, int(np.prod(shapes[name]))),
                    bias_exp=0, v_scale=1.0, reset=str(rng.choice(["zero", "subtract"])),
                    current_bias_mant=rng.integers(-20, 20, int(np.prod(shapes[name]))) * (name == "c1"),
                    current_bias_exp=1)
              for name in ("c1", "c2", "out")]
    c1_exp = np.repeat(rng.integers(4, 8, 4) if exact else rng.integers(-2, 3, 4), 36)
    synapses = [Synapses(INPUT, "c1", rng.integers(-128, 128, (4, 2, 3, 3)), c1_exp, 8,
                         kind="conv", padding=(1, 1), message_bits=8),
                Synapses("c1", "c2", rng.integers(-128, 128, (3, 4, 2, 2)), np.zeros(27), 8, kind="conv",
                         stride=(2, 2)),
                Synapses("c2", "out", rng.integers(-128, 128, (5, 27)), np.zeros(5), 8)]
    return Program(chip="loihi2", input_shape=shapes[INPUT], input_levels=15, steps=steps, layers=layers,
                   synapses=synapses, output="out")


def conv_skip_program() -> Program:
    """conv -> dense with a skip connection from the input, a recurrent layer and biases."""
    rng = np.random.default_rng(3)
    layers = [Layer("c", (2, 3, 3), du=4095, dv=300, vth=40, bias_mant=rng.integers(-20, 40, 18), bias_exp=2,
                    v_scale=1.0),
              Layer("r", (6,), du=2000, dv=100, vth=60, bias_mant=5, bias_exp=0, v_scale=1.0),
              Layer("o", (3,), du=4095, dv=500, vth=30, bias_mant=0, bias_exp=0, v_scale=1.0)]
    synapses = [Synapses(INPUT, "c", rng.integers(-8, 9, (2, 1, 2, 2)) * 16, np.full(18, -1), 4, kind="conv",
                         message_bits=4),
                Synapses("c", "r", rng.integers(-100, 101, (6, 18)), np.zeros(6), 8),
                Synapses("r", "r", rng.integers(-60, 61, (6, 6)), np.zeros(6), 8),
                Synapses("r", "o", rng.integers(-50, 101, (3, 6)), np.full(3, 1), 8),
                Synapses(INPUT, "o", rng.integers(0, 30, (3, 16)), np.zeros(3), 8, message_bits=4)]
    return Program(chip="loihi2", input_shape=(1, 4, 4), input_levels=15, steps=7, layers=layers,
                   synapses=synapses, output="o")


def synaptic_network(seed=0, samples=32, steps=30):
    """nn.Linear(bias=True) -> snn.Synaptic -> nn.Linear(bias=True) -> snn.Synaptic, reset to zero with no
    delay (Loihi's rule): the NIR graph snnTorch's exporter writes, inputs, and snnTorch's own spike counts."""
    torch.manual_seed(seed)
    n_in, n_hid, n_out = 20, 40, 5
    fc1, fc2 = torch.nn.Linear(n_in, n_hid), torch.nn.Linear(n_hid, n_out)
    with torch.no_grad():
        fc1.weight.mul_(2.0)
        fc1.bias.add_(0.3)
    lif1 = snn.Synaptic(alpha=0.55, beta=0.9, reset_mechanism="zero", reset_delay=False)
    lif2 = snn.Synaptic(alpha=0.7, beta=0.8, reset_mechanism="zero", reset_delay=False)
    x = (torch.rand(samples, steps, n_in) < 0.3).float()
    hidden, out = np.zeros(n_hid, dtype=np.int64), np.zeros(n_out, dtype=np.int64)
    with torch.no_grad():
        syn1, mem1, syn2, mem2 = (torch.zeros(samples, n) for n in (n_hid, n_hid, n_out, n_out))
        for t in range(steps):
            spk1, syn1, mem1 = lif1(fc1(x[:, t]), syn1, mem1)
            spk2, syn2, mem2 = lif2(fc2(spk1), syn2, mem2)
            hidden += spk1.sum(0).numpy().astype(np.int64)
            out += spk2.sum(0).numpy().astype(np.int64)
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc1": nir.Affine(weight=fc1.weight.numpy(force=True), bias=fc1.bias.numpy(force=True)),
             "lif1": cuba(0.55, 0.9, 1.0, n_hid),
             "fc2": nir.Affine(weight=fc2.weight.numpy(force=True), bias=fc2.bias.numpy(force=True)),
             "lif2": cuba(0.7, 0.8, 1.0, n_out), "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"steps": steps, "reset": "zero", "dt": DT})
    return graph, x.numpy().astype(np.int64), hidden, out


def conv_graph(dense: bool):
    """A convolution into LIF neurons whose R (so the input gain) and threshold vary within each channel;
    ``dense``: the same network with the convolution written as its explicit Affine matrix."""
    gen = np.random.default_rng(5)
    kernel, bias = gen.normal(size=(2, 1, 3, 3)), np.array([0.2, -0.1])
    shape = (2, 4, 4)
    r = np.where(np.arange(16).reshape(1, 4, 4) % 2 == 0, 2.0, 1.0) * np.ones(shape)  # gain ratios of 2: exact
    threshold = np.where(np.arange(16).reshape(1, 4, 4) < 8, 1.0, 1.5) * np.ones(shape)
    neurons = nir.LIF(tau=np.full(shape, 4e-4), r=r, v_leak=np.zeros(shape), v_threshold=threshold)
    if dense:
        matrix = F.conv2d(torch.eye(36, dtype=torch.float64).reshape(36, 1, 6, 6), torch.as_tensor(kernel))
        first = nir.Affine(weight=matrix.reshape(36, -1).T.numpy(), bias=np.repeat(bias, 16))
        flat = {"input": nir.Input(input_type={"input": np.array([36])}), "conv": first,
                "lif": nir.LIF(tau=neurons.tau.reshape(-1), r=r.reshape(-1), v_leak=np.zeros(32),
                               v_threshold=threshold.reshape(-1))}
    else:
        flat = {"input": nir.Input(input_type={"input": np.array([1, 6, 6])}),
                "conv": nir.Conv2d(input_shape=(6, 6), weight=kernel, stride=1, padding=0, dilation=1, groups=1,
                                   bias=bias), "lif": neurons}
    nodes = {**flat, "fc": nir.Linear(weight=gen.normal(size=(3, 32))), "out": lif((3,), tau=8e-4, dt=DT),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "conv"), ("conv", "lif"), ("lif", "fc"), ("fc", "out"), ("out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"steps": 10, "dt": DT}, type_check=False)
