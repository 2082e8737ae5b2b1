"""Hardware in the loop: the stepping chip, the board server and its client, chip-in-the-loop fine-tuning."""

from __future__ import annotations

import json
import socket
import struct
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from targets.hil import protocol
from targets.hil.client import Board, BoardError
from targets.hil.server import Server
from targets.loihi2.chip import Chip, run_samples
from targets.loihi2.emulator import run
from tests.builders import chains, conv_skip_program, to_program
from snn_compile.chip_in_loop import chip_in_the_loop
from snn_compile.cli import main
from toolchain.errors import UserError
from toolchain.finetune import FinetuneOptions
from toolchain.ir import INPUT
from toolchain.passes.quantize import QuantizeOptions, quantize
from toolchain.program import Layer, Program, Synapses
from tests.board import gone, start_serve


pytestmark = pytest.mark.usefixtures("one_thread")


# -- the stepping chip -----------------------------------------------------------


def _per_sample_on_chip(program: Program, inputs: np.ndarray):
    """Each sample alone: reset, ``steps`` input steps, ``latency`` zero steps, everything probed."""
    chip = Chip(program)
    outputs = []
    for sample in inputs:
        chip.reset()
        zeros = np.zeros((program.latency,) + sample.shape[1:], dtype=sample.dtype)
        outputs.append(chip.step(np.concatenate([sample, zeros]), probe=True))
    return outputs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_chip_step_by_step_equals_emulator_shifted_by_layer_depth(case):
    layers, inputs, levels = case
    inputs = np.array(inputs)
    program = to_program(layers, inputs.shape[2], inputs.shape[1], levels)
    expected = run(program, inputs, record=True)
    for s, out in enumerate(_per_sample_on_chip(program, inputs)):
        for layer in program.layers:
            window = slice(program.depth[layer.name], program.depth[layer.name] + program.steps)
            assert np.array_equal(out.spikes[layer.name][window], expected.trains[layer.name][s])
            assert np.array_equal(out.u[layer.name][window], expected.u[layer.name][s])
            assert np.array_equal(out.v[layer.name][window], expected.v[layer.name][s])
    # back to back without host resets (each layer resets every `steps`, offset by its depth), in lanes
    readout, traces = run_samples(Chip(program, lanes=len(inputs), reset_interval=program.steps), inputs, probe=True)
    assert np.array_equal(readout, expected.output)
    streamed = Chip(program, reset_interval=program.steps)
    tail = np.zeros((program.latency,) + inputs.shape[2:], dtype=inputs.dtype)
    out = streamed.step(np.concatenate(list(inputs) + [tail])).output
    for s in range(len(inputs)):
        start = program.latency + s * program.steps
        assert np.array_equal(out[start:start + program.steps], expected.trains[program.output][s])


def test_convolution_recurrence_and_delayed_skip_connection_match_emulator():
    program = conv_skip_program()
    inputs = np.random.default_rng(0).integers(0, 16, (5, 7, 1, 4, 4))
    expected = run(program, inputs, record=True)
    assert program.latency == 3 and sum(t.sum() for t in expected.trains.values()) > 0
    for s, out in enumerate(_per_sample_on_chip(program, inputs)):
        for layer in program.layers:
            k = program.depth[layer.name]
            assert np.array_equal(out.spikes[layer.name][k:k + program.steps], expected.trains[layer.name][s])
            assert np.array_equal(out.v[layer.name][k:k + program.steps], expected.v[layer.name][s])


@pytest.fixture(scope="module")
def mlp_graph(mlp):
    return mlp[1]


def test_trained_network_on_chip_gives_the_emulators_counts_and_predictions(mlp_program, digits):
    x = digits.x_test[:48]
    expected = run(mlp_program, x)
    chip = Chip(mlp_program, lanes=16)
    readout, _ = run_samples(chip, x)
    assert np.array_equal(readout, expected.output)
    assert np.array_equal(readout.argmax(1), expected.predictions())
    counters = chip.counters()
    assert counters["steps"] == 3 * (mlp_program.steps + mlp_program.latency)
    assert counters["spikes"] == sum(counters["spikes_per_layer"].values()) > 0
    assert counters["real_time_factor"] > 0


