"""Xylo's design rules: every limit a mapped program breaks, as data.

Xylo has no cores: each ``toolchain.drc.Violation`` names the layer (None:
the network), the limit, the value needed and the chip's, and what would
help, in Xylo's own words, naming another Xylo chip spec that holds the
value where there is one.
"""

from __future__ import annotations

import numpy as np

from targets.chips import available_chips, load_chip
from targets.registry import TARGETS
from targets.xylo.program import OUTPUT, XyloProgram
from toolchain.drc import Violation
from toolchain.ir import INPUT

LABELS = {"input_channels": "input channels", "hidden_neurons": "hidden neurons",
          "output_neurons": "output neurons", "recurrent_synapses": "hidden-to-hidden synapses",
          "input_events_per_step": "input events per channel and step",
          "input_expansion_neurons": "hidden neurons taking input (the first ids)",
          "output_expansion_neurons": "hidden neurons read by the outputs (the last ids)"}
HINTS = {"input_channels": "reduce the input to at most that many channels (pool or select features)",
         "hidden_neurons": "use fewer or smaller hidden layers, or prune units",
         "output_neurons": "read out at most that many classes",
         "recurrent_synapses": "prune hidden-to-hidden and recurrent synapses",
         "input_events_per_step": "encode the input with fewer levels (an input value is sent as that many "
                                  "events)",
         "input_expansion_neurons": "make the first hidden layer at most that wide",
         "output_expansion_neurons": "make the last hidden layer at most that wide"}


def title(chip) -> str:
    """The chip's name as people say it: its spec's description up to the part number."""
    return chip.description.split(" (")[0].removeprefix("SynSense ")


def _roomier(chip, limit: str, value: int) -> str:
    """`` or compile for NAME (its limit)`` for another Xylo spec that holds ``value``, else ''."""
    for name in available_chips():
        other = load_chip(name)
        if name != chip.name and name.startswith("xylo") and limit in other.limits \
                and other.limit(limit) >= value:
            target = next((t.name for t in TARGETS.values() if t.chip == name), None)
            if target:
                return f", or compile for --target {target} ({title(other)}: {other.limit(limit)})"
    return ""


def check_fits(program: XyloProgram, chip) -> list[Violation]:
    """Every limit ``program`` breaks on ``chip`` (a Xylo spec), in the order the data meets them."""
    found = []

    def check(layer, limit, value):
        if limit in chip.limits and value > chip.limit(limit):
            found.append(Violation(layer, limit, int(value), int(chip.limit(limit)), label=LABELS[limit],
                                   hint=HINTS[limit] + _roomier(chip, limit, int(value))))

    fed = np.flatnonzero(program.w_in.any(axis=0))
    read = np.flatnonzero(program.w_out.any(axis=1))
    first = next(s.name for s in program.slots if s.kind != OUTPUT)
    last = [s.name for s in program.slots if s.kind != OUTPUT][-1]
    check(INPUT, "input_channels", program.n_in)
    check(INPUT, "input_events_per_step", program.input_levels)
    check(None, "hidden_neurons", program.n_hidden)
    check(first, "input_expansion_neurons", fed.max() + 1 if fed.size else 0)
    check(last, "output_expansion_neurons", program.n_hidden - read.min() if read.size else 0)
    check(None, "recurrent_synapses", np.count_nonzero(program.w_rec))
    check(next(s.name for s in program.slots if s.kind == OUTPUT), "output_neurons", program.n_out)
    return found
