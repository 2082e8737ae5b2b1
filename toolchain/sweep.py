"""Compression sweeps: accuracy, size and cost across weight bits x pruning ratios.

Three methods per setting, so comparisons are honest:

- ``baseline``: the quantization seed's plain post-training recipe: static
  per-tensor scales from the largest weight, structured L1 pruning, no
  calibration, no correction.
- ``finetuned`` (with ``finetune_epochs`` > 0): the ``best`` pruning, then
  quantization-aware fine-tuning on the training split (straight-through
  estimator, per-channel steps), then the same grid on the chip.
- ``best``: candidate option sets (step choice, per-tensor or per-channel
  groups, bias correction; structured pruning ranked by L1, activity or
  redundancy, with mean or least-squares regression compensation, or chosen
  greedily in rounds by the readout's deviation) are scored
  on a validation split of the *training* data, and the winner is evaluated
  on the test split; the chosen options are reported with every row. The
  score is how far a candidate's readout moves from the uncompressed model's,
  not accuracy: the model has learnt those images' labels, and accuracy on
  them favoured pruning that keeps memorised detail (on the Fashion-MNIST
  CSNN, L1 ranking scored best on the validation split and worst on the test
  split) and often ties between quantization candidates.

Weights of up to 8 bits run on the bit-accurate Loihi 2 emulator; wider
weights (the seed's k = 16) run on the generic digital target (float
dynamics, k-bit weights).
"""

from __future__ import annotations

import itertools
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace

import numpy as np

from targets import reference
from targets.loihi2 import run as run_loihi2
from toolchain.calibration import calibrate
from toolchain.errors import UserError
from toolchain.evaluate import cost_report
from toolchain.files import deferred_signals, release_signals
from toolchain.finetune import FinetuneOptions, finetune
from toolchain.ir import INPUT, Graph
from toolchain.passes.partition import partition
from toolchain.passes.prune import Calibration, PruneOptions, check_ratio, prune
from toolchain.passes.prune_search import greedy_prune
from toolchain.passes.quantize import DIGITAL_MAX_BITS, QuantizeOptions, fake_quantize, quantize
from toolchain.report import classification_metrics, model_size_bits, model_size_bits_float

LOIHI_MAX_BITS = 8
# The model is already trained: on the Fashion-MNIST CSNN, two epochs at the fine-tuner's
# default 5e-4 lost accuracy at every width (even 16 bits); 1e-4 keeps it.
FINETUNE_LEARNING_RATE = 1e-4
# The greedy pruning search tries at most this many units per layer and round (the first by
# reconstruction loss), so a round costs at most this many validation runs per layer however
# wide the layer; the CSNN's layers (32 and 64 channels) are searched in full.
SEARCH_CANDIDATES = 64


@dataclass(frozen=True)
class SweepData:
    """Integer images: calibration and validation come from the training split (validation
    needs no labels: candidates are scored against the uncompressed model's readout)."""

    calibration: np.ndarray
    validation_x: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    train_x: np.ndarray
    train_y: np.ndarray


def split_data(dataset, calibration: int = 512, validation: int = 512, seed: int = 0,
               test_samples: int | None = None, train_samples: int | None = None) -> SweepData:
    """Calibration and validation subsets of the training split; ``train_samples``: a random
    subset for fine-tuning (default: the whole training split)."""
    order = np.random.default_rng(seed).permutation(len(dataset.x_train))
    cal, val = order[:calibration], order[calibration:calibration + validation]
    n = len(dataset.x_test) if test_samples is None else min(test_samples, len(dataset.x_test))
    train = np.sort(order[:train_samples]) if train_samples else np.arange(len(dataset.x_train))
    return SweepData(dataset.x_train[cal], dataset.x_train[val], dataset.x_test[:n], dataset.y_test[:n],
                     dataset.x_train[train], dataset.y_train[train])


