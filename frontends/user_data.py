"""The user's own data as one .npz file: ``snn-compile graph.nir --data data.npz``.

Array names (numpy.savez):

- ``x_train``, ``y_train``, ``x_test``, ``y_test``; or ``x``, ``y``, split
  here into train and test by a seeded permutation (TEST_FRACTION to test).
- ``x``: frames ``[N, C, H, W]`` or ``[N, F]`` (held for every time step),
  or spike trains ``[N, T, C, H, W]`` or ``[N, T, F]`` (event data, one
  frame per step; T is the number of steps to run). A frame's size must
  equal the model's input size; its layout may differ (``[N, 784]`` feeds a
  1x28x28 model).
- values: integers ``0..levels`` (what the host sends the chip), or floats
  in ``[0, 1]``, quantized here to the model's input levels. ``levels``
  (optional scalar array) states the integers' range; ``--input-levels``
  does too; otherwise it is inferred: 1 for 0/1 data, else 255.
- ``steps`` (optional scalar array): how many steps each frame is held,
  for a graph that does not say (``--steps`` does the same).
- ``y``: integer class labels ``0..K-1`` (classification, K at most the
  model's outputs), or floats (regression targets, ``[N]`` or ``[N,
  outputs]``, compared with the model's read-out).

Files are read with ``allow_pickle=False``: object arrays are refused, never
unpickled. Every problem is one ``UserError`` line naming the file.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from frontends.datasets import Dataset
from toolchain.errors import UserError

TEST_FRACTION = 0.2
SPLIT_SEED = 0
NAMES = ("x_train", "y_train", "x_test", "y_test")
FRAME_NDIM, TRAIN_NDIM = (2, 4), (3, 5)
DEFAULT_LEVELS = 255


@dataclass
class UserDataset(Dataset):
    """A ``Dataset`` from an .npz file: ``x_*`` shaped (N, *input) for frames or (N, T, *input) for spike
    trains; ``classes`` is 0 for regression. ``notes`` say what was inferred, for the report."""

    task: Literal["classification", "regression"] = "classification"
    steps: int | None = None
    notes: tuple[str, ...] = ()


@dataclass
class UserData:
    """The arrays of one .npz file, checked for what they are on their own (before any model)."""

    path: Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    stated_levels: int | None
    split: str
    stated_steps: int | None = None

    @property
    def spike_trains(self) -> bool:
        return self.x_train.ndim in TRAIN_NDIM

    @property
    def steps(self) -> int | None:
        """Steps a spike train lasts; for frames, the file's ``steps`` (None: the model's own)."""
        return int(self.x_train.shape[1]) if self.spike_trains else self.stated_steps

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[2 if self.spike_trains else 1:])

    @property
    def task(self) -> str:
        return "regression" if self.y_train.dtype.kind == "f" else "classification"

    @property
    def integers(self) -> bool:
        return self.x_train.dtype.kind in "biu"

    def levels(self, option: int | None = None) -> tuple[int | None, str]:
        """Input levels the file's values imply, and where that came from (None: the model decides)."""
        if self.stated_levels is not None:
            if option is not None and option != self.stated_levels:
                raise UserError(f"{self.path}: the file states levels {self.stated_levels} but --input-levels is "
                                f"{option}; drop one of them")
            return self.stated_levels, "stated in the file"
        if option is not None:
            return option, "--input-levels"
        binary = all(np.isin(x, (0, 1)).all() for x in (self.x_train, self.x_test))
        if binary:
            return 1, "inferred: the values are 0 and 1"
        if self.integers:
            return DEFAULT_LEVELS, f"inferred: integers up to {self._largest()}; state `levels` in the file if " \
                                   "the range is another"
        return None, "the model's"

    def import_hints(self, options, input_levels: int | None = None):
        """``options`` (a toolchain ImportOptions) with what the data says about the run filled in where
        the caller left it open: the steps of spike trains and the input levels."""
        levels, _ = self.levels(input_levels)
        return replace(options, steps=options.steps or self.steps,
                       input_levels=options.input_levels or levels)

    def for_model(self, graph, input_levels: int | None = None) -> UserDataset:
        """The data as the model ``graph`` (a toolchain Graph) runs it: shaped to its input, integers on
        its input levels, labels within its outputs."""
        return self.dataset(tuple(graph.input_shape), graph.input_levels, graph.steps,
                            graph.population(graph.output).size, input_levels)

    def dataset(self, input_shape: tuple[int, ...] | None = None, model_levels: int | None = None,
                model_steps: int | None = None, outputs: int | None = None,
                input_levels: int | None = None) -> UserDataset:
        """As ``for_model``; without a model (training one) the data's own shape and levels are used."""
        input_shape = tuple(input_shape or self.frame_shape)
        if int(np.prod(self.frame_shape)) != int(np.prod(input_shape)):
            what = "spike trains of frames" if self.spike_trains else "frames"
            raise UserError(f"{self.path}: {what} of shape {self.frame_shape} do not fit the model's input "
                            f"{input_shape} ({int(np.prod(self.frame_shape))} vs {int(np.prod(input_shape))} "
                            "values)")
        if self.spike_trains and model_steps is not None and model_steps != self.steps:
            raise UserError(f"{self.path}: spike trains of {self.steps} steps, but the model runs {model_steps} "
                            f"steps; pass --steps {self.steps} or cut the trains")
        levels, source = self.levels(input_levels)
        if model_levels is not None and model_levels != levels:
            if self.integers and levels is not None and not source.startswith("inferred"):
                raise UserError(f"{self.path}: integer inputs on {levels} levels ({source}), but the model takes "
                                f"{model_levels} levels; store values 0..{model_levels} or floats in [0, 1]")
            levels, source = model_levels, "the model's"  # a statement beats a guess
        elif levels is None:
            levels, source = DEFAULT_LEVELS, "default"
        if self.integers and self._largest() > levels:
            raise UserError(f"{self.path}: input values up to {self._largest()} exceed the {levels} input levels "
                            f"({source}); state `levels` in the file or pass --input-levels")
        y_train, y_test, classes = self._targets(outputs)
        lead = (-1,) + ((self.steps,) if self.spike_trains else ())
        x_train, x_test = (self._on_levels(x, levels).reshape(lead + input_shape) for x in (self.x_train, self.x_test))
        return UserDataset(self.path.name, x_train, y_train, x_test, y_test, levels=levels, classes=classes,
                           task=self.task, steps=self.steps,
                           notes=(self.split, f"input levels {levels} ({source})"))

    def require(self, command: str, labels: bool = True, frames: bool = False) -> "UserData":
        """Refuse what ``command`` cannot take: regression targets where it scores labels, spike
        trains where it needs frames."""
        if labels and self.task == "regression":
            raise UserError(f"{self.path}: `snn-compile {command}` scores class labels; the file holds float "
                            "regression targets (y as integers 0..K-1 are labels)")
        if frames and self.spike_trains:
            raise UserError(f"{self.path}: `snn-compile {command}` takes frames [N, C, H, W] or [N, F]; the file "
                            f"holds spike trains of {self.steps} steps")
        return self

    def describe(self) -> str:
        kind = f"spike trains of {self.steps} steps of {self.frame_shape}" if self.spike_trains \
            else f"frames {self.frame_shape}"
        return (f"{self.path}: {len(self.x_train)} train / {len(self.x_test)} test samples, {kind}, "
                f"{'integers' if self.integers else 'floats in [0, 1]'}, {self.task} targets ({self.split})")

    def _largest(self) -> int:
        return int(max(self.x_train.max(initial=0), self.x_test.max(initial=0)))

    def _on_levels(self, x: np.ndarray, levels: int) -> np.ndarray:
        return x.astype(np.int64) if self.integers else np.round(x * levels).astype(np.int64)

    def _targets(self, outputs: int | None):
        if self.task == "regression":
            width = 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])
            if outputs is not None and width != outputs:
                raise UserError(f"{self.path}: regression targets have {width} values per sample but the model "
                                f"reads out {outputs}; store y as [N, {outputs}]")
            return (self.y_train.astype(np.float64).reshape(-1, width),
                    self.y_test.astype(np.float64).reshape(-1, width), 0)
        largest = int(max(self.y_train.max(initial=0), self.y_test.max(initial=0)))
        if outputs is not None and largest >= outputs:
            raise UserError(f"{self.path}: labels go up to {largest} but the model has {outputs} outputs "
                            f"(labels must be 0..{outputs - 1})")
        return self.y_train.astype(np.int64), self.y_test.astype(np.int64), outputs or largest + 1


