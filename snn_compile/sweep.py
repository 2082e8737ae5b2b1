"""Compression sweeps: accuracy, size and cost across weight bits x pruning ratios (x core budgets).

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

Core budgets (``max_cores``) add, per method and chip width, one row per
budget: the unpruned model compiled as ``snn-compile compile --max-cores N
--prune-to-fit`` compiles it (structured pruning, layer by layer, each cut
chosen by how far the readout moves on the calibration images per core it
saves), with the method's quantization and pruning compensation. Those rows
trade accuracy against ``loihi_cores``.
"""

from __future__ import annotations

import itertools
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from snn_compile.compile import CompileOptions, Compiled, ReadoutDeviation, compile_model
from snn_compile.executors import Retry, cluster_executor as sweep_executor
from targets.chips import load_chip
from targets.registry import Target, for_bits, get_target
from toolchain.calibration import calibrate
from toolchain.errors import UserError
from snn_compile.evaluate import cost_report
from toolchain.finetune import FinetuneOptions, finetune
from toolchain.ir import INPUT, Graph
from toolchain.passes.prune import Calibration, PruneOptions, check_ratio, prune
from toolchain.passes.prune_search import greedy_prune
from toolchain.passes.quantize import DIGITAL_MAX_BITS, QuantizeOptions, fake_quantize, quantize
from snn_compile.report import classification_metrics, model_size_bits, model_size_bits_float

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
    chip_bits, widest = get_target("loihi2").bit_range[1], get_target("digital45nm").bit_range[1]
    for b in bits:
        if not 1 <= b <= widest:
            raise UserError(f"--bits {b} is out of range: 1..{widest} "
                            f"(Loihi 2 holds up to {chip_bits}; wider runs on the digital target)")
    for r in ratios:
        check_ratio(r, "--prune")


QUANT_CANDIDATES = [QuantizeOptions(8, scale, granularity, correction)
                    for scale, granularity, correction in itertools.product(
                        ("mse", "output-mse", "percentile"), ("tensor", "channel"), (False, True))]
BASELINE_QUANT = QuantizeOptions(8, "max", "tensor", False)


def _score_run(graph: Graph, preferred: Target, bits: int, options: QuantizeOptions, rates, images):
    """A quantization candidate's run on validation images: the quantized program alone (its mapping
    changes no spike), on the target ``bits`` routes to."""
    options = replace(options, bits=bits)
    target = for_bits(bits, preferred.name)
    if target.chip:
        return target.run(quantize(graph, load_chip(target.chip), options, rates), images)
    return target.run(fake_quantize(graph, options, rates), images) if target.quantizes else target.run(graph, images)


FIT_PRUNING = {"baseline": PruneOptions(0.0, "structured", "l1", "none"),
               "best": PruneOptions(0.0, "structured", "redundancy", "regression")}
"""How each method's core-budget rows rank and compensate the units they prune."""


def _compile_and_run(graph: Graph, preferred: Target, bits: int, options: QuantizeOptions, rates,
                     data: SweepData, fit: tuple[int, PruneOptions] | None = None):
    """A row's program, compiled as ``snn-compile`` compiles it (placed by the calibration images'
    activity), and its run on the test split. ``fit``: (core budget, pruning recipe) to prune to."""
    target = for_bits(bits, preferred.name)
    options = CompileOptions(replace(options, bits=bits))
    if fit is not None:
        options = replace(options, prune=fit[1], max_cores=fit[0], prune_to_fit=True)
    compiled = compile_model(graph, target, options, data.calibration, rates)
    return compiled, target.run(compiled.model, data.test_x)