def check_settings(bits: list[int], ratios: list[float]) -> None:
    if not bits:
        raise UserError("--bits needs at least one value, e.g. --bits 16,8,4")
    if not ratios:
        raise UserError("--prune needs at least one value, e.g. --prune 0.1,0.2,0.3 (0: no pruning)")
    for b in bits:
        if not 1 <= b <= DIGITAL_MAX_BITS:
            raise UserError(f"--bits {b} is out of range: 1..{DIGITAL_MAX_BITS} "
                            f"(Loihi 2 holds up to {LOIHI_MAX_BITS}; wider runs on the digital target)")
    for r in ratios:
        check_ratio(r, "--prune")


QUANT_CANDIDATES = [QuantizeOptions(8, scale, granularity, correction)
                    for scale, granularity, correction in itertools.product(
                        ("mse", "output-mse", "percentile"), ("tensor", "channel"), (False, True))]
BASELINE_QUANT = QuantizeOptions(8, "max", "tensor", False)


def _compile_and_run(graph: Graph, chip, bits: int, options: QuantizeOptions, rates, images):
    options = QuantizeOptions(bits, options.weight_scale, options.granularity, options.bias_correction)
    if bits <= LOIHI_MAX_BITS:
        program = quantize(graph, chip, options, rates)
        return program, run_loihi2(program, images)
    return None, reference.run(fake_quantize(graph, options, rates), images)


def evaluate_setting(graph: Graph, chip, data: SweepData, bits: int | None, ratio: float, method: str,
                     finetune_epochs: int = 0, prune_search: bool = True,
                     calibration: Calibration | None = None) -> dict:
    """One row: prune, quantize (or fine-tune then quantize), run on the test split, measure.
    ``calibration``: the uncompressed graph's calibration run with its Gram matrices, the same
    for every row (computed here when not given and the row needs it)."""
    if calibration is None:
        calibration = _shared_calibration(graph, data, [(bits, ratio, method)])
    pruned, prune_choice = _pruned(graph, ratio, method, calibration, data, prune_search)
    if method == "finetuned":
        tuned = finetune(pruned, data.train_x, data.train_y,
                         FinetuneOptions(bits or DIGITAL_MAX_BITS, epochs=finetune_epochs, granularity="channel",
                                         learning_rate=FINETUNE_LEARNING_RATE, progress=False))
        options = QuantizeOptions(bits or DIGITAL_MAX_BITS, "max", "channel")
        program, result = _compile_and_run(tuned, chip, bits or DIGITAL_MAX_BITS, options, None, data.test_x)
        quant_choice = f"qat {finetune_epochs} epochs at {FINETUNE_LEARNING_RATE:g}, max/channel"
    elif bits is None:
        result, program, quant_choice = reference.run(pruned, data.test_x), None, "float"
    else:
        options, rates = BASELINE_QUANT, None
        if method == "best":
            rates = calibration.rates if ratio == 0 else calibrate(pruned, data.calibration).rates
            unquantized = _readout(reference.run(pruned, data.validation_x))
            options = min(QUANT_CANDIDATES, key=lambda o: _deviation(_compile_and_run(
                pruned, chip, bits, o, rates, data.validation_x)[1], unquantized))
        program, result = _compile_and_run(pruned, chip, bits, options, rates, data.test_x)
        quant_choice = f"{options.weight_scale}/{options.granularity}" + ("/bias-corr" if options.bias_correction else "")
    row = {"bits": bits or 32, "prune": ratio, "method": method, "quantization": quant_choice,
           "pruning": prune_choice, **classification_metrics(data.test_y, result.predictions()),
           "neurons": int(sum(p.size for p in pruned.populations))}
    if program is not None:
        size = model_size_bits(pruned, program)
        row.update(size_bits=size["quantized_bits"])
    else:
        row.update(size_bits=int(model_size_bits_float(pruned, bits)))
    row["spikes_per_sample"] = float(sum(a.spike_counts.sum() for k, a in result.activity.items() if k != INPUT)
                                     / result.samples)
    row.update(_costs(program, pruned, result, chip, bits))
    return row


def _shared_calibration(graph: Graph, data: SweepData, settings, progress: bool = False) -> Calibration | None:
    """The uncompressed graph's calibration run, if any of ``settings`` reads it: with the Gram
    matrices for compensated pruning, rates alone for quantization candidates of unpruned rows."""
    gram = any(method != "baseline" and ratio > 0 for _, ratio, method in settings)
    rates = any(method == "best" and bits is not None and ratio == 0 for bits, ratio, method in settings)
    if not (gram or rates):
        return None
    if progress:
        print(f"calibrating on {len(data.calibration)} training images", flush=True)
    return calibrate(graph, data.calibration, gram=gram)


