"""Outputs never destroy what the user did not ask to replace, and never stay half-written.

An output directory is replaced only when snn-compile wrote it and ``--force`` says so;
the working directory, its parents, the home directory and the input's directory never
are. SIGTERM leaves nothing behind; modes follow the umask; the same inputs give the same bytes.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from frontends.checkpoint import save_checkpoint
from frontends.models import SpikingNetwork, default_config
from targets.lava import environment
from snn_compile.cli import main
from toolchain.errors import UserError
from toolchain.files import MARKER, StagingDir, atomic_path, read_marker

CLI = [sys.executable, "-m", "snn_compile.cli"]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(result, *fragments):
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("snn-compile: error: "), (code, err)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tree(directory) -> dict:
    """Every file under ``directory`` with its bytes: what "untouched" compares."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def write_model(path, steps=4):
    torch.manual_seed(0)
    model = SpikingNetwork(default_config("mlp", (1, 8, 8), 10, widths=[16]), (1, 8, 8), 10, steps)
    save_checkpoint(model, path, dataset="digits", levels=16)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working directory holding a model and a file of the user's."""
    monkeypatch.chdir(tmp_path)
    write_model(tmp_path / "model.pt")
    (tmp_path / "notes.txt").write_text("the user's own file")
    return tmp_path


@pytest.mark.parametrize("output, force", [(".", False), (".", True), ("..", True), ("/", True)])
def test_the_working_directory_and_its_parents_are_never_replaced(project, capsys, output, force):
    before = tree(project)
    result = cli(capsys, "model.pt", "-o", output, *(["--force"] if force else []))
    assert_refused(result, "is the working directory or holds it")
    assert tree(project) == before


def test_the_home_directory_is_never_replaced(project, capsys, monkeypatch):
    home = project / "home"
    (home / "documents").mkdir(parents=True)
    (home / "documents" / "cv.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    assert_refused(cli(capsys, "model.pt", "-o", home, "--force"), "is the home directory or holds it")
    assert (home / "documents" / "cv.txt").read_text() == "mine"


def test_the_directory_holding_the_model_is_never_replaced(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    models = tmp_path / "runs" / "models"
    models.mkdir(parents=True)
    write_model(models / "model.pt")
    (models / MARKER).write_text('{"written_by": "snn-compile"}')  # even one that looks like ours
    before = tree(tmp_path)
    for output in (models, tmp_path / "runs"):
        assert_refused(cli(capsys, models / "model.pt", "-o", output, "--force"), f"holds the input {models}")
        assert_refused(cli(capsys, "sweep", models / "model.pt", "-o", output, "--force"), "holds the input")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("force", [False, True])
def test_a_directory_snn_compile_did_not_write_is_kept(project, capsys, force):
    (project / "results").mkdir()
    (project / "results" / "thesis.tex").write_text("years of work")
    result = cli(capsys, "model.pt", "-o", "results", *(["--force"] if force else []))
    assert_refused(result, "output directory results exists and was not written by snn-compile",
                   "nothing was changed")
    assert tree(project / "results") == {"thesis.tex": b"years of work"}
    assert_refused(cli(capsys, "sweep", "model.pt", "-o", "results", "--force"), "not written by snn-compile")


def test_an_existing_file_is_not_an_output_directory(project, capsys):
    assert_refused(cli(capsys, "model.pt", "-o", "notes.txt", "--force"), "notes.txt: a file of that name exists")
    assert (project / "notes.txt").read_text() == "the user's own file"


def test_a_symbolic_link_is_not_followed(project, capsys):
    (project / "elsewhere").mkdir()
    (project / "link").symlink_to(project / "elsewhere")
    assert_refused(cli(capsys, "model.pt", "-o", "link", "--force"), "is a symbolic link")


def test_an_output_directory_is_replaced_only_with_force_and_compiles_are_reproducible(project, capsys):
    assert cli(capsys, "model.pt", "--samples", "30", "-o", "out")[0] == 0
    assert read_marker(project / "out") == {"written_by": "snn-compile", "command": "compile"}
    first = tree(project / "out")
    assert_refused(cli(capsys, "model.pt", "--samples", "30", "-o", "out"),
                   "output directory out exists (written by snn-compile compile); pass --force to replace it")
    assert tree(project / "out") == first
    (project / "out" / "stale.txt").write_text("from an earlier run")
    assert cli(capsys, "model.pt", "--samples", "30", "-o", "out", "--force")[0] == 0
    assert tree(project / "out") == first  # replaced whole: the stale file went with the old directory
    assert cli(capsys, "model.pt", "--samples", "30", "-o", "again")[0] == 0
    again = tree(project / "again")
    for name in ("program.h5", "model.nir", "report.html", "report.md"):
        assert again[name] == first[name], name  # byte for byte: no plot date, no temporary names
    assert sorted(p.name for p in project.iterdir()) == ["again", "model.pt", "notes.txt", "out"]


def test_an_empty_directory_is_filled(project, capsys):
    (project / "empty").mkdir()
    assert cli(capsys, "model.pt", "--samples", "10", "-o", "empty")[0] == 0
    assert (project / "empty" / "report.json").is_file()


def test_checkpoints_are_the_same_bytes_every_time(tmp_path):
    write_model(tmp_path / "a.pt")
    write_model(tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_outputs_follow_the_umask(tmp_path, capsys):
    model = write_model(tmp_path / "model.pt")
    previous = os.umask(0o027)
    try:
        assert cli(capsys, model, "--samples", "10", "-o", tmp_path / "out")[0] == 0
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        name: 0o640 for name in (MARKER, "program.h5", "model.nir", "report.json", "report.md", "report.html")}


def test_atomic_files_follow_the_umask_and_vanish_on_interrupt(tmp_path):
    previous = os.umask(0o002)
    try:
        with atomic_path(tmp_path / "kept.bin") as tmp:
            open(tmp, "wb").write(b"data")
        with pytest.raises(KeyboardInterrupt):
            with atomic_path(tmp_path / "lost.bin") as tmp:
                open(tmp, "wb").write(b"half")
                raise KeyboardInterrupt
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "kept.bin").stat().st_mode) == 0o664
    assert [p.name for p in tmp_path.iterdir()] == ["kept.bin"]


