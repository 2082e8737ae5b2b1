"""Evaluations split across workers: ``compile`` and ``compare`` with ``--workers`` / ``--cluster``
give the single process's report exactly, on local processes, on a local Ray and on a Ray cluster of
two nodes; bad values are refused before any work; a batch whose worker dies runs again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from frontends.checkpoint import save_checkpoint
from snn_compile.cli import main
from snn_compile.compile import CompileOptions, compile_for_targets, compile_model, model_inputs
from snn_compile.executors import LocalExecutor
from snn_compile.split_run import run_target, split_executor
from targets.registry import get_target
from toolchain.errors import UserError
from toolchain.passes.quantize import QuantizeOptions

CLI = [sys.executable, "-m", "snn_compile.cli"]
SPLIT = ["--samples", "300", "--batch-size", "64"]
"""Five batches, the last one partial."""
COMPARE_TARGETS = "reference,loihi2,digital45nm"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mlp, digits):
    path = tmp_path_factory.mktemp("model") / "mlp.pt"
    save_checkpoint(mlp[0], path, dataset="digits", levels=digits.levels)
    return str(path)


def _compile(checkpoint, out: Path, *extra) -> dict:
    assert main(["compile", checkpoint, *SPLIT, "--prune", "0.2", "--calibration", "64", "-o", str(out),
                 *extra]) == 0
    return json.loads((out / "report.json").read_text())


def _compare(checkpoint, capsys, *extra) -> str:
    capsys.readouterr()
    assert main(["compare", checkpoint, *SPLIT, "--targets", COMPARE_TARGETS, *extra]) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def single_report(checkpoint, tmp_path_factory):
    """The compile report of one process: what every split must give."""
    return _compile(checkpoint, tmp_path_factory.mktemp("single") / "out")


@pytest.fixture(scope="module")
def single_table(checkpoint):
    out = subprocess.run(CLI + ["compare", checkpoint, *SPLIT, "--targets", COMPARE_TARGETS], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _measured(report: dict) -> dict:
    """The numbers the split must keep: accuracy, agreement, spikes, operations and energy."""
    return {"accuracy": report["accuracy"], "agreement": report["agreement"],
            "spikes": report["spikes_per_sample"], "operations": report["costs"]["operation_totals"],
            "energy": report["costs"]["digital45nm"]["energy_pj"], "loihi": report["costs"]["loihi"]["energy_pj"]}


def test_a_split_compile_on_two_local_workers_writes_the_single_process_report(checkpoint, single_report,
                                                                             tmp_path):
    report = _compile(checkpoint, tmp_path / "out", "--workers", "2")
    assert report["accuracy"]["loihi2"]["accuracy"] > 0.8 and report["costs"]["operation_totals"]
    assert _measured(report) == _measured(single_report)
    assert report == single_report


def test_a_split_compare_on_two_local_workers_prints_the_single_process_table(checkpoint, single_table, capsys):
    table = _compare(checkpoint, capsys, "--workers", "2")
    assert table.startswith("300 test samples") and "loihi2/digital45nm" in table
    assert table == single_table


@pytest.mark.skipif(not Path(".lava-venv/bin/python").exists(), reason="needs the Lava environment")
def test_split_runs_of_the_emulator_and_lava_agree_spike_for_spike_as_one_runs_do(mlp, digits):
    from snn_compile.compare import compare

    targets = [get_target(name) for name in ("reference", "loihi2", "lava")]
    compiled = compile_for_targets(mlp[1], targets, CompileOptions(QuantizeOptions(8)))
    x, y = model_inputs(digits.x_test[:48], mlp[1]), digits.y_test[:48]
    with LocalExecutor(2) as executor:
        split = compare(compiled, x, y, batch_size=16, executor=executor)
    assert split["exact"]["equal"] and split["exact"]["spikes"] > 0
    assert split == compare(compiled, x, y, batch_size=16)


def test_a_split_on_a_local_ray_gives_the_single_process_report_and_table(ray_cluster, checkpoint, single_report,
                                                                         single_table, capsys, tmp_path):
    assert _compile(checkpoint, tmp_path / "out", "--cluster", "auto") == single_report
    assert _compare(checkpoint, capsys, "--cluster", "auto", "--workers", "2") == single_table


class Dying(LocalExecutor):
    """Two local workers whose task kills its own process (SIGKILL) once it has computed the batch
    ``victim`` (its inputs): on the first attempt (a file in ``attempts`` per attempt), or on every one."""

    def __init__(self, victim: np.ndarray, attempts: Path, every: bool = False):
        super().__init__(2)
        self.victim, self.attempts, self.every = victim, attempts, every

    def run(self, task, shared, items):
        victim, attempts, every = self.victim, self.attempts, self.every

        def dying(value, inputs):
            result = task(value, inputs)
            if np.array_equal(inputs, victim):
                attempt = len(os.listdir(attempts))
                (attempts / str(attempt)).touch()
                if every or attempt == 0:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result

        return super().run(dying, shared, items)


def test_a_batch_whose_worker_is_killed_runs_again_and_one_that_always_dies_fails_in_one_line(mlp, digits,
                                                                                             tmp_path, capsys):
    target = get_target("loihi2")
    program = compile_model(mlp[1], target, CompileOptions(QuantizeOptions(8))).model
    x = model_inputs(digits.x_test[:200], mlp[1])
    once, every = tmp_path / "once", tmp_path / "every"
    once.mkdir(), every.mkdir()
    single = run_target(target, program, x, batch_size=64)
    split = run_target(target, program, x, Dying(x[64:128], once), batch_size=64, progress="loihi2")
    assert np.array_equal(split.output, single.output) and split.samples == 200
    assert all(np.array_equal(split.activity[k].spike_counts, a.spike_counts) for k, a in single.activity.items())
    assert "loihi2, samples 64..127: its worker process was killed by SIGKILL; running them again\n" in \
        capsys.readouterr().out
    assert sorted(os.listdir(once)) == ["0", "1"]
    with pytest.raises(UserError, match=r"^loihi2, samples 64\.\.127: its worker process was killed by SIGKILL, "
                                        r"on both attempts$"):
        run_target(target, program, x, Dying(x[64:128], every, every=True), batch_size=64)
    assert sorted(os.listdir(every)) == ["0", "1"]


@pytest.mark.parametrize("command", ["compile", "compare"])
@pytest.mark.parametrize("options, error", [
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    (["--cluster", "everywhere"], "--cluster 'everywhere': choose local, auto, HOST:PORT or ray://HOST:PORT"),
    (["--workers", "2", "--device", "cuda"], "--device cuda runs every sample on this machine's GPU and "
                                             "--workers / --cluster split them across CPU workers: choose one"),
])
def test_split_options_are_refused_in_one_line_before_any_work(command, options, error, checkpoint, tmp_path,
                                                               capsys, monkeypatch):
    monkeypatch.setattr("snn_compile.compile.load_model", lambda *a, **k: pytest.fail("work started"))
    out = ["-o", str(tmp_path / "out")] if command == "compile" else []
    assert main([command, checkpoint, *options, *out]) == 2
    assert capsys.readouterr().err == f"snn-compile: error: {error}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_split_without_ray_is_refused_in_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["compile", checkpoint, "--cluster", "auto", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("snn-compile: error: --cluster needs Ray: pip install "
                                       "'snn-compile[cluster]' (or pip install ray)\n")
    assert list(tmp_path.iterdir()) == []
    assert split_executor("local", None) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A Ray cluster of two nodes on this machine, one CPU each, started as on two machines
    (``ray start --head``, then ``ray start --address``), loopback only; each ``ray start --block``
    ends its node's processes when terminated. Yields (GCS address, client address)."""
    pytest.importorskip("ray")
    ray_cli = str(Path(sys.executable).parent / "ray")
    logs = tmp_path_factory.mktemp("ray")
    port, client = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # the head turns token authentication on when this machine holds a token; a joining node only when told
    node_env = {**env, "RAY_AUTH_MODE": "token"} if (Path.home() / ".ray" / "auth_token").exists() else env
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--block", "--disable-usage-stats"]
    nodes = []

    def start(args, environment, name):
        log = open(logs / f"{name}.log", "w")
        nodes.append(subprocess.Popen([ray_cli, "start", *args, *common], env=environment, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 120
        while "block forever" not in (logs / f"{name}.log").read_text():
            assert nodes[-1].poll() is None and time.monotonic() < deadline, (logs / f"{name}.log").read_text()
            time.sleep(0.5)

    try:
        start(["--head", "--port", str(port), "--ray-client-server-port", str(client), "--dashboard-port",
               str(_free_port()), "--min-worker-port", "21000", "--max-worker-port", "21099"], env, "head")
        start(["--address", f"127.0.0.1:{port}", "--min-worker-port", "21100", "--max-worker-port", "21199"],
              node_env, "node")
        yield f"127.0.0.1:{port}", f"ray://127.0.0.1:{client}", env
    finally:
        for node in reversed(nodes):
            node.terminate()
            node.wait(timeout=60)
        current = Path("/tmp/ray/ray_current_cluster")  # left naming the ended head: a later ray.init() would join it
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def _tiny_sweep(tmp_path) -> list[str]:
    import torch

    from frontends.models import SpikingNetwork, default_config

    torch.manual_seed(0)
    model = SpikingNetwork(default_config("mlp", (1, 8, 8), 10, widths=[16]), (1, 8, 8), 10, 4)
    save_checkpoint(model, tmp_path / "tiny.pt", dataset="digits", levels=16)
    return ["sweep", str(tmp_path / "tiny.pt"), "--bits", "8", "--prune", "0.2", "--methods", "baseline",
            "--samples", "60", "--calibration", "32", "--prune-search", "none"]


def test_a_sweep_and_a_split_compile_on_a_two_node_ray_cluster_equal_one_process(two_nodes, checkpoint,
                                                                                single_report, tmp_path):
    """The driver names the cluster by its address, with no RAY_AUTH_MODE: it sends this machine's
    token itself when the cluster holds one."""
    gcs, client, env = two_nodes
    sweep = _tiny_sweep(tmp_path)
    on_ray = subprocess.run(CLI + sweep + ["--cluster", gcs, "-o", str(tmp_path / "ray")], capture_output=True,
                            text=True, timeout=300, env=env)
    assert on_ray.returncode == 0, on_ray.stderr
    assert f"sweep on Ray at {gcs} (2 CPUs): 4 settings" in on_ray.stdout
    assert main(sweep + ["--workers", "1", "-o", str(tmp_path / "local")]) == 0
    assert (tmp_path / "ray" / "sweep.json").read_bytes() == (tmp_path / "local" / "sweep.json").read_bytes()
    split = subprocess.run(CLI + ["compile", checkpoint, *SPLIT, "--prune", "0.2", "--calibration", "64",
                                  "--cluster", client, "-o", str(tmp_path / "split")],
                           capture_output=True, text=True, timeout=300, env=env)
    assert split.returncode == 0, split.stderr
    assert json.loads((tmp_path / "split" / "report.json").read_text()) == single_report