def evaluate_setting(graph: Graph, target: Target, data: SweepData, bits: int | None, ratio: float, method: str,
                     finetune_epochs: int = 0, prune_search: bool = True,
                     calibration: Calibration | None = None, max_cores: int | None = None) -> dict:
    """One row: prune, quantize (or fine-tune then quantize), run on the test split, measure.
    ``calibration``: the uncompressed graph's calibration run with its Gram matrices, the same
    for every row (computed here when not given and the row needs it). ``max_cores``: prune the
    unpruned graph until it fits this many cores instead (``ratio`` 0, a chip width)."""
    if max_cores is not None and (ratio != 0 or bits is None or method not in FIT_PRUNING):
        raise ValueError("a core-budget row prunes the unpruned graph at a chip width, method baseline or best")
    if calibration is None:
        calibration = _shared_calibration(graph, data, [(bits, ratio, method)])
    pruned, prune_choice = _pruned(graph, ratio, method, calibration, data, prune_search)
    if method == "finetuned":
        tuned = finetune(pruned, data.train_x, data.train_y,
                         FinetuneOptions(bits or DIGITAL_MAX_BITS, epochs=finetune_epochs, granularity="channel",
                                         learning_rate=FINETUNE_LEARNING_RATE, progress=False))
        options = QuantizeOptions(bits or DIGITAL_MAX_BITS, "max", "channel")
        compiled, result = _compile_and_run(tuned, target, bits or DIGITAL_MAX_BITS, options, None, data)
        quant_choice = f"qat {finetune_epochs} epochs at {FINETUNE_LEARNING_RATE:g}, max/channel"
    elif bits is None:
        reference = get_target("reference")
        compiled = Compiled(reference, pruned, None, None, [])
        result, quant_choice = reference.run(pruned, data.test_x), "float"
    else:
        options, rates = BASELINE_QUANT, None
        if method == "best":
            rates = calibration.rates if ratio == 0 else calibrate(pruned, data.calibration).rates
            unquantized = _readout(get_target("reference").run(pruned, data.validation_x))
            options = min(QUANT_CANDIDATES, key=lambda o: _deviation(_score_run(
                pruned, target, bits, o, rates, data.validation_x), unquantized))
        fit = None if max_cores is None else (max_cores, FIT_PRUNING[method])
        compiled, result = _compile_and_run(pruned, target, bits, options, rates, data, fit)
        quant_choice = f"{options.weight_scale}/{options.granularity}" + ("/bias-corr" if options.bias_correction else "")
        if fit is not None:
            pruned, prune_choice = compiled.graph, _fit_choice(compiled.notes["prune-to-fit"], fit[1])
    row = {"bits": bits or 32, "prune": ratio, "method": method, **({} if max_cores is None else
                                                                     {"max_cores": max_cores}),
           "quantization": quant_choice, "pruning": prune_choice,
           **classification_metrics(data.test_y, result.predictions()),
           "neurons": int(sum(p.size for p in pruned.populations))}
    if compiled.program is not None:
        row.update(size_bits=model_size_bits(pruned, compiled.program)["quantized_bits"])
    else:
        row.update(size_bits=int(model_size_bits_float(pruned, bits)))
    row["spikes_per_sample"] = float(sum(a.spike_counts.sum() for k, a in result.activity.items() if k != INPUT)
                                     / result.samples)
    row.update(_costs(compiled, result, bits))
    return row


def _fit_choice(note: dict, recipe: PruneOptions) -> str:
    """A core-budget row's pruning: the recipe, how cuts were chosen, the cores, what each layer lost."""
    cut = ", ".join(f"{name} {p['removed']} of {p['units']}" for name, p in note["pruned"].items()) or "nothing"
    return (f"to fit, {recipe.method}/{recipe.rank}/{recipe.compensation}, by {note['chosen_by']}: "
            f"{note['cores_before']} -> {note['cores_after']} cores, {cut}")


def _shared_calibration(graph: Graph, data: SweepData, settings, progress: bool = False) -> Calibration | None:
    """The uncompressed graph's calibration run, if any of ``settings`` reads it: with the Gram
    matrices for compensated pruning, rates alone for quantization candidates of unpruned rows."""
    gram = any(method != "baseline" and ratio > 0 for _, ratio, method, *_ in settings)
    rates = any(method == "best" and bits is not None and ratio == 0 for bits, ratio, method, *_ in settings)
    if not (gram or rates):
        return None
    if progress:
        print(f"calibrating on {len(data.calibration)} training images", flush=True)
    return calibrate(graph, data.calibration, gram=gram)


def _costs(compiled: Compiled, result, bits: int | None) -> dict:
    """45 nm energy for every row; the Loihi estimate where the row ran on the chip."""
    costs = cost_report(compiled, result, bits or 32)
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
    deviation = ReadoutDeviation(graph, data.validation_x)
    if search:
        candidates["structured/greedy/regression"] = greedy_prune(
            graph, PruneOptions(ratio, "structured", "redundancy", "regression"), calibration, deviation,
            max_candidates=SEARCH_CANDIDATES)
    name = min(candidates, key=lambda k: deviation(candidates[k]))
    return candidates[name], name


GRIDS = ("cross", "axes")