def _costs(program, graph: Graph, result, chip, bits: int | None) -> dict:
    """45 nm energy for every row; the Loihi estimate where the row ran on the chip."""
    network = partition(program, chip) if program is not None else graph
    costs = cost_report(network, result, chip, bits or 32, graph.dt)
    out = {"energy_45nm_nj": costs["digital45nm"]["energy_pj"] / 1e3,
           "ann_45nm_nj": costs["digital45nm"]["ann_energy_pj"] / 1e3}
    if "loihi" in costs:
        out.update(loihi_energy_nj=costs["loihi"]["energy_pj"] / 1e3,
                   loihi_latency_us=costs["loihi"]["latency_s"] * 1e6, loihi_cores=costs["loihi"]["cores"])
    return out


def _readout(result) -> np.ndarray:
    return np.asarray(result.output, dtype=np.float64)


def _deviation(result, reference_readout: np.ndarray) -> float:
    """Mean squared distance of a compressed model's readout from the uncompressed one's: how
    candidates are compared on the validation images (their labels were learnt in training)."""
    return float(np.mean((_readout(result) - reference_readout) ** 2))


PRUNE_CANDIDATES = [PruneOptions(0.0, "structured", rank, compensation)
                    for rank, compensation in itertools.product(("l1", "activity", "redundancy"),
                                                                ("mean", "regression"))]


def _pruned(graph: Graph, ratio: float, method: str, calibration: Calibration | None, data: SweepData,
            search: bool):
    if ratio == 0:
        return graph, "none"
    if method == "baseline":
        return prune(graph, PruneOptions(ratio, "structured", "l1", "none")), "structured/l1"
    # "best" and "finetuned" share the calibrated, compensated structured pruning
    candidates = {f"structured/{o.rank}/{o.compensation}": prune(graph, replace(o, ratio=ratio), calibration)
                  for o in PRUNE_CANDIDATES}
    unpruned = _readout(reference.run(graph, data.validation_x))
    deviation = lambda g: _deviation(reference.run(g, data.validation_x), unpruned)  # noqa: E731
    if search:
        candidates["structured/greedy/regression"] = greedy_prune(
            graph, PruneOptions(ratio, "structured", "redundancy", "regression"), calibration, deviation,
            max_candidates=SEARCH_CANDIDATES)
    name = min(candidates, key=lambda k: deviation(candidates[k]))
    return candidates[name], name


GRIDS = ("cross", "axes")


def sweep_settings(bits: list[int], ratios: list[float], methods, grid: str = "cross") -> list[tuple]:
    """(bits or None for float, ratio, method) per row, the float model first.

    ``cross``: every bits value at every ratio (and unpruned), plus every
    ratio with float weights. ``axes``: the seed's study: every bits value
    unpruned, every ratio with float weights.
    """
    if grid not in GRIDS:
        raise UserError(f"--grid {grid!r}: choose one of {', '.join(GRIDS)}")
    pruned = [r for r in ratios if r > 0]
    per_bits = [0.0] + pruned if grid == "cross" else [0.0]
    settings = [(None, 0.0, "baseline")]
    settings += [(b, r, m) for m in methods for b in bits for r in per_bits]
    settings += [(None, r, m) for m in methods if m != "finetuned" for r in pruned]
    return settings


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a sweep: ``rows``, the settings finished so far (in the order of
    ``sweep_settings``), of ``total``; ``cause`` is the interrupt itself."""

    def __init__(self, rows: list[dict], total: int, cause: KeyboardInterrupt):
        super().__init__(f"sweep interrupted after {len(rows)} of {total} settings")
        self.rows, self.total, self.cause = rows, total, cause


def setting_key(row: dict) -> tuple:
    """What identifies a row's setting: (bits, 32 for float weights; ratio; method)."""
    return int(row["bits"]), float(row["prune"]), str(row["method"])


DERIVED_COLUMNS = ("drop_points", "compression")
"""Columns computed from the whole sweep (against its float row), not by the row's own run."""


