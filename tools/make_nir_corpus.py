"""Write tests/data/nir/: small networks exported by each framework's OWN NIR exporter,
stored with that framework's own spikes on fixed, seeded inputs.

Run it in a separate environment that has the frameworks (they are not
dependencies of snn-compile), e.g.:

    python3.11 -m venv /tmp/corpus-venv
    /tmp/corpus-venv/bin/pip install torch==2.13.0
    /tmp/corpus-venv/bin/pip install snntorch nir==1.0.8 nirtorch==2.6 rockpool scipy
    /tmp/corpus-venv/bin/pip install --no-deps norse sinabs pbr   # their pins pull CUDA torch / nir<=1.0.4
    /tmp/corpus-venv/bin/python tools/make_nir_corpus.py

Each case NAME gives NAME.nir (the exporter's file, unchanged) and NAME.npz:
``input`` (samples, steps, *input shape) binary spikes, ``spikes_K`` the
spikes (or ``v_K`` the membrane of a non-spiking readout) of the K-th neuron
layer in feed-forward order, as (samples, steps, neurons), ``dt`` the step
the framework ran at, and ``about`` (JSON: framework, version, settings).
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import nir
import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "nir"
SAMPLES, STEPS = 8, 24


def spikes(shape, rate: float, seed: int) -> torch.Tensor:
    """Seeded binary input spikes (samples, steps, *shape)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand((SAMPLES, STEPS) + tuple(shape), generator=generator) < rate).float()


def save(name: str, graph: nir.NIRGraph, x: torch.Tensor, layers: list[tuple[str, torch.Tensor]], dt: float,
         framework: str, **settings):
    """``layers``: ("spikes" or "v", (samples, steps, neurons)) per neuron layer, in order."""
    settings["written"] = write(OUT / f"{name}.nir", graph)
    arrays = {"input": x.numpy().astype(np.uint8), "dt": np.float64(dt)}
    for k, (kind, values) in enumerate(layers):
        values = values.detach().reshape(SAMPLES, STEPS, -1).numpy()
        arrays[f"{kind}_{k}"] = values.astype(np.uint8 if kind == "spikes" and np.all(values <= 255) and
                                              np.all(values == np.round(values)) else np.float32)
    about = {"framework": framework, "version": version(framework), "nir": version("nir"),
             "nirtorch": version("nirtorch"), "torch": version("torch").split("+")[0], **settings}
    arrays["about"] = np.array(json.dumps(about, sort_keys=True))
    np.savez_compressed(OUT / f"{name}.npz", **arrays)
    rates = ", ".join(f"{kind}_{k} {float(v.float().mean()):.3f}" for k, (kind, v) in enumerate(layers))
    print(f"{name}: {rates}")


def write(path: Path, graph: nir.NIRGraph) -> str:
    """nir.write the exporter's graph; where nir.write refuses it, the least NIR's own API needs
    (the refusal is recorded: it is what a user of that exporter meets)."""
    repairs = [("nir.write", lambda: None),
               ("graph.infer_types(), then nir.write", graph.infer_types),  # shapes the exporter left as None
               ("nir.write(compression=None)", lambda: None)]  # gzip rejects 0-d arrays (scalar parameters)
    failures = []
    for how, repair in repairs:
        try:
            repair()
            nir.write(str(path), graph, **({"compression": None} if "compression" in how else {}))
            return how + "".join(f"; before: {failure}" for failure in failures)
        except (ValueError, TypeError, AssertionError) as exc:
            failures.append(f"{how} failed ({type(exc).__name__}: {exc})")
    raise RuntimeError("; ".join(failures))