def sweep_settings(bits: list[int], ratios: list[float], methods, grid: str = "cross", max_cores=(),
                   target: str = "loihi2") -> list[tuple]:
    """(bits or None for float, ratio, method) per row, the float model first, then (bits, 0.0,
    method, budget) per core budget in ``max_cores``.

    ``cross``: every bits value at every ratio (and unpruned), plus every
    ratio with float weights. ``axes``: the seed's study: every bits value
    unpruned, every ratio with float weights. Budgets apply to the widths
    that run on a chip with cores (``target`` or the one ``for_bits`` picks),
    for the baseline and best methods.
    """
    if grid not in GRIDS:
        raise UserError(f"--grid {grid!r}: choose one of {', '.join(GRIDS)}")
    pruned = [r for r in ratios if r > 0]
    per_bits = [0.0] + pruned if grid == "cross" else [0.0]
    settings = [(None, 0.0, "baseline")]
    settings += [(b, r, m) for m in methods for b in bits for r in per_bits]
    settings += [(None, r, m) for m in methods if m != "finetuned" for r in pruned]
    if max_cores:
        for n in max_cores:
            if not isinstance(n, int) or n < 1:
                raise UserError(f"--max-cores {n}: a core budget is a positive whole number")
        on_cores = [b for b in bits if for_bits(b, target).chip and not for_bits(b, target).lowering]
        if not on_cores:
            low, high = get_target("loihi2").bit_range
            raise UserError(f"--max-cores prunes to a Loihi core budget; none of --bits "
                            f"{','.join(map(str, bits))} runs on a chip with cores (Loihi 2 holds {low}..{high})")
        settings += [(b, 0.0, m, n) for m in methods if m in FIT_PRUNING for b in on_cores for n in max_cores]
    return settings


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a sweep: ``rows``, the settings finished so far (in the order of
    ``sweep_settings``), of ``total``; ``cause`` is the interrupt itself."""

    def __init__(self, rows: list[dict], total: int, cause: KeyboardInterrupt):
        super().__init__(f"sweep interrupted after {len(rows)} of {total} settings")
        self.rows, self.total, self.cause = rows, total, cause


class SweepFailed(UserError):
    """Settings whose worker died on every attempt: ``failures``, (setting key, why) each; ``rows``,
    the other settings' (in the order of ``sweep_settings``), of ``total``."""

    def __init__(self, rows: list[dict], total: int, failures: list[tuple[tuple, str]]):
        listed = "; ".join(f"{_describe(key)}: {error}" for key, error in failures)
        super().__init__(f"{len(failures)} of {total} settings failed ({listed})")
        self.rows, self.total, self.failures = rows, total, failures


def setting_key(row: dict) -> tuple:
    """What identifies a row's setting: (bits, 32 for float weights; ratio; method), then the core
    budget for a row that pruned to one."""
    budget = (int(row["max_cores"]),) if row.get("max_cores") else ()
    return (int(row["bits"]), float(row["prune"]), str(row["method"])) + budget


def _setting_key(setting: tuple) -> tuple:
    bits, ratio, method, *budget = setting
    return setting_key({"bits": bits or 32, "prune": ratio, "method": method, "max_cores": (budget or [None])[0]})


DERIVED_COLUMNS = ("drop_points", "compression")
"""Columns computed from the whole sweep (against its float row), not by the row's own run."""


def run_sweep(graph: Graph, target: Target, data: SweepData, bits: list[int], ratios: list[float],
              methods=("baseline", "best"), workers: int | None = None, progress: bool = True,
              finetune_epochs: int = 0, grid: str = "cross", prune_search: bool = True,
              finished: list[dict] = (), executor=None,
              on_row: Callable[[list[dict], int], None] | None = None, max_cores=()) -> list[dict]:
    """One row per setting of ``sweep_settings``, evaluated in parallel. ``prune_search``:
    also try the greedy choice of pruned units (one validation run per remaining unit per round).
    ``max_cores``: core budgets, a row per budget pruned to fit it (see the module docstring).

    ``executor``: where rows run (default: ``workers`` local processes; see ``sweep_executor``).
    ``on_row``: called with the rows finished so far (in the order of ``sweep_settings``) and the
    number of settings as each row finishes, to save them. ``finished``: rows an interrupted run of the same sweep already
    computed; only the other settings run, and the rows are the same as one uninterrupted run's.
    Ctrl-C or SIGTERM stops the workers at once and raises ``SweepInterrupted`` with the rows
    finished so far; settings whose worker died twice raise ``SweepFailed`` once the others end."""
    check_settings(bits, ratios)
    if finetune_epochs > 0 and "finetuned" not in methods:
        methods = tuple(methods) + ("finetuned",)
    settings = sweep_settings(bits, ratios, methods, grid, max_cores, target.name)
    keys = [_setting_key(setting) for setting in settings]
    done = {setting_key(row): {k: v for k, v in row.items() if k not in DERIVED_COLUMNS} for row in finished}
    done = {key: row for key, row in done.items() if key in keys}
    missing = [setting for setting, key in zip(settings, keys) if key not in done]
    if done and progress:
        print(f"sweep: {len(done)} of {len(settings)} settings already done; computing {len(missing)}", flush=True)
    failures = []
    save = None if on_row is None else lambda: on_row([done[k] for k in keys if k in done], len(settings))
    try:
        if missing:
            with executor or sweep_executor("local", workers) as runner:
                failures = _evaluate_all(graph, target, data, missing, runner, progress, finetune_epochs,
                                         prune_search, done, save)
    except KeyboardInterrupt as interrupt:
        raise SweepInterrupted([done[k] for k in keys if k in done], len(settings), interrupt) from None
    if failures:
        raise SweepFailed([done[k] for k in keys if k in done], len(settings), failures)
    return finish_rows([done[k] for k in keys])


