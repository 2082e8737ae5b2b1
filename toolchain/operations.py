r"""Operations a run performed, per layer, counted from the activity it observed.

Cost models price these counts; none of them is a dense worst case unless
named ``dense``. Definitions, per inference (one sample, all its steps):

- **AC** (accumulate): one per binary event per nonzero outgoing synapse.
  A spike of a layer, or a nonzero input value when the input is binary
  (``input_levels == 1``), adds one weight to each target it reaches.
  Pruned (zero) synapses cost nothing.
- **MAC** (multiply-accumulate): one per *graded* event per nonzero synapse:
  the host's analog input values into the first layer (a zero input value
  is skipped, as event-driven hardware skips it).
- **neuron updates**: every neuron of every layer, every step.
  ``active_updates`` are the updates in which the neuron fired.
- **spikes**: spikes the layer emitted.
- **dense ACs/MACs**: every synapse, zero or not, every step: what a
  clock-driven implementation without sparsity would do.
- **ANN MACs**: the same network as a conventional non-spiking ANN: every
  synapse once per inference (recurrent connections once too).

These count the network as compiled: BatchNorm folded into the convolution
and pooling folded into a larger, strided convolution that reaches only the
pooled targets. NeuroBench's ``SynapticOperations`` (``Effective_ACs``,
``Effective_MACs``, ``Dense``) has the same rules (nonzero inputs through
nonzero weights; binary inputs ACs, graded ones MACs; dense: every weight
for every input) but counts the torch layers of the model as trained, where
a convolution runs at full resolution before its pooling: for a network
without pooling (an MLP) the two agree, for a convolutional one NeuroBench's
are larger. ``frontends.trained_operations`` counts those. Operations are
attributed to the layer that receives them (the synapses' target).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from toolchain.connectivity import Wiring
from toolchain.ir import INPUT


@dataclass(frozen=True)
class LayerOperations:
    """Per-inference operation counts of one layer (floats: means over the run's samples)."""

    layer: str
    acs: float
    macs: float
    neuron_updates: float
    active_updates: float
    spikes: float
    dense_acs: float
    dense_macs: float
    ann_macs: float
    neurons: int

    @property
    def synaptic_ops(self) -> float:
        return self.acs + self.macs

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Structure:
    """The synapse pattern a ``Wiring`` counts, for integer ``Synapses`` and float graph connections alike."""

    weights: np.ndarray
    kind: str
    stride: tuple[int, int]
    padding: tuple[int, int]


def count_operations(network, activity: dict, samples: int, steps: int) -> list[LayerOperations]:
    """Counts for a ``Program`` or a ``Graph`` and a run's ``RunResult.activity``, per inference."""
    layers, connections = _layers_and_connections(network)
    graded_input = network.input_levels > 1
    rows = []
    for name, size in layers:
        acs = macs = dense_acs = dense_macs = ann_macs = 0.0
        for conn in (c for c in connections if c.target == name):
            weights = conn.weights if hasattr(conn, "weights") else conn.weight
            source_shape = network.shape_of(conn.source)
            target_shape = network.shape_of(name)
            used = Wiring(_Structure(weights, conn.kind, conn.stride, conn.padding), source_shape, target_shape)
            every = Wiring(_Structure(np.ones_like(weights), conn.kind, conn.stride, conn.padding),
                           source_shape, target_shape)
            events = np.asarray(activity[conn.source].spike_counts, dtype=np.float64).reshape(-1)
            ops = float(used.synaptic_ops_per_target(events).sum()) / samples
            all_synapses = float(every.synapses_per_target().sum())
            if conn.source == INPUT and graded_input:
                macs += ops
                dense_macs += all_synapses * steps
            else:
                acs += ops
                dense_acs += all_synapses * steps
            ann_macs += all_synapses
        spikes = float(np.sum(activity[name].spike_counts)) / samples
        rows.append(LayerOperations(layer=name, acs=acs, macs=macs, neuron_updates=float(size * steps),
                                    active_updates=spikes, spikes=spikes, dense_acs=dense_acs,
                                    dense_macs=dense_macs, ann_macs=ann_macs, neurons=size))
    return rows


def _layers_and_connections(network):
    if hasattr(network, "layers"):  # a compiled Program
        return [(layer.name, layer.size) for layer in network.layers], network.synapses
    return [(pop.name, pop.size) for pop in network.populations], network.connections


def totals(operations: list[LayerOperations]) -> dict:
    """Sums over layers of every count."""
    keys = [k for k in LayerOperations.__dataclass_fields__ if k != "layer"]
    return {k: float(sum(getattr(row, k) for row in operations)) for k in keys}