def run_sweep(graph: Graph, chip, data: SweepData, bits: list[int], ratios: list[float],
              methods=("baseline", "best"), workers: int | None = None, progress: bool = True,
              finetune_epochs: int = 0, grid: str = "cross", prune_search: bool = True,
              finished: list[dict] = ()) -> list[dict]:
    """One row per setting of ``sweep_settings``, evaluated in parallel processes. ``prune_search``:
    also try the greedy choice of pruned units (one validation run per remaining unit per round).

    ``finished``: rows an interrupted run of the same sweep already computed; only the other
    settings run, and the rows are the same as one uninterrupted run's. Ctrl-C or SIGTERM stops
    the workers at once and raises ``SweepInterrupted`` with the rows finished so far."""
    check_settings(bits, ratios)
    if finetune_epochs > 0 and "finetuned" not in methods:
        methods = tuple(methods) + ("finetuned",)
    settings = sweep_settings(bits, ratios, methods, grid)
    keys = [setting_key({"bits": b or 32, "prune": r, "method": m}) for b, r, m in settings]
    done = {setting_key(row): {k: v for k, v in row.items() if k not in DERIVED_COLUMNS} for row in finished}
    done = {key: row for key, row in done.items() if key in keys}
    missing = [setting for setting, key in zip(settings, keys) if key not in done]
    if done and progress:
        print(f"sweep: {len(done)} of {len(settings)} settings already done; computing {len(missing)}", flush=True)
    try:
        if missing:
            _evaluate_all(graph, chip, data, missing, workers, progress, finetune_epochs, prune_search, done)
    except KeyboardInterrupt as interrupt:
        raise SweepInterrupted([done[k] for k in keys if k in done], len(settings), interrupt) from None
    return finish_rows([done[k] for k in keys])


def finish_rows(rows: list[dict]) -> list[dict]:
    """The rows with the columns measured against the float row (when it is among them)."""
    reference_row = next((r for r in rows if r["bits"] == 32 and r["prune"] == 0 and r["method"] == "baseline"),
                         None)
    if reference_row is None:
        return rows
    return [{**row, "drop_points": 100 * (reference_row["accuracy"] - row["accuracy"]),
             "compression": reference_row["size_bits"] / row["size_bits"]} for row in rows]


def _evaluate_all(graph: Graph, chip, data: SweepData, settings: list[tuple], workers: int | None,
                  progress: bool, finetune_epochs: int, prune_search: bool, done: dict) -> None:
    """Evaluate ``settings`` in worker processes, adding each row to ``done`` as it finishes."""
    workers = min(workers or os.cpu_count() or 1, len(settings))
    calibration = _shared_calibration(graph, data, settings, progress)
    from tqdm import tqdm
    bar = tqdm(total=len(settings), desc="sweep", unit="setting", disable=None if progress else True)
    pool = None
    try:
        with deferred_signals():  # the workers start with Ctrl-C held, and ignore it: the parent stops them
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_start_worker)
            futures = [pool.submit(evaluate_setting, graph, chip, data, b, r, m, finetune_epochs, prune_search,
                                   calibration)
                       for b, r, m in settings]
        for count, future in enumerate(as_completed(futures), 1):
            row = future.result()
            done[setting_key(row)] = row
            bar.update()
            if progress and bar.disable:  # no terminal (a log, CI): one line per finished setting instead
                print(f"sweep: {count}/{len(settings)} {row['method']} {row['bits']} bits, prune {row['prune']}: "
                      f"accuracy {row['accuracy']:.4f}", flush=True)
    except BrokenProcessPool:
        raise UserError("a sweep worker process died (the system may have run out of memory); rerun with "
                        "fewer --workers") from None
    except BaseException:
        if pool is not None:
            _stop_workers(pool)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Drop the queued settings and end the running ones now, not after they finish (what
    ``ProcessPoolExecutor.terminate_workers`` does from Python 3.14 on)."""
    processes = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _start_worker():
    """Each worker process uses one core (the pool provides the parallelism), ignores Ctrl-C (the
    terminal sends it to every process; the parent decides) and dies on SIGTERM."""
    import torch
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    release_signals()