def finish_rows(rows: list[dict]) -> list[dict]:
    """The rows with the columns measured against the float row (when it is among them)."""
    reference_row = next((r for r in rows if r["bits"] == 32 and r["prune"] == 0 and r["method"] == "baseline"),
                         None)
    if reference_row is None:
        return rows
    return [{**row, "drop_points": 100 * (reference_row["accuracy"] - row["accuracy"]),
             "compression": reference_row["size_bits"] / row["size_bits"]} for row in rows]


def _evaluate_all(graph: Graph, target: Target, data: SweepData, settings: list[tuple], executor,
                  progress: bool, finetune_epochs: int, prune_search: bool, done: dict, save) -> list:
    """Evaluate ``settings`` on ``executor``, adding each row to ``done`` (and calling ``save``) as it
    finishes; the model, the data and the shared calibration go to the workers once. Returns the
    (setting key, error) of the settings that failed."""
    shared = _shared_values(graph, target, data, settings, finetune_epochs, prune_search, progress)
    from tqdm import tqdm
    bar = tqdm(total=len(settings), desc="sweep", unit="setting", disable=None if progress else True)
    started, failures, count = time.monotonic(), [], 0
    with ExitStack() as stack:  # the workers end before the bar closes, whatever stops the loop
        stack.callback(bar.close)
        if progress:
            print(f"sweep on {executor.describe()}: {len(settings)} settings", flush=True)
        outcomes = stack.enter_context(closing(executor.run(_evaluate_row, shared, settings)))
        say = (lambda text: print(text, flush=True)) if bar.disable else bar.write
        for outcome in outcomes:
            key = _setting_key(outcome.item)
            if isinstance(outcome, Retry):
                if progress:
                    say(f"sweep: {_describe(key)}: {outcome.error}; running it again")
                continue
            count += 1
            if outcome.error is None:
                done[key] = outcome.result
                if save is not None:
                    save()
                what = f"accuracy {outcome.result['accuracy']:.4f}"
            else:
                failures.append((key, f"{outcome.error}, on both attempts"))
                what = f"failed: {failures[-1][1]}"
            running = min(executor.slots(), len(settings) - count)
            bar.set_postfix(running=running, failed=len(failures), refresh=False)
            bar.update()
            if progress and (bar.disable or outcome.error is not None):  # no terminal (a log, CI): one line
                elapsed = time.monotonic() - started
                say(f"sweep: {count}/{len(settings)} {_describe(key)}: {what} (done {count - len(failures)}, "
                    f"running {running}, failed {len(failures)}; elapsed {_clock(elapsed)}, remaining "
                    f"~{_clock(elapsed / count * (len(settings) - count))})")
    return failures


def _shared_values(graph: Graph, target: Target, data: SweepData, settings: list[tuple], finetune_epochs: int,
                   prune_search: bool, progress: bool = False) -> tuple:
    """What every row of ``settings`` reads, shipped to each worker once: the model, the data
    (without the training split unless a row fine-tunes) and the uncompressed calibration."""
    calibration = _shared_calibration(graph, data, settings, progress)
    if all(method != "finetuned" for _, _, method, *_ in settings):
        data = replace(data, train_x=data.train_x[:0], train_y=data.train_y[:0])
    return graph, target, data, finetune_epochs, prune_search, calibration


def _evaluate_row(shared: tuple, setting: tuple) -> dict:
    """A worker's task: one setting's row, from the values every row shares."""
    graph, target, data, finetune_epochs, prune_search, calibration = shared
    bits, ratio, method, *budget = setting
    return evaluate_setting(graph, target, data, bits, ratio, method, finetune_epochs, prune_search, calibration,
                            *budget)


def _describe(key: tuple) -> str:
    bits, ratio, method, *budget = key
    return f"{method} {bits} bits, " + (f"pruned to fit {budget[0]} cores" if budget else f"prune {ratio}")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"
