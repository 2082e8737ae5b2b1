"""Cross-backend check: the same program and samples on several targets, side by side.

Accuracy, energy and latency per backend (each priced by its chip's own cost
model, or by the 45 nm digital model where it has none), agreement of
predicted labels between every pair, and
for the two bit-accurate backends (the native emulator and Lava) exact
agreement of every spike, u and v, with the first place they diverge. That
last check gates CI: the emulator is only trustworthy while it equals Lava.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snn_compile.compile import Compiled
from snn_compile.evaluate import cost_report
from snn_compile.split_run import run_target
from toolchain.results import RunResult
from toolchain.errors import UserError


@dataclass
class Divergence:
    """Where two recorded runs first differ: earliest layer (program order), then sample, step, neuron."""

    quantity: str
    layer: str
    sample: int
    step: int
    neuron: int
    values: tuple[int, int]

    def describe(self) -> str:
        return (f"{self.quantity} of layer {self.layer}, neuron {self.neuron}, sample {self.sample}, "
                f"step {self.step}: {self.values[0]} vs {self.values[1]}")


def first_divergence(a: RunResult, b: RunResult, layers: list[str]) -> Divergence | None:
    """The first differing spike, u or v; layers in feed-forward order, spikes before u before v."""
    for layer in layers:
        candidates = []
        for quantity in ("trains", "u", "v"):
            x, y = getattr(a, quantity).get(layer), getattr(b, quantity).get(layer)
            if x is None or y is None:
                continue
            if x.shape != y.shape:
                raise ValueError(f"{quantity} of {layer}: shapes {x.shape} and {y.shape} differ")
            where = np.argwhere(x != y)
            if len(where):
                s, t, n = (int(i) for i in where[0])
                name = "spikes" if quantity == "trains" else quantity
                candidates.append(Divergence(name, layer, s, t, n, (int(x[s, t, n]), int(y[s, t, n]))))
        if candidates:
            return min(candidates, key=lambda d: (d.sample, d.step))
    return None


def bit_accurate_pair(compiled: dict[str, Compiled]) -> tuple[str, str] | None:
    """The first two bit-accurate targets that run the same program: their runs must agree exactly."""
    names = [n for n, c in compiled.items() if c.target.bit_accurate]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if compiled[a].program is compiled[b].program:
                return a, b
    return None


def costs(model: Compiled, result: RunResult, bits: int) -> dict:
    """Energy (nJ per inference) and latency (s) of one backend's run, from the chip's own estimate
    when it has one (Loihi: dynamic energy, static included in ``total_nj``; Xylo: SynSense's
    published figure, not activity-based), else the 45 nm digital model (which has no latency)."""
    report = cost_report(model, result, bits)
    chip_key = model.target.cost_model[0] if model.target.cost_model else None
    chip = report.get(chip_key)
    if chip is None:
        return {"model": "digital45nm", "energy_nj": report["digital45nm"]["energy_pj"] * 1e-3, "latency_s": None}
    if "energy_pj" in chip:
        energy = {"energy_nj": chip["energy_pj"] * 1e-3, "total_nj": chip["total_pj"] * 1e-3}
    elif "energy_per_inference_j" in chip:
        energy = {"energy_nj": chip["energy_per_inference_j"] * 1e9, "energy_source": chip["energy_source"]}
    else:
        energy = {"energy_nj": None}
    return {"model": chip_key, **energy, "latency_s": chip.get("latency_s")}


def compare(compiled: dict[str, Compiled], x: np.ndarray, y: np.ndarray, batch_size: int = 256,
            device: str | None = None, executor=None, bits: int = 8) -> dict:
    """Run every target's compiled model on the same samples (``device``: for the targets that take
    one; ``executor``: where the runs' batches go, see ``split_run``); returns the comparison as plain data."""
    if not compiled:
        raise UserError("--targets: name each target once, e.g. reference,loihi2,lava")
    pair = bit_accurate_pair(compiled)
    results = {}
    for name, model in compiled.items():
        record = pair is not None and name in pair
        options = {"record": True} if record else {}
        if model.target.devices:
            options["device"] = device
        results[name] = run_target(model.target, model.model, x, executor, batch_size, name, **options)
    targets = list(compiled)
    predictions = {name: r.predictions() for name, r in results.items()}
    comparison = {
        "samples": int(len(x)),
        "accuracy": {name: float(np.mean(p == y)) for name, p in predictions.items()},
        "costs": {name: costs(compiled[name], results[name], bits) for name in targets},
        "agreement": {f"{a}/{b}": float(np.mean(predictions[a] == predictions[b]))
                      for i, a in enumerate(targets) for b in targets[i + 1:]},
    }
    if pair is not None:
        program = compiled[pair[0]].program
        layers = [layer.name for layer in program.layers]
        a, b = (results[name] for name in pair)
        divergence = first_divergence(a, b, layers)
        comparison["exact"] = {
            "targets": list(pair),
            "equal": divergence is None,
            "spikes_compared": int(sum(a.trains[n].size for n in layers)),
            "spikes": int(sum(a.trains[n].sum() for n in layers)),
            "differing": {q: int(sum(np.count_nonzero(getattr(a, q)[n] != getattr(b, q)[n]) for n in layers))
                          for q in ("trains", "u", "v")},
            "first_divergence": None if divergence is None else divergence.describe(),
        }
    return comparison


PRICED_BY = {"loihi": "Loihi 2 estimate (dynamic energy)", "xylo": "Xylo: time from Rockpool's cycle model, "
             "energy SynSense's published figure", "digital45nm": "45 nm digital model (no latency)"}
UNPRICED_ENERGY = {"xylo": "Xylo: time from Rockpool's cycle model; no published energy for this chip"}


def table(comparison: dict) -> str:
    """The comparison as the terminal shows it."""
    lines = [f"{comparison['samples']} test samples", "",
             f"{'backend':<12} {'accuracy':>8} {'energy/inference':>16} {'latency':>10}  priced by"]
    for name, acc in comparison["accuracy"].items():
        cost = comparison["costs"][name]
        energy = "-" if cost["energy_nj"] is None else f"{cost['energy_nj']:.4g} nJ"
        latency = "-" if cost["latency_s"] is None else f"{cost['latency_s'] * 1e6:.4g} us"
        priced_by = (UNPRICED_ENERGY if cost["energy_nj"] is None else PRICED_BY)[cost["model"]]
        lines.append(f"{name:<12} {acc:>8.4f} {energy:>16} {latency:>10}  {priced_by}")
    if comparison["agreement"]:
        lines += ["", f"{'pair':<24} {'label agreement':>15}"]
        lines += [f"{pair:<24} {value:>15.4f}" for pair, value in comparison["agreement"].items()]
    exact = comparison.get("exact")
    if exact:
        a, b = exact["targets"]
        lines.append("")
        if exact["equal"]:
            lines.append(f"{a} vs {b}: bit-exact: all {exact['spikes_compared']} spike slots "
                         f"({exact['spikes']} spikes), every u and v equal")
        else:
            diff = exact["differing"]
            lines.append(f"{a} vs {b}: DIFFER: {diff['trains']} spike slots, {diff['u']} u and {diff['v']} v values")
            lines.append(f"first divergence: {exact['first_divergence']}")
    return "\n".join(lines)
