"""NIR files written by other frameworks' own exporters, run against what those frameworks computed.

tests/data/nir/ holds each file with the framework's recorded spikes on
fixed inputs (tools/make_nir_corpus.py; README there). Where the framework
follows NIR's equations, the float reference reproduces it spike for spike
(and the independent simulator in tests/nir_simulator.py does too, which
shows the framework, not only our importer, follows NIR). Where it departs,
the test states the departure (docs/guides/nir_frameworks.md) and shows that it
accounts for every difference. None of these frameworks is needed here.
"""

from __future__ import annotations

import copy
import json

import nir
import numpy as np
import pytest
import torch

from targets import reference
from tests.nir_simulator import NEURONS, flatten_graph, simulate
from toolchain.errors import UserError
from toolchain.nir_import import ImportOptions, graph_from_nir, read_nir_file
from tests.paths import DATA

CORPUS = DATA / "nir"


def case(name: str):
    """(NIR graph, input spikes, recorded per-layer outputs, dt, about)."""
    with np.load(CORPUS / f"{name}.npz", allow_pickle=False) as data:
        layers = [data[key] for key in sorted((k for k in data.files if k.startswith(("spikes_", "v_"))),
                                              key=lambda k: int(k.rsplit("_", 1)[1]))]
        return (read_nir_file(CORPUS / f"{name}.nir"), data["input"], layers, float(data["dt"]),
                json.loads(str(data["about"])))


def ours(graph: nir.NIRGraph, x: np.ndarray, framework: str, reset: str, **options) -> list[np.ndarray]:
    """The float reference's spikes (or LI membrane) per neuron layer, feed-forward order. nirtorch is
    no simulator and has no conventions of its own: its user states dt (``options``)."""
    imported = graph_from_nir(graph, ImportOptions(steps=x.shape[1], input_levels=1, input_shape=x.shape[2:],
                                                   framework=None if framework == "nirtorch" else framework,
                                                   reset=reset, **options))
    result = reference.run(imported, x, record=True)
    return [result.trains[p.name] if p.spiking else result.v[p.name] for p in imported.populations]


def simulated(graph: nir.NIRGraph, x: np.ndarray, dt: float) -> list[np.ndarray]:
    nodes, _ = flatten_graph(graph)
    out = simulate(graph, x.astype(np.float64), dt)
    return [out[n].reshape(len(x), x.shape[1], -1) for n in out if isinstance(nodes[n], NEURONS)]


def assert_reproduces(computed: list[np.ndarray], recorded: list[np.ndarray]):
    assert len(computed) == len(recorded)
    for layer, (mine, theirs) in enumerate(zip(computed, recorded)):
        mine = mine.reshape(theirs.shape)
        if theirs.dtype == np.uint8:
            assert np.array_equal(mine, theirs), f"layer {layer}: {int((mine != theirs).sum())} spike slots differ"
        else:
            np.testing.assert_allclose(mine, theirs, atol=1e-5, err_msg=f"layer {layer}")


FOLLOWS_NIR = {  # file -> the reset the framework ran with (NIR cannot say; the user states it)
    "snntorch_leaky_zero": "zero",  # reset_delay=True: the spike trains of zero reset are NIR's
    "snntorch_synaptic_bias": "zero",  # an Affine's bias into a CubaLIF's current
    "snntorch_rleaky": "zero",  # recurrent, as a nested NIRGraph
    "snntorch_conv": "zero",  # Conv2d, AvgPool2d, Flatten
    "sinabs_iaf": "zero",  # SingleSpike + MembraneReset
    "sinabs_conv": "zero",  # Conv2d, SumPool2d, Flatten; written after graph.infer_types()
    "nirtorch_lif": "zero",  # torch_to_nir of torch layers and a user's own LIF module
}


@pytest.mark.parametrize("name", sorted(FOLLOWS_NIR))
def test_reference_reproduces_frameworks_that_follow_nir(name):
    graph, x, recorded, dt, about = case(name)
    assert sum(int(layer.sum()) for layer in recorded) > 100  # the recording has activity to compare
    assert_reproduces(simulated(graph, x, dt), recorded)
    assert_reproduces(ours(graph, x, about["framework"], FOLLOWS_NIR[name], dt=dt if name.startswith("nirtorch")
                           else None), recorded)