def run_steps(step, x: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Drive ``step(x_t) -> [per-layer outputs]`` over time; stack per layer as (samples, steps, ...)."""
    outs = [step(x[:, t]) for t in range(x.shape[1])]
    return [torch.stack([o[k] for o in outs], dim=1) for k in range(count)]


# -- snnTorch: snntorch.export_to_nir ------------------------------------------------------------

def snntorch_cases():
    import snntorch as snn
    from snntorch.export_nir import export_to_nir

    def leaky(n, beta, **kw):
        # per-neuron beta and threshold: snnTorch 1.0's exporter cannot type a scalar
        return snn.Leaky(beta=torch.full((n,), beta), threshold=torch.ones(n), init_hidden=True, **kw)

    def synaptic(n, alpha, beta, **kw):
        return snn.Synaptic(alpha=torch.full((n,), alpha), beta=torch.full((n,), beta), threshold=torch.ones(n),
                            init_hidden=True, **kw)

    def record(net, x, neuron_types):
        for module in net.modules():
            if hasattr(module, "reset_hidden"):
                module.reset_hidden()

        def step(xt):
            outs, h = [], xt
            for module in net:
                h = module(h)
                if isinstance(h, tuple):
                    h = h[0]
                if isinstance(module, neuron_types):
                    outs.append(h)
            return outs
        count = sum(isinstance(m, neuron_types) for m in net)
        with torch.no_grad():
            return run_steps(step, x, count)

    neurons = (snn.Leaky, snn.Synaptic, snn.RLeaky, snn.RSynaptic)
    x = spikes((10,), 0.3, seed=1)
    torch.manual_seed(1)
    for name, reset, delay in (("snntorch_leaky_zero", "zero", True), ("snntorch_leaky_subtract", "subtract", False),
                               ("snntorch_leaky_subtract_delayed", "subtract", True)):
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Linear(10, 12), leaky(12, 0.8, reset_mechanism=reset, reset_delay=delay),
                                  torch.nn.Linear(12, 4, bias=False),
                                  leaky(4, 0.9, reset_mechanism=reset, reset_delay=delay))
        scale(net, 2.0)
        save(name, export_to_nir(net, torch.zeros(1, 10), ignore_dims=[0]), x,
             [("spikes", s) for s in record(net, x, neurons)], 1e-4, "snntorch",
             reset_mechanism=reset, reset_delay=delay, beta=0.8)

    torch.manual_seed(2)
    for name, delay in (("snntorch_synaptic_bias", False), ("snntorch_synaptic_bias_delayed", True)):
        torch.manual_seed(2)
        net = torch.nn.Sequential(torch.nn.Linear(10, 12), synaptic(12, 0.6, 0.8, reset_mechanism="zero",
                                                                    reset_delay=delay),
                                  torch.nn.Linear(12, 4), leaky(4, 0.9, reset_mechanism="zero", reset_delay=delay))
        scale(net, 1.2)
        save(name, export_to_nir(net, torch.zeros(1, 10), ignore_dims=[0]), x,
             [("spikes", s) for s in record(net, x, neurons)], 1e-4, "snntorch", reset_mechanism="zero",
             reset_delay=delay, alpha=0.6, beta=0.8)

    torch.manual_seed(3)
    recurrent = snn.RLeaky(beta=0.8, linear_features=12, init_hidden=True, reset_mechanism="zero",
                           reset_delay=False)
    net = torch.nn.Sequential(torch.nn.Linear(10, 12), recurrent, torch.nn.Linear(12, 4),
                              leaky(4, 0.9, reset_mechanism="zero", reset_delay=False))
    scale(net, 2.0)
    save("snntorch_rleaky", export_to_nir(net, torch.zeros(1, 10), ignore_dims=[0]), x,
         [("spikes", s) for s in record(net, x, neurons)], 1e-4, "snntorch", reset_mechanism="zero",
         reset_delay=False)

    torch.manual_seed(4)
    image = spikes((1, 8, 8), 0.3, seed=4)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), leaky_conv(snn, (4, 8, 8), 0.8),
                              torch.nn.AvgPool2d((2, 2)), torch.nn.Flatten(), torch.nn.Linear(64, 4),
                              leaky(4, 0.9, reset_mechanism="zero", reset_delay=False))
    scale(net, 2.0)
    save("snntorch_conv", export_to_nir(net, torch.zeros(1, 1, 8, 8), ignore_dims=[0]), image,
         [("spikes", s) for s in record(net, image, neurons)], 1e-4, "snntorch", reset_mechanism="zero",
         reset_delay=False)


def leaky_conv(snn, shape, beta):
    return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape), init_hidden=True,
                     reset_mechanism="zero", reset_delay=False)


def scale(net, *factors: float):
    """Random init with larger weights, so that every layer fires: one factor per weighted layer
    (the last repeats)."""
    weighted = [m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        for k, module in enumerate(weighted):
            module.weight.mul_(factors[min(k, len(factors) - 1)])


# -- Norse: norse.torch.to_nir ------------------------------------------------------------------

def norse_cases():
    import norse.torch as norse

    dt = 1e-3  # Norse's default step, which its exporter assumes

    def record(net, x):
        cells = [m for m in net if isinstance(m, (norse.LIFBoxCell, norse.LIFCell, norse.IAFCell,
                                                  norse.LIBoxCell))]
        states = {id(c): None for c in cells}

        def step(xt):
            outs, h = [], xt
            for module in net:
                if id(module) in states:
                    h, states[id(module)] = module(h, states[id(module)])
                    outs.append(h if not isinstance(module, norse.LIBoxCell) else states[id(module)].v)
                else:
                    h = module(h)
            return outs
        with torch.no_grad():
            return run_steps(step, x, len(cells))

    x = spikes((10,), 0.3, seed=11)
    torch.manual_seed(11)
    net = norse.SequentialState(torch.nn.Linear(10, 12), norse.LIFBoxCell(), torch.nn.Linear(12, 4, bias=False),
                                norse.LIFBoxCell())
    scale(net, 25.0, 40.0)
    save("norse_lifbox", norse.to_nir(net, torch.zeros(1, 10), dt=dt), x,
         [("spikes", s) for s in record(net, x)], dt, "norse", cells="LIFBoxCell")

    torch.manual_seed(12)
    net = norse.SequentialState(torch.nn.Linear(10, 12, bias=False), norse.LIFCell(),
                                torch.nn.Linear(12, 4, bias=False), norse.LIFCell())
    scale(net, 4.0, 8.0)
    save("norse_lif", norse.to_nir(net, torch.zeros(1, 10), dt=dt), x,
         [("spikes", s) for s in record(net, x)], dt, "norse", cells="LIFCell")

    torch.manual_seed(13)
    net = norse.SequentialState(torch.nn.Linear(10, 12), norse.IAFCell(), torch.nn.Linear(12, 4),
                                norse.LIBoxCell())
    scale(net, 2.0)
    trains = record(net, x)
    save("norse_iaf_li", norse.to_nir(net, torch.zeros(1, 10), dt=dt), x,
         [("spikes", trains[0]), ("v", trains[1])], dt, "norse", cells="IAFCell, LIBoxCell")


# -- Sinabs: sinabs.to_nir ----------------------------------------------------------------------

def sinabs_cases():
    import sinabs
    import sinabs.layers as sl
    from sinabs.activation import MembraneReset, SingleSpike

    def record(net, x):
        """Sinabs layers take whole (samples, steps, ...) sequences."""
        for module in net.modules():
            if hasattr(module, "reset_states"):
                module.reset_states()
        outs, h = [], x
        with torch.no_grad():
            for module in net:
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, sl.SumPool2d, torch.nn.Flatten)):
                    h = module(h.flatten(0, 1)).unflatten(0, (SAMPLES, STEPS))
                else:
                    h = module(h)
                    outs.append(h)
        return outs

    single = {"spike_fn": SingleSpike, "reset_fn": MembraneReset()}
    x = spikes((10,), 0.3, seed=21)
    torch.manual_seed(21)
    net = torch.nn.Sequential(torch.nn.Linear(10, 12), sl.IAF(**single), torch.nn.Linear(12, 4), sl.IAF(**single))
    scale(net, 2.0)
    save("sinabs_iaf", sinabs.to_nir(net, torch.zeros(1, STEPS, 10)), x,
         [("spikes", s) for s in record(net, x)], 1.0, "sinabs", spike_fn="SingleSpike", reset_fn="MembraneReset")

    torch.manual_seed(22)
    net = torch.nn.Sequential(torch.nn.Linear(10, 12), sl.IAF(), torch.nn.Linear(12, 4), sl.IAF())
    scale(net, 2.0)
    save("sinabs_iaf_multispike", sinabs.to_nir(net, torch.zeros(1, STEPS, 10)), x,
         [("spikes", s) for s in record(net, x)], 1.0, "sinabs", spike_fn="MultiSpike (default)",
         reset_fn="MembraneSubtract (default)")

    torch.manual_seed(23)
    net = torch.nn.Sequential(torch.nn.Linear(10, 12), sl.LIF(tau_mem=5.0, **single),
                              torch.nn.Linear(12, 4), sl.LIF(tau_mem=8.0, **single))
    scale(net, 6.0, 30.0)
    save("sinabs_lif", sinabs.to_nir(net, torch.zeros(1, STEPS, 10)), x,
         [("spikes", s) for s in record(net, x)], 1.0, "sinabs", spike_fn="SingleSpike",
         reset_fn="MembraneReset", norm_input=True)

    torch.manual_seed(24)
    image = spikes((1, 8, 8), 0.3, seed=24)
    squeezed = {"num_timesteps": STEPS, **single}  # convolutions take (samples * steps, C, H, W)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), sl.IAFSqueeze(**squeezed),
                              sl.SumPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 4), sl.IAFSqueeze(**squeezed))
    scale(net, 2.0)
    graph = sinabs.to_nir(net, torch.zeros(STEPS, 1, 8, 8))
    for module in net.modules():
        if hasattr(module, "reset_states"):  # the export ran the sample through the layers
            module.reset_states()
    outs, h = [], image.flatten(0, 1)
    with torch.no_grad():
        for module in net:
            h = module(h)
            if isinstance(module, sl.IAFSqueeze):
                outs.append(h.unflatten(0, (SAMPLES, STEPS)))
    save("sinabs_conv", graph, image, [("spikes", s) for s in outs], 1.0, "sinabs", spike_fn="SingleSpike",
         reset_fn="MembraneReset")


# -- Rockpool: rockpool.nn.modules.torch.nir.to_nir ---------------------------------------------

def rockpool_cases():
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import to_nir

    x = spikes((10,), 0.3, seed=31)
    torch.manual_seed(31)
    lif_a = LIFTorch(12, tau_mem=0.02, tau_syn=0.005, threshold=1.0)
    lif_b = LIFTorch(4, tau_mem=0.02, tau_syn=0.005, threshold=1.0)
    linear_a, linear_b = LinearTorch((10, 12), has_bias=True), LinearTorch((12, 4))
    with torch.no_grad():
        linear_a.weight.mul_(0.3)
        linear_b.weight.mul_(0.3)
    net = Sequential(linear_a, lif_a, linear_b, lif_b)
    with torch.no_grad():
        _, _, recorded = net(x, record=True)
    layers = [("spikes", recorded[key]["spikes"]) for key in recorded if key.endswith("LIFTorch") or
              (isinstance(recorded[key], dict) and "spikes" in recorded[key])]
    save("rockpool_lif", to_nir(net, torch.zeros(1, 1, 10)), x, layers, float(lif_a.dt), "rockpool",
         module="LIFTorch", spike_generation="StepPWL (multi-spike, >=)")


# -- nirtorch: nirtorch.torch_to_nir, a plain torch network with the user's own neuron module ---------

def nirtorch_cases():
    import nirtorch

    dt = 1e-4

    class EulerLIF(torch.nn.Module):
        """A user's LIF module: forward Euler of NIR's LIF, reset to zero; (input, state) -> (spikes, state)."""

        def __init__(self, n, tau, threshold):
            super().__init__()
            self.tau, self.threshold = torch.full((n,), tau), torch.full((n,), threshold)

        def forward(self, x, state=None):
            v = torch.zeros_like(x) if state is None else state
            v = v + dt / self.tau * (-v + x)
            spikes = (v > self.threshold).float()
            return spikes, v * (1 - spikes)

    def to_lif(module):
        n = module.tau.shape[0]
        return nir.LIF(tau=module.tau.numpy(), r=np.ones(n, np.float32), v_leak=np.zeros(n, np.float32),
                       v_threshold=module.threshold.numpy(), v_reset=np.zeros(n, np.float32))

    class Network(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = torch.nn.Linear(10, 12), EulerLIF(12, 5e-4, 0.5)
            self.fc2, self.lif2 = torch.nn.Linear(12, 4, bias=False), EulerLIF(4, 1e-3, 0.5)

        def forward(self, x):
            s1, _ = self.lif1(self.fc1(x))
            s2, _ = self.lif2(self.fc2(s1))
            return s2

    x = spikes((10,), 0.3, seed=41)
    torch.manual_seed(41)
    net = Network()
    scale(net, 4.0, 12.0)
    graph = nirtorch.torch_to_nir(net, {EulerLIF: to_lif}, stateful_modules={EulerLIF})
    states, trains = [None, None], [[], []]
    with torch.no_grad():
        for t in range(STEPS):
            s1, states[0] = net.lif1(net.fc1(x[:, t]), states[0])
            s2, states[1] = net.lif2(net.fc2(s1), states[1])
            trains[0].append(s1)
            trains[1].append(s2)
    save("nirtorch_lif", graph, x, [("spikes", torch.stack(t, 1)) for t in trains], dt, "nirtorch",
         exporter="nirtorch.torch_to_nir", neuron="a user's forward-Euler LIF module")


FRAMEWORKS = {"snntorch": snntorch_cases, "norse": norse_cases, "sinabs": sinabs_cases, "rockpool": rockpool_cases,
              "nirtorch": nirtorch_cases}

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for framework in sys.argv[1:] or FRAMEWORKS:
        FRAMEWORKS[framework]()