def test_default_energy_is_the_loihi_estimate_from_the_counters(mlp_program, digits, loihi2):
    chip = Chip(mlp_program)
    run_samples(chip, digits.x_test[:4])
    c = chip.counters()
    cost = loihi2.cost
    silent = c["neuron_updates"] - c["spikes"]
    expected_pj = ((c["synaptic_ops"] + c["input_ops"]) * cost("synaptic_op_pj")
                   + silent * cost("neuron_update_inactive_pj")
                   + c["spikes"] * (cost("neuron_update_active_pj") + cost("spike_in_tile_pj")))
    assert c["energy_joules"] == pytest.approx(expected_pj * 1e-12)
    chip.step(np.zeros((3, 1, 8, 8), dtype=int))
    assert chip.counters()["energy_joules"] > c["energy_joules"]


def test_counters_count_synaptic_operations_from_the_chips_own_activity(mlp_program, digits):
    chip = Chip(mlp_program)
    stream = np.concatenate([np.repeat(digits.x_test[:1], 5, axis=0), np.zeros((3, 1, 8, 8), dtype=int)])
    out = chip.step(stream, probe=True)
    first, second = mlp_program.synapses
    input_events = (stream.reshape(len(stream), -1) != 0).sum(0)
    hidden_spikes = out.spikes[second.source].sum(0)
    counters = chip.counters()
    assert counters["input_ops"] == int(input_events @ (first.weights != 0).sum(0))
    assert counters["synaptic_ops"] == int(hidden_spikes @ (second.weights != 0).sum(0)) > 0
    assert counters["neuron_updates"] == len(stream) * sum(layer.size for layer in mlp_program.layers)


def test_chip_rejects_bad_input_and_counts_energy_through_a_cost_hook(mlp_program):
    chip = Chip(mlp_program, cost_model=lambda c: 1e-12 * c["synaptic_ops"])
    with pytest.raises(UserError, match="integers in"):
        chip.step(np.full((1, 1, 8, 8), 17))
    with pytest.raises(UserError, match="expected"):
        chip.step(np.zeros((1, 64)))
    with pytest.raises(UserError, match="cannot probe"):
        chip.step(np.zeros((1, 1, 8, 8)), probe=["nope"])
    chip.step(np.full((4, 1, 8, 8), 16))
    counters = chip.counters()
    assert counters["energy_joules"] == pytest.approx(1e-12 * counters["synaptic_ops"])
    with pytest.raises(UserError, match="no program"):
        Chip().step(np.zeros((1, 1, 8, 8)))


# -- the board over a socket ---------------------------------------------------


@pytest.fixture(scope="module")
def program_file(mlp_program, tmp_path_factory):
    return mlp_program.save(tmp_path_factory.mktemp("hil") / "program.h5")


@pytest.fixture
def server(program_file):
    board = Server(program_file)
    thread = threading.Thread(target=board.serve_forever, daemon=True)
    thread.start()
    yield board
    board.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive()


def _address(server: Server) -> str:
    return f"{server.address[0]}:{server.address[1]}"


def test_board_over_tcp_gives_the_emulators_spike_trains(server, mlp_program, digits):
    x = digits.x_test[:20]
    expected = run(mlp_program, x, record=True)
    with Board(_address(server), lanes=10) as board:
        readout, traces = run_samples(board, x, probe=True)
        counters = board.counters()
    assert np.array_equal(readout, expected.output)
    for name in expected.trains:
        assert np.array_equal(traces[name]["spikes"], expected.trains[name])
        assert np.array_equal(traces[name]["v"], expected.v[name])
    assert counters["steps"] == 2 * (mlp_program.steps + mlp_program.latency)
    assert counters["host"]["steps"] == counters["steps"] and counters["host"]["real_time_factor"] > 0