def test_every_corpus_file_reads_and_imports():
    """Rockpool's and Sinabs' exports fail NIR's type check but are valid graphs."""
    names = sorted(p.stem for p in CORPUS.glob("*.nir"))
    assert len(names) == 16 and all((CORPUS / f"{n}.npz").exists() for n in names)
    for name in names:
        graph, x, recorded, dt, about = case(name)
        assert len(ours(graph, x, about["framework"], "zero", dt=dt if about["framework"] == "nirtorch"
                        else None)) == len(recorded)
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 2 * 2**20
    for strict_fails in ("rockpool_lif", "sinabs_iaf"):
        with pytest.raises(Exception):
            nir.read(str(CORPUS / f"{strict_fails}.nir"))


# -- departures: docs/guides/nir_frameworks.md ----------------------------------------------------------

def corrected(graph: nir.NIRGraph, fix) -> nir.NIRGraph:
    graph = copy.deepcopy(graph)
    for node in flatten_graph(graph)[0].values():
        fix(node)
    return graph


def norse_time_constants(dt):
    """Norse 1.1.0's to_nir writes tau = dt / tau_inv = dt * tau; the true tau is the written one / dt.
    Its LIFCell also adds its input to the current unscaled (w_in = tau_syn / dt in NIR's terms)."""
    def fix(node):
        for attr in ("tau", "tau_mem", "tau_syn"):
            if hasattr(node, attr):
                setattr(node, attr, np.asarray(getattr(node, attr)) / dt)
        if isinstance(node, nir.CubaLIF):
            node.w_in = node.tau_syn / dt
    return fix


def sinabs_exponential(dt):
    """Sinabs decays by exp(-dt / tau) per step; NIR's Euler step does the same with
    tau' = dt / (1 - exp(-dt / tau))."""
    def fix(node):
        if isinstance(node, (nir.LIF, nir.LI)):
            node.tau = dt / (1 - np.exp(-dt / np.asarray(node.tau)))
    return fix


DEPARTURES = {"norse_lifbox": norse_time_constants, "norse_lif": norse_time_constants,
              "norse_iaf_li": norse_time_constants, "sinabs_lif": sinabs_exponential}


@pytest.mark.parametrize("name", sorted(DEPARTURES))
def test_departure_accounts_for_every_difference(name):
    graph, x, recorded, dt, about = case(name)
    fixed = corrected(graph, DEPARTURES[name](dt))
    as_written = simulated(graph, x, dt)
    assert not all(np.allclose(a.reshape(r.shape), r, atol=1e-5) for a, r in zip(as_written, recorded))
    assert_reproduces(simulated(fixed, x, dt), recorded)
    assert_reproduces(ours(fixed, x, about["framework"], "zero"), recorded)


@pytest.mark.parametrize("name", ["norse_lifbox", "norse_lif", "norse_iaf_li"])
def test_framework_norse_undoes_its_exporter_and_reproduces_norse(name):
    graph, x, recorded, dt, _ = case(name)
    assert_reproduces(ours(graph, x, "norse", "zero"), recorded)
    imported = graph_from_nir(graph, ImportOptions(steps=x.shape[1], input_levels=1, input_shape=x.shape[2:],
                                                   framework="norse"))
    assert any("Norse 1.1.0 writes time constants as dt x tau" in note for note in imported.metadata["notes"])
    written = [getattr(node, attr) for node in flatten_graph(graph)[0].values() for attr in ("tau", "tau_mem")
               if hasattr(node, attr)]
    assert written and all(np.all(np.asarray(tau) < dt) for tau in written)  # the caller's graph is not changed


def test_norse_files_without_the_framework_are_refused_with_the_hint():
    graph, x, *_ = case("norse_lifbox")
    with pytest.raises(UserError, match="shorter than the step dt=0.0001.*the right --framework"):
        graph_from_nir(graph, ImportOptions(steps=x.shape[1], input_levels=1, input_shape=x.shape[2:], dt=1e-4))


def test_norse_writes_dt_times_tau():
    graph, *_ = case("norse_lifbox")
    lif = graph.nodes["1"]
    np.testing.assert_allclose(np.asarray(lif.tau), 1e-3 * 1e-2)  # Norse's default tau_mem is 10 ms


def test_sinabs_input_keeps_the_time_dimension():
    graph, x, *_ = case("sinabs_iaf")
    assert tuple(graph.nodes["input"].input_type["input"]) == x.shape[1:]  # (steps, features), not (features,)


def first_event_agrees(computed, recorded, event, including: bool):
    """Spikes agree in every (sample, neuron) until its first ``event`` step (and at it, if ``including``);
    returns that and how many events there are."""
    computed = computed.reshape(recorded.shape)
    steps = np.arange(recorded.shape[1])[None, :, None]
    first = np.where(event.any(1, keepdims=True), event.argmax(1)[:, None], recorded.shape[1])
    before = steps <= first if including else steps < first
    return np.array_equal(computed[before], recorded[before]), int(event.sum())


