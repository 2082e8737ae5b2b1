"""A chip spec and the program format agree on the neuron's integer widths."""

from __future__ import annotations

import json

import pytest

from targets import chips
from targets.chips import load_chip
from toolchain.errors import UserError
from toolchain.program import WIDTHS


def test_the_loihi2_spec_states_every_width_the_program_holds():
    spec = load_chip("loihi2")
    assert {key: spec.limit(key) for key in WIDTHS} == WIDTHS


def test_a_spec_that_disagrees_with_the_program_format_is_refused(tmp_path, monkeypatch):
    data = json.loads((chips.SPEC_DIR / "loihi2.json").read_text())
    data["limits"]["vth_bits"]["value"] = 16
    (tmp_path / "odd.json").write_text(json.dumps(data))
    monkeypatch.setattr(chips, "SPEC_DIR", tmp_path)
    with pytest.raises(UserError, match="vth_bits is 16, but programs hold 17"):
        load_chip("odd")
