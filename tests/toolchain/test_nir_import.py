"""NIR graphs from any framework: node types, groups, recurrence, fusion, biases, conventions, resets."""

from __future__ import annotations

import json

import h5py
import nir
import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F

from targets import reference
from targets.chips import load_chip
from targets.loihi2 import run
from toolchain.errors import UserError
from toolchain.finetune import FinetuneOptions, TrainableGraph
from toolchain.nir_import import ImportOptions, graph_from_nir, read_nir_file
from toolchain.passes.quantize import QuantizeOptions, quantize
from toolchain.program import Program
from tests.builders import DT, conv_graph, cuba, lif, synaptic_network

rng = np.random.default_rng(0)


def test_conv_then_pool_fuses_into_one_exact_convolution():
    kernel = rng.normal(size=(3, 2, 3, 3))
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
             "conv": nir.Conv2d(input_shape=(8, 8), weight=kernel, stride=1, padding=1, dilation=1, groups=1,
                                bias=np.array([0.1, -0.2, 0.3])),
             "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "lif": lif((3, 4, 4)), "output": nir.Output(output_type={"output": np.array([3, 4, 4])})}
    graph = graph_from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "pool"), ("pool", "lif"),
                                                            ("lif", "output")], metadata={"dt": 1e-3, "steps": 4}))
    (conn,) = graph.connections
    x = torch.as_tensor(rng.normal(size=(5, 2, 8, 8)))
    expected = F.avg_pool2d(F.conv2d(x, torch.as_tensor(kernel), padding=1), 2)
    got = F.conv2d(x, torch.as_tensor(conn.weight), stride=conn.stride, padding=conn.padding)
    gain = 1e-3 / 2e-3 * 2.0  # dt/tau * R
    assert torch.allclose(got, expected * gain, atol=1e-9)
    assert np.allclose(graph.populations[0].bias.reshape(3, -1)[:, 0], gain * np.array([0.1, -0.2, 0.3]))


def _foreign_graph():
    """Per-neuron thresholds and taus, a CubaLIF, a recurrent edge, an LI readout, no dt in metadata."""
    n_in, n_hid, n_out = 6, 8, 3
    tau = np.where(np.arange(n_hid) < 4, 2e-3, 4e-3)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "fc1": nir.Affine(weight=rng.normal(size=(n_hid, n_in)), bias=np.zeros(n_hid)),
        "cuba": nir.CubaLIF(tau_syn=np.full(n_hid, 2e-3), tau_mem=tau, r=np.ones(n_hid) * 2, v_leak=np.zeros(n_hid),
                            v_threshold=np.where(np.arange(n_hid) % 2 == 0, 1.0, 1.5)),
        "rec": nir.Linear(weight=rng.normal(size=(n_hid, n_hid)) * 0.3),
        "fc2": nir.Linear(weight=rng.normal(size=(n_out, n_hid))),
        "li": nir.LI(tau=np.full(n_out, 5e-3), r=np.ones(n_out), v_leak=np.zeros(n_out)),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "fc1"), ("fc1", "cuba"), ("cuba", "rec"), ("rec", "cuba"), ("cuba", "fc2"), ("fc2", "li"),
             ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={})


def test_foreign_graph_imports_with_groups_recurrence_and_readout(tmp_path):
    path = tmp_path / "g.nir"
    nir.write(str(path), _foreign_graph())
    graph = graph_from_nir(nir.read(str(path)), ImportOptions(steps=10, dt=1e-3))
    assert graph.metadata["dt_source"] == "option"
    assert [c.recurrent for c in graph.connections] == [False, True, False]
    assert not graph.population("li").spiking
    program = quantize(graph, load_chip("loihi2"), QuantizeOptions(bits=8))
    assert len(program.layer("cuba").groups()) == 4  # 2 taus x 2 thresholds
    assert program.readout == "membrane" and program.layer("cuba").du.max() < 4095
    x = rng.integers(0, 256, size=(64, 6))
    ref, chip = reference.run(graph, x), run(program, x)
    assert np.mean(ref.predictions() == chip.predictions()) > 0.9


def test_missing_steps_is_a_clear_error():
    with pytest.raises(UserError, match="--steps"):
        graph_from_nir(_foreign_graph())


def test_unsupported_node_is_named():
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "delay": nir.Delay(delay=np.ones(4)), "output": nir.Output(output_type={"output": np.array([4])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "delay"), ("delay", "output")], type_check=False)
    with pytest.raises(UserError, match="'delay' of type Delay is not supported"):
        graph_from_nir(graph, ImportOptions(steps=4))


