"""The layering the README promises, checked from the source's imports."""

from __future__ import annotations

import sys

from tests.paths import ROOT

sys.path.insert(0, str(ROOT / "tools"))

import check_imports  # noqa: E402


def test_no_layering_violations_and_no_import_cycles():
    graph = check_imports.import_graph()
    assert check_imports.problems(graph) == []


def test_the_checker_sees_a_compiler_module_importing_a_target():
    graph = {"toolchain.ir": {"targets.loihi2.emulator"}, "targets.loihi2.emulator": set()}
    assert check_imports.problems(graph) == ["layering: toolchain.ir imports targets.loihi2.emulator"]


def test_the_checker_sees_a_cycle():
    graph = {"toolchain.a": {"toolchain.b"}, "toolchain.b": {"toolchain.a"}}
    assert any(p.startswith("cycle: toolchain.a <-> toolchain.b") for p in check_imports.problems(graph))
