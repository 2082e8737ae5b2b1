"""Xylo's design rules: every limit a mapped program breaks, as data.

Xylo has no cores: each ``toolchain.drc.Violation`` names the layer (None:
the network), the limit, the value needed and the chip's, and what would
help, in Xylo's own words.
"""

from __future__ import annotations

import numpy as np

from targets.xylo.program import OUTPUT, XyloProgram
from toolchain.drc import Violation
from toolchain.ir import INPUT

LABELS = {"input_channels": "input channels", "hidden_neurons": "hidden neurons",
          "output_neurons": "output neurons", "recurrent_synapses": "hidden-to-hidden synapses",
          "input_events_per_step": "input events per channel and step"}
HINTS = {"input_channels": "reduce the input to at most that many channels (pool or select features)",
         "hidden_neurons": "use fewer or smaller hidden layers, or prune units",
         "output_neurons": "read out at most that many classes",
         "recurrent_synapses": "prune hidden-to-hidden and recurrent synapses",
         "input_events_per_step": "encode the input with fewer levels (an input value is sent as that many "
                                  "events)"}


def check_fits(program: XyloProgram, chip) -> list[Violation]:
    """Every limit ``program`` breaks on ``chip`` (a Xylo spec), in the order the data meets them."""
    found = []

    def check(layer, limit, value):
        if value > chip.limit(limit):
            found.append(Violation(layer, limit, int(value), int(chip.limit(limit)), label=LABELS[limit],
                                   hint=HINTS[limit]))

    check(INPUT, "input_channels", program.n_in)
    check(INPUT, "input_events_per_step", program.input_levels)
    check(None, "hidden_neurons", program.n_hidden)
    check(None, "recurrent_synapses", np.count_nonzero(program.w_rec))
    check(next(s.name for s in program.slots if s.kind == OUTPUT), "output_neurons", program.n_out)
    return found