def test_sinabs_multispike_agrees_until_a_neuron_emits_two_spikes_in_a_step():
    graph, x, recorded, dt, about = case("sinabs_iaf_multispike")
    mine = ours(graph, x, about["framework"], "subtract")[0]
    agree, events = first_event_agrees(mine, recorded[0], recorded[0] > 1, including=False)
    assert events > 0 and agree and np.all(mine.reshape(recorded[0].shape)[recorded[0] > 1] == 1)


def test_rockpool_is_exponential_multispike_and_decays_the_current_before_use():
    """Rockpool: i <- exp(-dt/tau_syn) (i + input); v <- exp(-dt/tau_mem) v + i; floor(v / theta) spikes
    when v >= theta, reset by subtraction. Its file states forward-Euler taus and r = tau exp(-dt/tau) / dt."""
    graph, x, recorded, dt, about = case("rockpool_lif")

    def fix(node):
        if isinstance(node, nir.CubaLIF):
            syn, mem = np.exp(-dt / node.tau_syn), np.exp(-dt / node.tau_mem)
            node.tau_syn, node.tau_mem = dt / (1 - syn), dt / (1 - mem)
            node.r, node.w_in = node.tau_mem / dt, syn * node.tau_syn / dt
    mine = ours(corrected(graph, fix), x, about["framework"], "subtract", dt=dt)[0]  # r no longer tells dt
    agree, events = first_event_agrees(mine, recorded[0], recorded[0] > 1, including=False)
    assert events > 0 and agree
    assert not np.array_equal(ours(graph, x, about["framework"], "subtract")[0].reshape(recorded[0].shape),
                              recorded[0])


# snnTorch's own reset rules, as its Leaky/Synaptic code computes them, on the first layer (its input
# is the file's first Affine applied to the recorded input, so nothing else can differ).

def first_layer_drive(graph, x):
    affine = graph.nodes["0"]
    return torch.nn.functional.linear(torch.as_tensor(x, dtype=torch.float32),
                                      torch.as_tensor(np.asarray(affine.weight)),
                                      torch.as_tensor(np.asarray(affine.bias)))


def snntorch_first_layer(drive, about, synaptic=False):
    beta, alpha = torch.tensor(about["beta"]), torch.tensor(about.get("alpha", 0.0))
    delay, subtract = about["reset_delay"], about["reset_mechanism"] == "subtract"
    mem, syn, trains = torch.zeros_like(drive[:, 0]), torch.zeros_like(drive[:, 0]), []
    for t in range(drive.shape[1]):
        reset = (mem > 1).float()  # from the membrane as stored after the previous step
        if synaptic:
            syn = alpha * syn + drive[:, t]
            mem = beta * mem + syn
        else:
            mem = beta * mem + drive[:, t]
        mem = mem - reset * 1.0 if subtract else mem - reset * mem
        spikes = (mem > 1).float()
        if not delay:  # the reset now, less what the previous step's reset already did
            mem = mem - (spikes - reset) * (1.0 if subtract else mem)
        trains.append(spikes)
    return torch.stack(trains, 1).numpy().astype(np.uint8)


@pytest.mark.parametrize("name,synaptic", [("snntorch_leaky_subtract", False),
                                           ("snntorch_leaky_subtract_delayed", False),
                                           ("snntorch_synaptic_bias_delayed", True)])
def test_snntorch_reset_rules_reproduce_its_first_layer(name, synaptic):
    graph, x, recorded, _, about = case(name)
    model = snntorch_first_layer(first_layer_drive(graph, x), about, synaptic)
    assert np.array_equal(model, recorded[0])
    assert not np.array_equal(ours(graph, x, "snntorch", about["reset_mechanism"])[0].reshape(model.shape), model)


def test_snntorch_subtract_without_delay_is_ours_until_the_membrane_stays_above_threshold():
    """With reset_delay=False a membrane still above threshold after its subtraction counts as a pending
    reset: snnTorch subtracts again next step, so the neuron needs v > 2 theta to fire then."""
    graph, x, recorded, _, about = case("snntorch_leaky_subtract")
    imported = graph_from_nir(graph, ImportOptions(steps=x.shape[1], input_levels=1, framework="snntorch",
                                                   reset="subtract"))
    result = reference.run(imported, x, record=True)
    first = imported.populations[0].name
    still_above = result.v[first] > imported.populations[0].threshold
    agree, events = first_event_agrees(result.trains[first], recorded[0], still_above, including=True)
    assert events > 0 and agree