# -- a bias in front of a CubaLIF enters its current -------------------------


def _one_biased_neuron(threshold=100.0, weight=0.0, steps=200):
    """tau_syn / dt = 1 / 0.45 ~ 2.2 and a constant bias of 0.05: NIR's v settles at 0.05 / 0.45 / 0.1."""
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}),
             "fc": nir.Affine(weight=np.full((1, 1), weight), bias=np.array([0.05])),
             "cuba": cuba(0.55, 0.9, threshold, 1), "output": nir.Output(output_type={"output": np.array([1])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "cuba"), ("cuba", "output")],
                        metadata={"dt": DT, "steps": steps})


def test_bias_into_a_cuba_lif_is_filtered_by_its_current():
    """The float reference follows NIR (and snnTorch's Synaptic): v reaches 1.111, not 0.500."""
    graph = graph_from_nir(_one_biased_neuron())
    pop = graph.population("cuba")
    assert np.allclose(pop.current_bias, 0.05) and np.all(pop.bias == 0)
    v = reference.run(graph, np.zeros((1, 1)), record=True).v["cuba"][0, :, 0]
    synaptic = snn.Synaptic(alpha=0.55, beta=0.9, threshold=100.0)
    syn, mem, expected = torch.zeros(1), torch.zeros(1), []
    with torch.no_grad():
        for _ in range(len(v)):
            _, syn, mem = synaptic(torch.full((1,), 0.05), syn, mem)
            expected.append(float(mem))
    assert np.allclose(v, expected, rtol=1e-5)
    assert abs(v[-1] - 0.05 / 0.45 / 0.1) < 1e-4


def test_snntorch_synaptic_network_with_biases_matches_snntorch_spike_for_spike():
    nir_graph, x, hidden, out = synaptic_network()
    graph = graph_from_nir(nir_graph, ImportOptions(input_levels=1))
    result = reference.run(graph, x)
    assert hidden.sum() > 1000
    assert np.array_equal(result.activity["lif1"].spike_counts, hidden)
    assert np.array_equal(result.activity["lif2"].spike_counts, out)


def test_current_bias_reaches_nir_voltage_on_loihi2():
    """On the chip the current bias is an always-on synapse into u: v settles within 0.5 % of NIR's."""
    graph = graph_from_nir(_one_biased_neuron(threshold=2.0, weight=0.5, steps=100))
    program = quantize(graph, load_chip("loihi2"), QuantizeOptions(bits=8))
    layer = program.layer("cuba")
    assert layer.has_current_bias and np.all(layer.bias_mant == 0)
    v = run(program, np.zeros((1, 1)), record=True).v["cuba"][0, -1, 0] / layer.v_scale[0]
    assert abs(v - 0.05 / 0.45 / 0.1) < 0.005 * 1.111


# -- reading files -------------------------------------------------------------