def read_user_data(path: str | Path, dataset: str | None = None) -> UserData:
    """Read and check ``path``; ``dataset``: a --dataset given beside --data (refused: two sources)."""
    path = Path(path)
    if dataset:
        raise UserError(f"--data {path} and --dataset {dataset} name two datasets; give one of them")
    if not path.is_file():
        raise UserError(f"{path}: no such file (--data takes an .npz written by numpy.savez)")
    if not zipfile.is_zipfile(path):  # np.load would try to unpickle anything else
        raise UserError(f"{path}: not an .npz archive (numpy.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            wanted = NAMES if set(NAMES) <= names else ("x", "y") if {"x", "y"} <= names else None
            if wanted is None:
                raise UserError(f"{path}: found arrays {sorted(names) or 'none'}; name them x_train, y_train, "
                                "x_test, y_test (or x and y, split here)")
            arrays = {name: archive[name] for name in wanted}
            stated = {key: archive[key] for key in ("levels", "steps") if key in names}
    except UserError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise UserError(f"{path}: holds object (pickled) arrays, which are not read; store numeric arrays "
                            "only") from None
        raise UserError(f"{path}: not a readable .npz archive ({_first_line(exc)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, MemoryError) as exc:
        raise UserError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {_first_line(exc)})") \
            from None
    if "x" in arrays:
        split = f"x/y split {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} by seed {SPLIT_SEED}"
        arrays = _split(path, arrays["x"], arrays["y"])
    else:
        split = "x_train/x_test as given"
    data = _checked(path, arrays, _count(path, stated.get("levels"), "levels"), split)
    data.stated_steps = _count(path, stated.get("steps"), "steps")
    if data.stated_steps is not None and data.spike_trains and data.stated_steps != data.x_train.shape[1]:
        raise UserError(f"{path}: `steps` is {data.stated_steps} but the spike trains last {data.x_train.shape[1]} "
                        "steps; drop `steps`")
    return data


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _split(path: Path, x: np.ndarray, y: np.ndarray) -> dict:
    if len(x) != len(y) or len(x) < 2:
        raise UserError(f"{path}: x has {len(x)} samples and y {len(y)}; they must match, at least 2")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    test = max(1, int(round(len(x) * TEST_FRACTION)))
    return {"x_train": x[order[test:]], "y_train": y[order[test:]], "x_test": x[order[:test]],
            "y_test": y[order[:test]]}


def _count(path: Path, stated, name: str) -> int | None:
    """An optional scalar array such as ``levels``: one integer of at least 1."""
    if stated is None:
        return None
    value = stated.reshape(-1)[:1]
    if stated.size != 1 or stated.dtype.kind not in "iuf" or not np.isfinite(value).all() or value[0] < 1 \
            or value[0] != int(value[0]):
        raise UserError(f"{path}: `{name}` must be one integer of at least 1, got {stated.reshape(-1)[:3]}")
    return int(value[0])


def _checked(path: Path, arrays: dict, stated_levels: int | None, split: str) -> UserData:
    x_train, y_train, x_test, y_test = (arrays[n] for n in NAMES)
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.ndim not in FRAME_NDIM + TRAIN_NDIM:
            raise UserError(f"{path}: {name} has shape {x.shape}; expected frames [N, C, H, W] or [N, F], or "
                            "spike trains [N, T, C, H, W] or [N, T, F]")
        if x.dtype.kind not in "biuf":
            raise UserError(f"{path}: {name} holds {x.dtype} values; store integers or floats")
        if len(x) == 0:
            raise UserError(f"{path}: {name} has no samples")
    if x_train.shape[1:] != x_test.shape[1:] or x_train.dtype.kind != x_test.dtype.kind:
        raise UserError(f"{path}: x_train {x_train.shape} ({x_train.dtype}) and x_test {x_test.shape} "
                        f"({x_test.dtype}) differ in sample shape or kind")
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype.kind == "f" and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            raise UserError(f"{path}: {name} has floats in [{np.nanmin(x):g}, {np.nanmax(x):g}]; float inputs "
                            "must lie in [0, 1] (or store integers 0..levels)")
        if x.dtype.kind == "i" and x.min() < 0:
            raise UserError(f"{path}: {name} has negative values ({x.min()}); inputs are 0..levels")
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(y) != len(x) or y.ndim not in (1, 2) or (y.ndim == 2 and y.dtype.kind != "f"):
            raise UserError(f"{path}: y_{name} has shape {y.shape} for {len(x)} samples; expected [N] labels or "
                            "[N] / [N, outputs] regression targets")
        if y.dtype.kind not in "biuf":
            raise UserError(f"{path}: y_{name} holds {y.dtype} values; store integer labels or float targets")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise UserError(f"{path}: y_{name} has NaN or infinite targets")
        if y.dtype.kind in "iu" and y.min() < 0:
            raise UserError(f"{path}: y_{name} has label {y.min()}; labels are 0..K-1")
    if (y_train.dtype.kind == "f") != (y_test.dtype.kind == "f"):
        raise UserError(f"{path}: y_train and y_test must both be labels (integers) or both targets (floats)")
    return UserData(path, x_train, y_train, x_test, y_test, stated_levels, split)