def test_board_over_unix_socket_in_closed_loop_equals_in_process_chip(program_file, mlp_program, digits, tmp_path):
    path = tmp_path / "board.sock"
    server = Server(program_file, unix_path=path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    chip = Chip(mlp_program)
    sample = digits.x_test[:1]
    with Board(f"unix:{path}") as board:
        board.load(mlp_program)  # the program travels over the socket
        for step in range(mlp_program.steps + mlp_program.latency):
            feed = sample if step < mlp_program.steps else np.zeros_like(sample)
            assert np.array_equal(board.step(feed).output, chip.step(feed).output)
        assert board.timing()["requests"] == mlp_program.steps + mlp_program.latency
        board.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive() and not path.exists()


def _raw(server: Server) -> socket.socket:
    return socket.create_connection(server.address, timeout=10)


def _frame(kind: int, body: bytes, magic: bytes = protocol.MAGIC, version: int = protocol.VERSION) -> bytes:
    return protocol.HEADER.pack(magic, version, kind, 0, len(body)) + body


def _body(meta: dict) -> bytes:
    encoded = json.dumps(meta).encode()
    return struct.pack("!I", len(encoded)) + encoded


def _still_serves(server: Server, mlp_program, digits) -> None:
    with Board(_address(server)) as board:
        readout, _ = run_samples(board, digits.x_test[:2])
    assert np.array_equal(readout, run(mlp_program, digits.x_test[:2]).output)


def test_malformed_frames_get_errors_and_keep_the_connection_when_it_can_be_framed(server, mlp_program, digits):
    sock = _raw(server)
    bad_requests = [
        _frame(99, _body({})),                                             # unknown type
        _frame(protocol.STEP, struct.pack("!I", 5) + b"{oops"),           # not JSON
        _frame(protocol.STEP, struct.pack("!I", 500) + b"{}"),            # meta runs past the body
        _frame(protocol.STEP, _body({"arrays": [{"name": "inputs", "dtype": "<i4", "shape": [1, 1, 8, 8]}]})),
        _frame(protocol.STEP, _body({"arrays": [{"name": "inputs", "dtype": "object", "shape": [1]}]}) + b"x"),
        _frame(protocol.STEP, _body({"arrays": [{"name": "inputs", "dtype": "<i8", "shape": [2**30] * 4}]})),
        _frame(protocol.STEP, _body({})),                                  # no inputs
        protocol.encode(protocol.Message(protocol.STEP, {}, {"inputs": np.full((1, 1, 8, 8), 99)})),
        protocol.encode(protocol.Message(protocol.STEP, {"probe": "all"}, {"inputs": np.zeros((1, 1, 8, 8))})),
    ]
    for request in bad_requests:
        sock.sendall(request)
        reply = protocol.receive(sock)
        assert reply.kind == protocol.ERROR and reply.meta["error"]
    protocol.send(sock, protocol.Message(protocol.INFO))
    assert protocol.receive(sock).meta["steps"] == mlp_program.steps
    # an unframeable header: an error, then the connection is closed
    for header in (_frame(protocol.INFO, b"", magic=b"HTTP"), _frame(protocol.INFO, b"", version=9),
                   protocol.HEADER.pack(protocol.MAGIC, protocol.VERSION, protocol.INFO, 0, protocol.MAX_BODY + 1)):
        sock.close()
        sock = _raw(server)
        sock.sendall(header)
        assert protocol.receive(sock).kind == protocol.ERROR
        assert sock.recv(1) == b""
    sock.close()
    _still_serves(server, mlp_program, digits)


def test_truncated_frames_and_clients_leaving_mid_stream_are_survived(server, mlp_program, digits):
    step = protocol.encode(protocol.Message(protocol.STEP, {}, {"inputs": np.zeros((200, 1, 8, 8), np.uint8)}))
    for cut in (5, protocol.HEADER.size + 3, len(step) // 2):
        sock = _raw(server)
        sock.sendall(step[:cut])
        sock.close()
    sock = _raw(server)  # sends a long block and leaves without reading the answer
    sock.sendall(step)
    sock.close()
    with Board(_address(server)) as board:  # leaves in the middle of a closed loop
        for _ in range(3):
            board.step(digits.x_test[:1])
    _still_serves(server, mlp_program, digits)


def test_programs_that_do_not_load_or_do_not_fit_get_an_error_reply(server, mlp_program, digits, tmp_path):
    wide = Program(chip="loihi2", input_shape=(5000,), input_levels=1, steps=2,
                   layers=[Layer("l", (1,), du=4095, dv=0, vth=10, bias_mant=0, bias_exp=0, v_scale=1.0)],
                   synapses=[Synapses(INPUT, "l", np.ones((1, 5000), dtype=int), np.zeros(1), 8)], output="l")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not a program at all")
    with Board(_address(server)) as board:
        with pytest.raises(BoardError, match="not an snn-compile program"):
            board.load(garbage)
        with pytest.raises(BoardError, match="does not fit"):
            board.load(wide)
        assert board.info()["steps"] == mlp_program.steps  # the loaded program is unchanged
    _still_serves(server, mlp_program, digits)


def test_two_clients_at_once_never_mix_state(server, mlp_program, digits):
    a_in, b_in = digits.x_test[:1], digits.x_test[1:2]
    expected_a = Chip(mlp_program).step(np.repeat(a_in, 12, axis=0)).output
    expected_b = Chip(mlp_program).step(np.repeat(b_in, 12, axis=0)).output
    with Board(_address(server)) as a, Board(_address(server)) as b:
        got_a, got_b = [], []
        for _ in range(12):  # interleaved step by step
            got_a.append(a.step(a_in).output)
            got_b.append(b.step(b_in).output)
        assert np.array_equal(np.concatenate(got_a), expected_a)
        assert np.array_equal(np.concatenate(got_b), expected_b)
        assert a.counters()["steps"] == b.counters()["steps"] == 12
    results = {}

    def drive(name, sample):
        with Board(_address(server)) as board:
            results[name] = np.concatenate([board.step(sample).output for _ in range(12)])
    threads = [threading.Thread(target=drive, args=("a", a_in)), threading.Thread(target=drive, args=("b", b_in))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert np.array_equal(results["a"], expected_a) and np.array_equal(results["b"], expected_b)


# -- `snn-compile serve` as its own process ------------------------------------------


def test_serve_process_stops_on_shutdown_and_on_sigterm_leaving_nothing_behind(program_file, mlp_program, digits,
                                                                               tmp_path):
    process, address = start_serve(program_file, "--port", "0", "--step-period", "0.01")
    with Board(address) as board:
        readout, _ = run_samples(board, digits.x_test[:2])
        assert board.counters()["step_period"] == 0.01
        board.shutdown()
    assert process.wait(timeout=20) == 0 and gone(process.pid)
    assert np.array_equal(readout, run(mlp_program, digits.x_test[:2]).output)

    socket_path = tmp_path / "serve.sock"
    process, address = start_serve(program_file, "--unix", str(socket_path))
    with Board(address) as board:
        board.step(digits.x_test[:1])
        process.terminate()
        assert process.wait(timeout=20) == 0 and gone(process.pid)
    assert not socket_path.exists()
    process.stdout.close()
    process.stderr.close()


def test_serve_refuses_lava_bad_programs_and_busy_ports(program_file, tmp_path, capsys):
    assert main(["serve", str(program_file), "--target", "lava"]) == 2
    assert "lava serving is not supported" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing.h5")]) == 2
    assert "no such program file" in capsys.readouterr().err
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        assert main(["serve", str(program_file), "--port", str(taken.getsockname()[1])]) == 2
        assert "cannot listen" in capsys.readouterr().err
    finally:
        taken.close()


# -- chip-in-the-loop fine-tuning ---------------------------------------------------


def test_chip_in_the_loop_recovers_2bit_accuracy_over_the_board(server, mlp_graph, digits, loihi2):
    graph = mlp_graph

    def accuracy(program):
        return np.mean(run(program, digits.x_test).predictions() == digits.y_test)
    ptq = accuracy(quantize(graph, loihi2, QuantizeOptions(2)))
    with Board(_address(server)) as board:
        _, program = chip_in_the_loop(graph, loihi2, board, digits.x_train, digits.y_train,
                                      FinetuneOptions(bits=2, epochs=1, granularity="channel", progress=False))
    assert accuracy(program) > ptq + 0.01
    assert all(s.weight_bits == 2 for s in program.synapses)