def _loosely_typed(path):
    """A valid graph whose Output type is written loosely: nir.read's type check rejects it."""
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc": nir.Affine(weight=rng.normal(size=(2, 3)), bias=np.zeros(2)), "lif": lif((2,), dt=1e-4),
             "output": nir.Output(output_type={"output": np.array([1])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
                         metadata={"steps": 4}, type_check=False)
    nir.write(str(path), graph)
    with pytest.raises(Exception):
        nir.read(str(path))


def test_file_failing_the_type_check_is_read_without_it_and_noted(tmp_path):
    path = tmp_path / "loose.nir"
    _loosely_typed(path)
    graph = graph_from_nir(read_nir_file(path))
    (note,) = graph.metadata["notes"]
    assert "type check" in note and "type_check=False" in note and "\n" not in note
    assert graph.population("lif").size == 2


def test_unreadable_file_is_one_line_naming_the_framework_exporter(tmp_path):
    path = tmp_path / "junk.nir"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(UserError) as err:
        read_nir_file(path)
    message = str(err.value)
    assert "\n" not in message and "your framework's NIR exporter" in message and "export_to_nir" not in message


def test_edge_naming_a_missing_node_is_one_line_naming_edge_and_node(tmp_path):
    """NIR's type check refuses such a graph, so the file is read without it; the import then names the edge.
    Inside a subgraph the edge is named as flattened (nir.read itself refuses such a file, so it is built here)."""
    graph = _recurrent_nodes(nested=False)
    graph.edges.append(("fc2", "ghost"))
    path = tmp_path / "dangling.nir"
    nir.write(str(path), graph)
    with pytest.raises(UserError) as err:
        graph_from_nir(read_nir_file(path))
    assert str(err.value) == "the NIR graph's edge 'fc2' -> 'ghost' names node 'ghost', which the graph does not have"
    nested = _recurrent_nodes(nested=True)
    nested.nodes["rec"].edges.append(("w_rec", "ghost"))
    with pytest.raises(UserError) as err:
        graph_from_nir(nested)
    assert str(err.value) == \
        "the NIR graph's edge 'rec.w_rec' -> 'rec.ghost' names node 'rec.ghost', which the graph does not have"


# -- nested subgraphs ------------------------------------------------------------

def _recurrent_nodes(nested: bool):
    """snnTorch's RSynaptic export: the layer and its recurrent Affine as one NIRGraph node, or flat."""
    n_in, n_hid, n_out = 6, 8, 3
    gen = np.random.default_rng(3)
    cell = {"lif": cuba(0.6, 0.85, 1.0, n_hid),
            "w_rec": nir.Affine(weight=gen.normal(size=(n_hid, n_hid)) * 0.4, bias=np.full(n_hid, 0.05))}
    outer = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc1": nir.Affine(weight=gen.normal(size=(n_hid, n_in)) * 1.5, bias=np.full(n_hid, 0.1)),
             "fc2": nir.Linear(weight=gen.normal(size=(n_out, n_hid))),
             "lif2": cuba(0.5, 0.9, 1.0, n_out), "output": nir.Output(output_type={"output": np.array([n_out])})}
    if nested:
        sub = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n_hid])}), **cell,
                                  "output": nir.Output(output_type={"output": np.array([n_hid])})},
                           edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
        nodes = {**outer, "rec": sub}
        edges = [("input", "fc1"), ("fc1", "rec"), ("rec", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    else:
        nodes = {**outer, "rec.lif": cell["lif"], "rec.w_rec": cell["w_rec"]}
        edges = [("input", "fc1"), ("fc1", "rec.lif"), ("rec.lif", "rec.w_rec"), ("rec.w_rec", "rec.lif"),
                 ("rec.lif", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"steps": 12, "dt": DT}, type_check=False)


def test_nested_recurrent_subgraph_is_flattened(tmp_path):
    path = tmp_path / "rsynaptic.nir"
    nir.write(str(path), _recurrent_nodes(nested=True))
    nested, flat = graph_from_nir(read_nir_file(path)), graph_from_nir(_recurrent_nodes(nested=False))
    assert [p.name for p in nested.populations] == ["rec.lif", "lif2"]
    assert [c.name for c in nested.connections] == [c.name for c in flat.connections]
    assert [c.name for c in nested.connections if c.recurrent] == ["rec.lif->rec.lif"]
    x = rng.integers(0, 256, size=(16, 6))
    a, b = reference.run(nested, x), reference.run(flat, x)
    assert np.array_equal(a.output, b.output) and a.activity["rec.lif"].spike_counts.sum() > 0


# -- per-neuron parameters behind a convolution ------------------------------------


def test_gain_and_threshold_varying_within_a_channel_become_neuron_groups(loihi2):
    conv, dense = graph_from_nir(conv_graph(dense=False)), graph_from_nir(conv_graph(dense=True))
    assert [c.kind for c in conv.connections] == ["conv", "dense"]
    x = rng.integers(0, 256, size=(64, 1, 6, 6))
    a, b = reference.run(conv, x, record=True), reference.run(dense, x.reshape(64, 36), record=True)
    assert np.array_equal(a.trains["lif"], b.trains["lif"]) and a.trains["lif"].sum() > 100
    program = quantize(conv, loihi2, QuantizeOptions(bits=8))
    layer = program.layer("lif")
    assert len(layer.groups()) == 4  # 2 gains x 2 thresholds, each spanning both channels
    chip = run(program, x)
    assert np.mean(chip.predictions() == a.predictions()) > 0.9


def test_membrane_readout_with_gain_varying_within_a_channel_is_refused():
    graph = conv_graph(dense=False)
    node = graph.nodes["lif"]
    graph.nodes["lif"] = nir.LI(tau=node.tau, r=node.r, v_leak=node.v_leak)
    with pytest.raises(UserError, match="neuron node 'lif': .*varies within a channel"):
        graph_from_nir(graph)


# -- time constants, dt and framework conventions ----------------------------------

def test_tau_equal_to_dt_in_float32_is_accepted():
    """snnTorch Leaky(beta=0) exports tau = dt / (1 - 0) in float32, a hair below dt."""
    tau = np.float32(1e-4) / np.float32(1.0)
    assert float(tau) < 1e-4
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "fc": nir.Linear(weight=np.eye(2)),
             "lif": nir.LIF(tau=np.full(2, tau), r=np.full(2, tau / np.float32(1e-4)), v_leak=np.zeros(2),
                            v_threshold=np.ones(2)), "output": nir.Output(output_type={"output": np.array([2])})}
    graph = graph_from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
                                        metadata={"steps": 3}))
    assert np.all(graph.population("lif").beta == 0)
    nodes["lif"] = lif((2,), tau=0.5e-4, dt=1e-4)
    with pytest.raises(UserError, match="shorter than the step dt=0.0001"):
        graph_from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
                                    metadata={"steps": 3}))