def fill(directory, text):
    (directory / "result.txt").write_text(text)


def test_the_loser_of_two_concurrent_writers_says_so(tmp_path):
    out = tmp_path / "out"
    first = StagingDir(out, {"command": "compile"})
    second = StagingDir(out, {"command": "compile"})  # both checked while out did not exist
    with first as staging:
        fill(staging, "first")
    with pytest.raises(UserError, match="was written by another snn-compile while this one ran; kept it"):
        with second as staging:
            fill(staging, "second")
    assert (out / "result.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or set-aside directory left


def test_concurrent_writers_with_force_leave_one_complete_output(tmp_path):
    out = tmp_path / "out"
    with StagingDir(out, {"command": "compile"}) as staging:
        fill(staging, "old")
    writers = [StagingDir(out, {"command": "compile"}, force=True) for _ in range(2)]
    stagings = [writer.__enter__() for writer in writers]
    for staging, text in zip(stagings, ("one", "two")):
        fill(staging, text)
    for writer in writers:
        writer.__exit__(None, None, None)
    assert (out / "result.txt").read_text() == "two" and read_marker(out)["command"] == "compile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sigterm_while_writing_leaves_nothing(tmp_path):
    model = write_model(tmp_path / "model.pt", steps=2000)  # a slow evaluation, to be interrupted
    proc = subprocess.Popen(CLI + [str(model), "--batch-size", "16", "--calibration", "0", "-o", str(tmp_path / "out")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".out.*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the compile ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert proc.stderr.read() == "snn-compile: terminated\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_lava_setup_does_not_clear_a_directory_it_did_not_create(tmp_path, monkeypatch, capsys):
    venv = tmp_path / "my-env"
    venv.mkdir()
    (venv / "thesis.tex").write_text("years of work")
    monkeypatch.setenv("SNN_LAVA_VENV", str(venv))
    assert_refused(cli(capsys, "lava", "setup"), f"SNN_LAVA_VENV={venv} exists and is not a Lava environment "
                   "snn-compile created", "nothing was changed")
    assert tree(venv) == {"thesis.tex": b"years of work"}


def test_lava_setup_may_recreate_its_own_environment(tmp_path):
    half_made = tmp_path / "half-made"
    half_made.mkdir()
    (half_made / environment.OWNER_MARKER).write_text(environment.LAVA_REQUIREMENT)
    (tmp_path / "empty").mkdir()
    for target in (half_made, tmp_path / "empty", tmp_path / "absent"):
        environment.check_replaceable(target)  # no error: each may be (re)created


def test_a_sweep_directory_is_checked_before_any_work(project, capsys):
    (project / "results").mkdir()
    (project / "results" / "keep.txt").write_text("mine")
    result = cli(capsys, "sweep", "model.pt", "-o", "results")
    assert_refused(result, "not written by snn-compile")
    assert result[1] == ""  # refused before calibrating or sweeping anything
    assert_refused(cli(capsys, "sweep", "model.pt", "-o", "nowhere", "--resume"),
                   "--resume: nowhere holds no sweep to resume")
    assert not (project / "nowhere").exists()


def test_the_marker_says_what_wrote_the_directory(tmp_path):
    with StagingDir(tmp_path / "out", {"command": "sweep", "sweep": {"complete": False}}) as staging:
        fill(staging, "rows")
    assert json.loads((tmp_path / "out" / MARKER).read_text()) == {
        "written_by": "snn-compile", "command": "sweep", "sweep": {"complete": False}}


def test_a_stop_whose_exception_was_lost_commits_nothing(tmp_path):
    """A signal handler's exception raised inside an object's finalizer is only printed by Python; the
    stop it asked for still keeps the output from being committed (a sweep's finished rows excepted)."""
    from toolchain.files import STOP

    STOP.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            with StagingDir(tmp_path / "out", {"command": "compile"}) as staging:
                (staging / "report.json").write_text("{}")
        with StagingDir(tmp_path / "rows", {"command": "sweep"}, partial=True) as staging:
            (staging / "sweep.json").write_text("[]")
    finally:
        STOP.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows"]


def test_a_stop_raised_in_a_finalizer_is_not_printed_but_other_finalizer_errors_are(capsys, monkeypatch):
    """The signal handler's exception can land in a finalizer, where Python prints it as "Exception
    ignored"; main's hook keeps the one-line "terminated" clean and still shows real errors."""
    from snn_compile.cli import _quiet_stop
    from toolchain.files import STOP

    class Raising:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    monkeypatch.setattr(sys, "unraisablehook", _quiet_stop)
    STOP.set()
    try:
        Raising(KeyboardInterrupt())
        assert capsys.readouterr().err == ""
        Raising(ValueError("a real bug"))
        assert "ValueError: a real bug" in capsys.readouterr().err
    finally:
        STOP.clear()
    Raising(KeyboardInterrupt())  # no stop was asked for: shown
    assert "KeyboardInterrupt" in capsys.readouterr().err
