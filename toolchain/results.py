"""What every target returns: the answer per sample plus the activity behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayerActivity:
    """Activity of one layer summed over the samples of a run.

    ``spike_counts``: spikes per neuron; ``spikes_per_step``: spikes per time
    step. Cost models count operations from these.
    """

    spike_counts: np.ndarray
    spikes_per_step: np.ndarray

    def merge(self, other: "LayerActivity") -> "LayerActivity":
        return LayerActivity(self.spike_counts + other.spike_counts,
                             self.spikes_per_step + other.spikes_per_step)


@dataclass
class RunResult:
    """``output``: (samples, classes) spike counts or read-out membrane
    potentials; ``activity``: per layer, plus "input" for the host's input
    (nonzero values per input element, for MAC counting). ``trains``/``u``/
    ``v``: (samples, steps, neurons) per layer, only when recorded."""

    output: np.ndarray
    activity: dict[str, LayerActivity]
    samples: int
    steps: int
    trains: dict[str, np.ndarray] = field(default_factory=dict)
    u: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)

    def predictions(self) -> np.ndarray:
        return np.argmax(self.output, axis=1)

    @staticmethod
    def concatenate(parts: list["RunResult"]) -> "RunResult":
        first = parts[0]
        activity = dict(first.activity)
        for part in parts[1:]:
            activity = {k: activity[k].merge(part.activity[k]) for k in activity}

        def cat(attr):
            keys = getattr(first, attr).keys()
            return {k: np.concatenate([getattr(p, attr)[k] for p in parts]) for k in keys}
        return RunResult(output=np.concatenate([p.output for p in parts]), activity=activity,
                         samples=sum(p.samples for p in parts), steps=first.steps,
                         trains=cat("trains"), u=cat("u"), v=cat("v"))