def _plain_graph(metadata, tau=2e-2):
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "fc": nir.Linear(weight=np.eye(2)),
             "if": nir.IF(r=np.full(2, 2.0), v_threshold=np.ones(2)), "fc2": nir.Linear(weight=np.eye(2)),
             "lif": lif((2,), tau=tau), "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "fc"), ("fc", "if"), ("if", "fc2"), ("fc2", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"steps": 4, **metadata})


@pytest.mark.parametrize("framework, dt, reset", [("norse", 1e-3, "zero"), ("snntorch", 1e-4, "subtract"),
                                                  ("sinabs", 1.0, "subtract"), ("lava-dl", 1e-4, "zero"),
                                                  ("slayer", 1e-4, "zero"), ("spinnaker2", 1e-4, "zero")])
def test_named_framework_gives_dt_and_reset_with_their_source(framework, dt, reset):
    graph = graph_from_nir(_plain_graph({}, tau=4.0), ImportOptions(framework=framework))  # Sinabs: tau in steps
    canonical = "lava-dl" if framework == "slayer" else framework
    conventions = graph.metadata["conventions"]
    assert conventions["framework"] == (canonical, "option")
    assert conventions["dt"] == (dt, f"{canonical} convention") and graph.dt == dt
    assert conventions["reset"] == (reset, f"{canonical} convention")
    assert {p.reset for p in graph.populations} == {reset}


def test_framework_is_detected_from_metadata_and_the_file_and_options_win():
    graph = graph_from_nir(_plain_graph({"source_framework": "Norse 1.1"}))
    assert graph.metadata["conventions"]["framework"] == ("norse", "graph metadata")
    assert graph.metadata["conventions"]["dt"] == (1e-3, "norse convention")
    stated = graph_from_nir(_plain_graph({"producer": "norse", "dt": 5e-4, "reset": "zero"}),
                            ImportOptions(dt=2e-3, reset="subtract"))
    assert stated.metadata["conventions"]["dt"] == (5e-4, "graph metadata")
    assert stated.metadata["conventions"]["reset"] == ("subtract", "option")
    ours = graph_from_nir(_plain_graph({}))
    assert ours.metadata["conventions"]["dt"] == (1e-4, "default") and ours.metadata["dt_source"] == "default"
    assert ours.metadata["conventions"]["reset"] == ("zero", "default")


def test_the_same_file_at_norse_dt_differs_from_our_default():
    """NIR does not store dt: Norse's 1e-3 and our 1e-4 are different networks, and the graph says which ran."""
    ours, norse = graph_from_nir(_plain_graph({})), graph_from_nir(_plain_graph({}), ImportOptions(framework="norse"))
    assert ours.population("lif").beta[0] == pytest.approx(1 - 1e-4 / 2e-2)
    assert norse.population("lif").beta[0] == pytest.approx(1 - 1e-3 / 2e-2)


def test_if_discretisation_follows_the_convention():
    """Frameworks step IF as v <- v + R I; NIR's dv/dt = R I read literally (framework "nir") gives dt R I."""
    discrete = graph_from_nir(_plain_graph({}))
    literal = graph_from_nir(_plain_graph({}), ImportOptions(framework="nir", dt=1e-3))
    assert np.allclose(discrete.connections[0].weight, 2 * np.eye(2))
    assert np.allclose(literal.connections[0].weight, 2e-3 * np.eye(2))
    assert literal.metadata["conventions"]["if_discretisation"] == ("euler", "nir convention")


