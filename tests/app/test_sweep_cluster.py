"""Sweeps on several workers: a local Ray gives the local pool's rows exactly, a row whose worker
dies runs again (or fails alone), and the output holds every finished row as the sweep runs."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
import torch

from frontends.checkpoint import save_checkpoint
from frontends.models import SpikingNetwork, default_config
from snn_compile.cli import main
from snn_compile.executors import LocalExecutor, Outcome, Retry
from snn_compile.sweep import (DERIVED_COLUMNS, SweepFailed, run_sweep, setting_key, split_data,
                               sweep_executor)
from targets.registry import get_target
from toolchain.errors import UserError
from toolchain.files import read_marker

CLI = [sys.executable, "-m", "snn_compile.cli"]
SWEEP = dict(bits=[8], ratios=[0.2], methods=("baseline", "best"), prune_search=False, progress=False)
VICTIM = (8, 0.2, "best")
"""The setting whose worker the fault tests kill."""


@pytest.fixture(scope="module")
def sweep_data(digits):
    return split_data(digits, calibration=128, validation=128, test_samples=150)


@pytest.fixture(scope="module")
def local_rows(mlp, sweep_data):
    """The digits MLP's sweep on two local processes: what every other run must give."""
    return run_sweep(mlp[1], get_target("loihi2"), sweep_data, workers=2, **SWEEP)


def _executor(kind: str, workers: int = 2):
    if kind == "ray":
        pytest.importorskip("ray")
        return sweep_executor("auto", workers)  # the Ray this process started: the module's
    return sweep_executor("local", workers)


class Dying:
    """``inner``, with the task killing its own worker process (SIGKILL, by its pid) once it has
    computed the ``victim`` item, before the result leaves: on the first attempt, or on every one.
    ``attempts``: a directory that gets one file per attempt at the victim."""

    def __init__(self, inner, victim, attempts, every: bool = False):
        self.inner, self.victim, self.attempts, self.every = inner, victim, attempts, every

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self.inner.__exit__(*exc_info)

    def describe(self) -> str:
        return self.inner.describe()

    def slots(self) -> int:
        return self.inner.slots()

    def run(self, task, shared, items):
        victim, attempts, every = self.victim, self.attempts, self.every

        def dying(value, item):
            result = task(value, item)
            if item == victim:
                attempt = len(os.listdir(attempts))
                open(os.path.join(attempts, str(attempt)), "w").close()
                if every or attempt == 0:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result

        return self.inner.run(dying, shared, items)


def _square(shared, item):
    if item == "bad":
        raise UserError(f"{shared} cannot take {item}")
    return item * item


def test_the_local_pool_gives_each_result_and_ends_its_workers_when_a_task_raises():
    with LocalExecutor(2) as pool:
        outcomes = list(pool.run(_square, "pool", [1, 2, 3, 4, 5]))
    assert sorted((o.index, o.result) for o in outcomes) == [(0, 1), (1, 4), (2, 9), (3, 16), (4, 25)]
    assert all(isinstance(o, Outcome) and o.error is None for o in outcomes)
    with pytest.raises(UserError, match="^pool cannot take bad$"):
        list(LocalExecutor(2).run(_square, "pool", [1, "bad", 3]))
    assert multiprocessing.active_children() == []


def test_a_local_worker_killed_mid_task_runs_the_task_again(tmp_path):
    once, every = tmp_path / "once", tmp_path / "every"
    once.mkdir(), every.mkdir()
    outcomes = list(Dying(LocalExecutor(2), 3, once).run(_square, None, [1, 2, 3, 4]))
    retries = [o for o in outcomes if isinstance(o, Retry)]
    assert [(r.item, r.error) for r in retries] == [(3, "its worker process was killed by SIGKILL")]
    assert sorted(o.result for o in outcomes if isinstance(o, Outcome)) == [1, 4, 9, 16]
    assert sorted(os.listdir(once)) == ["0", "1"]
    outcomes = list(Dying(LocalExecutor(2), 3, every, every=True).run(_square, None, [1, 2, 3, 4]))
    failed = [o for o in outcomes if isinstance(o, Outcome) and o.error]
    assert [(o.item, o.error) for o in failed] == [(3, "its worker process was killed by SIGKILL")]
    assert sorted(o.result for o in outcomes if isinstance(o, Outcome) and not o.error) == [1, 4, 16]
    assert sorted(os.listdir(every)) == ["0", "1"]
    assert multiprocessing.active_children() == []


