"""The 45 nm digital cost model: energy per inference from the operations a run performed.

A generic synchronous digital accelerator executes the network with k-bit
weights (1..16) and float neuron dynamics, so ``run`` is the float
reference on the weight-quantized graph; what this target adds is the
price. Two named energy models, constants in ``targets/data/digital45nm.json``
with their sources:

- ``ops`` (the quantization seed's model, Horowitz 45 nm):
  E = ac_pj x ACs + mac_pj x MACs; with ``memory=True`` every synaptic
  operation also reads its weight from SRAM (sram_read_64bit_pj x bits / 64).
- ``spike`` (the regression seed's eq. 11): E = spike_pj x N_spikes +
  leak_power_w x T, with T = steps x dt, the model's own time.

The comparison is the same network as a conventional ANN: every synapse is
one MAC per inference (plus an fp32 weight read with ``memory=True``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from targets import reference
from toolchain.errors import UserError

CONSTANTS_FILE = Path(__file__).parent / "data" / "digital45nm.json"
ENERGY_MODELS = ("ops", "spike")


REQUIRED = ("ac_pj", "mac_pj", "sram_read_64bit_pj", "ann_weight_bits", "spike_pj", "leak_power_w")


def run(graph, inputs, **options):
    """The digital target computes as the float model does, on the weight-quantized graph the
    compile flow hands it."""
    return reference.run(graph, inputs, **options)


@dataclass(frozen=True)
class Constants:
    """Cost constants and where each comes from."""

    values: dict[str, float]
    sources: dict[str, str]

    def __getitem__(self, key: str) -> float:
        return self.values[key]


def load_constants(path: str | Path = CONSTANTS_FILE) -> Constants:
    """Read and check a constants file; any defect is one clear ``UserError``."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())["constants"]
        values = {k: float(entries[k]["value"]) for k in REQUIRED}
        sources = {k: str(entries[k]["source"]) for k in REQUIRED}
    except FileNotFoundError:
        raise UserError(f"{path}: no such cost constants file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed cost constants file (not JSON: {exc.msg}, line {exc.lineno})") from None
    except KeyError as exc:
        raise UserError(f"{path}: malformed cost constants file (missing {exc.args[0]!r}; every constant in "
                        f"{', '.join(REQUIRED)} needs a value and a source)") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: malformed cost constants file ({exc})") from None
    negative = [k for k, v in values.items() if v < 0]
    if negative:
        raise UserError(f"{path}: malformed cost constants file (negative {', '.join(negative)})")
    return Constants(values, sources)


def check_model(name: str) -> None:
    if name not in ENERGY_MODELS:
        raise UserError(f"unknown energy model {name!r}; choose one of: {', '.join(ENERGY_MODELS)}")


def energy(operations, weight_bits: int, steps: int, dt: float, model: str = "ops", memory: bool = False,
           constants: Constants | None = None) -> dict:
    """Energy per inference (pJ) per layer and in total, the equal ANN's, and their ratio."""
    check_model(model)
    c = constants or load_constants()
    read_pj = c["sram_read_64bit_pj"] / 64
    layers = []
    for ops in operations:
        if model == "ops":
            pj = c["ac_pj"] * ops.acs + c["mac_pj"] * ops.macs
            if memory:
                pj += (ops.acs + ops.macs) * read_pj * weight_bits
        else:
            pj = c["spike_pj"] * ops.spikes
        layers.append({"layer": ops.layer, "energy_pj": pj})
    snn = sum(row["energy_pj"] for row in layers)
    if model == "spike":
        snn += c["leak_power_w"] * steps * dt * 1e12
    ann_macs = sum(ops.ann_macs for ops in operations)
    ann = ann_macs * (c["mac_pj"] + (read_pj * c["ann_weight_bits"] if memory else 0.0))
    for row in layers:
        row["share"] = row["energy_pj"] / snn if snn else 0.0
    return {"model": model, "memory": memory, "energy_pj": snn, "ann_energy_pj": ann,
            "snn_to_ann": snn / ann if ann else float("nan"), "layers": layers,
            "constants": {k: {"value": c[k], "source": c.sources[k]} for k in REQUIRED}}