def test_rockpool_dt_is_derived_as_rockpools_importer_does():
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "fc": nir.Linear(weight=np.eye(2)),
             "cuba": nir.CubaLIF(tau_syn=np.full(2, 0.01), tau_mem=np.full(2, 0.02), r=np.full(2, 0.02 / 1e-3 - 1),
                                 v_leak=np.zeros(2), v_threshold=np.ones(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    graph = graph_from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "cuba"), ("cuba", "output")],
                                        metadata={"steps": 4}), ImportOptions(framework="rockpool"))
    assert graph.dt == pytest.approx(1e-3) and graph.metadata["dt_source"] == "rockpool convention"
    assert any("Rockpool" in note for note in graph.metadata["notes"])


@pytest.mark.parametrize("options, fragment", [(dict(dt=0.0), "--dt 0.0"), (dict(dt=-1e-3), "--dt -0.001"),
                                               (dict(dt=float("nan")), "--dt nan"), (dict(dt=float("inf")), "--dt inf"),
                                               (dict(steps=0), "--steps 0"), (dict(input_levels=0), "--input-levels 0"),
                                               (dict(reset="half"), "--reset 'half'"),
                                               (dict(framework="brian2"), "--framework 'brian2'")])
def test_import_options_are_checked_in_one_line(options, fragment):
    with pytest.raises(UserError) as err:
        ImportOptions(**options)
    assert str(err.value).startswith(fragment) and "\n" not in str(err.value)


def test_bad_dt_or_steps_in_the_file_are_one_line():
    for metadata, fragment in (({"dt": 0.0}, "dt=0.0"), ({"steps": 0}, "steps=0")):
        graph = _plain_graph({})
        graph.metadata.update(metadata)
        with pytest.raises(UserError, match=fragment):
            graph_from_nir(graph)


# -- reset by subtraction --------------------------------------------------------------

def test_subtract_reset_compiles_into_the_program_and_survives_the_file(tmp_path, loihi2):
    graph = graph_from_nir(synaptic_network()[0], ImportOptions(reset="subtract", input_levels=1))
    assert graph.metadata["conventions"]["reset"] == ("subtract", "option")
    program = quantize(graph, loihi2, QuantizeOptions(bits=8))
    assert {layer.reset for layer in program.layers} == {"subtract"}
    loaded = Program.load(program.save(tmp_path / "program.h5"))
    assert [layer.reset for layer in loaded.layers] == ["subtract", "subtract"]
    for a, b in zip(program.layers, loaded.layers):
        assert np.array_equal(a.current_bias_mant, b.current_bias_mant)
        assert np.array_equal(a.current_bias_exp, b.current_bias_exp)
    x = synaptic_network()[1]
    float_run, chip_run = reference.run(graph, x), run(loaded, x)
    zero_reset = run(quantize(graph_from_nir(synaptic_network()[0], ImportOptions(input_levels=1)), loihi2,
                              QuantizeOptions(bits=8)), x)
    hidden = [r.activity["lif1"].spike_counts.sum() for r in (float_run, chip_run, zero_reset)]
    assert abs(hidden[1] - hidden[0]) < 0.02 * hidden[0] < abs(hidden[2] - hidden[0])


def test_program_with_no_steps_is_refused(tmp_path, loihi2):
    program = quantize(graph_from_nir(_one_biased_neuron()), loihi2, QuantizeOptions(bits=8))
    with pytest.raises(ValueError, match="steps"):
        Program(chip="loihi2", input_shape=(1,), input_levels=255, steps=0, layers=program.layers,
                synapses=program.synapses, output=program.output)
    path = program.save(tmp_path / "program.h5")
    with h5py.File(path, "r+") as f:
        header = json.loads(f.attrs["header"])
        f.attrs["header"] = json.dumps({**header, "steps": 0})
    with pytest.raises(UserError, match="inconsistent program"):
        Program.load(path)


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_fine_tuner_computes_what_the_reference_computes(reset):
    """toolchain.finetune repeats the reference's neuron equations (current bias, reset) to train them."""
    nir_graph, x, _, _ = synaptic_network(samples=8, steps=12)
    x = x[:, 0]  # the fine-tuner holds each sample for every step
    graph = graph_from_nir(nir_graph, ImportOptions(input_levels=1, reset=reset))
    model = TrainableGraph(graph, FinetuneOptions(bits=8))
    with torch.no_grad():
        counts = model(torch.as_tensor(x)).numpy()
    expected = reference.run(model.to_graph(), x).output
    assert np.array_equal(counts, expected) and expected.sum() > 0
    assert [bool(p.requires_grad) for p in model.current_biases] == [True, True]