def test_rows_on_ray_equal_the_local_pools(ray_cluster, mlp, sweep_data, local_rows):
    rows = run_sweep(mlp[1], get_target("loihi2"), sweep_data, executor=_executor("ray"), **SWEEP)
    assert len(rows) == 7 and rows == local_rows


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_row_whose_worker_is_killed_runs_again_and_the_sweep_completes(kind, request, mlp, sweep_data,
                                                                         local_rows, tmp_path):
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    executor = Dying(_executor(kind), VICTIM, tmp_path)
    rows = run_sweep(mlp[1], get_target("loihi2"), sweep_data, executor=executor, **SWEEP)
    assert rows == local_rows
    assert sorted(os.listdir(tmp_path)) == ["0", "1"]  # the victim ran twice


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_setting_whose_worker_always_dies_fails_with_its_error_and_the_others_finish(kind, request, mlp,
                                                                                      sweep_data, local_rows,
                                                                                      tmp_path):
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    executor = Dying(_executor(kind), VICTIM, tmp_path, every=True)
    saved = []
    with pytest.raises(SweepFailed) as failed:
        run_sweep(mlp[1], get_target("loihi2"), sweep_data, executor=executor,
                  on_row=lambda rows, total: saved.append((len(rows), total)), **SWEEP)
    error = ("its worker process was killed by SIGKILL" if kind == "local" else
             "its Ray worker died (The worker died unexpectedly while executing this task.")
    assert str(failed.value).startswith(f"1 of 7 settings failed (best 8 bits, prune 0.2: {error}")
    assert failed.value.failures[0][0] == (8, 0.2, "best") and failed.value.failures[0][1].endswith(
        ", on both attempts")
    others = [{k: v for k, v in row.items() if k not in DERIVED_COLUMNS} for row in local_rows
              if setting_key(row) != (8, 0.2, "best")]
    assert failed.value.rows == others and failed.value.total == 7
    assert saved == [(n, 7) for n in range(1, 7)]
    assert sorted(os.listdir(tmp_path)) == ["0", "1"]


def _tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = SpikingNetwork(default_config("mlp", (1, 8, 8), 10, widths=[16]), (1, 8, 8), 10, 4)
    save_checkpoint(model, tmp_path / "model.pt", dataset="digits", levels=16)
    return ["sweep", str(tmp_path / "model.pt"), "--bits", "8,4", "--prune", "0.2", "--methods", "baseline",
            "--samples", "60", "--calibration", "32", "--prune-search", "none"]


def _check_partial(out, finished: int, total: int) -> int:
    """The output of a running sweep: valid files holding at least ``finished`` rows; their number."""
    assert read_marker(out)["sweep"]["complete"] is False
    rows = json.loads((out / "sweep.json").read_text())
    assert finished <= len(rows) < total and rows[0]["bits"] == 32 and rows[0]["prune"] == 0
    with open(out / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert finished <= len(table) < total and all(r["accuracy"] for r in table)
    return len(rows)


def test_every_finished_row_is_on_disk_and_a_killed_sweep_resumes(tmp_path, capsys):
    """The driver is killed (SIGKILL: no handler runs) after three of six rows: the output holds
    them, and --resume computes only the others, to the files one uninterrupted run writes."""
    sweep, out = _tiny_checkpoint(tmp_path), tmp_path / "out"
    proc = subprocess.Popen(CLI + sweep + ["--workers", "1", "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("sweep: "):
            finished = int(line.split()[1].split("/")[0])
            assert line.split()[1].endswith("/6") and ", running 1, failed 0; elapsed " in line
            _check_partial(out, finished, 6)
            if finished == 3:
                proc.kill()
                break
    proc.communicate(timeout=60)
    kept = _check_partial(out, 3, 6)
    assert main(sweep + ["--workers", "1", "-o", str(out), "--resume"]) == 0
    assert f"sweep: {kept} of 6 settings already done; computing {6 - kept}" in capsys.readouterr().out
    assert read_marker(out)["sweep"]["complete"] is True
    assert main(sweep + ["-o", str(tmp_path / "whole")]) == 0
    for name in ("sweep.json", "sweep.csv", "sweep.md"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_the_cli_runs_rows_on_a_ray_cluster_by_its_address(ray_cluster, tmp_path):
    sweep = _tiny_checkpoint(tmp_path)
    address = ray_cluster.get_runtime_context().gcs_address
    on_ray = subprocess.run(CLI + sweep + ["--cluster", address, "-o", str(tmp_path / "ray")],
                            capture_output=True, text=True, timeout=300)
    assert on_ray.returncode == 0, on_ray.stderr
    assert f"sweep on Ray at {address} (2 CPUs): 6 settings" in on_ray.stdout
    assert main(sweep + ["--workers", "2", "-o", str(tmp_path / "local")]) == 0
    for name in ("sweep.json", "sweep.csv", "sweep.md"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_cluster_errors(tmp_path, capsys, monkeypatch):
    sweep = _tiny_checkpoint(tmp_path)
    assert main(sweep + ["--cluster", "everywhere", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("snn-compile: error: --cluster 'everywhere': choose local, auto, "
                                       "HOST:PORT or ray://HOST:PORT\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(sweep + ["--cluster", "auto", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("snn-compile: error: --cluster needs Ray: pip install "
                                       "'snn-compile[cluster]' (or pip install ray)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
