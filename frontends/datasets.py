"""Datasets as integer images: what the host actually sends to a chip.

Images stay integers in [0, levels] (digits: 0..16, IDX files: 0..255); the
float input a model trains on is ``x / levels``. Keeping the integers lets
every target see bit-identical input.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.errors import UserError
from toolchain.files import check_readable

DATA_DIR_ENV = "SNN_COMPILE_DATA_DIR"
FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32,
              0x0E: np.float64}
DATASETS = ("digits", "fmnist", "mnist")
MAX_IDX_BYTES = 1 << 31  # 40 times Fashion-MNIST's training images


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # (n, C, H, W) integers in [0, levels]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    levels: int
    classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """``digits`` ships inside scikit-learn; ``fmnist``/``mnist`` are IDX files."""
    if name == "digits":
        return _digits()
    if name in ("fmnist", "mnist"):
        return _idx_dataset(name, _find_idx_dir(name, data_dir))
    raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw), the format of MNIST-like sets.

    The header declares the array; no more than it declares (at most
    ``MAX_IDX_BYTES``) is ever decompressed or read."""
    path = Path(path)
    check_readable(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            zero, dtype_code, ndim = struct.unpack(">HBB", _read_exactly(f, 4, "header"))
            if zero != 0 or dtype_code not in IDX_DTYPES or ndim == 0:
                raise ValueError("bad magic number")
            dims = struct.unpack(f">{ndim}I", _read_exactly(f, 4 * ndim, "dimensions"))
            dtype = np.dtype(IDX_DTYPES[dtype_code]).newbyteorder(">")
            size = math.prod(dims) * dtype.itemsize
            if size > MAX_IDX_BYTES:
                raise ValueError(f"it declares {size} bytes of data, more than the {MAX_IDX_BYTES} this reader takes")
            data = _read_exactly(f, size, f"{math.prod(dims)} values")
            if f.read(1):
                raise ValueError(f"data continues after the {math.prod(dims)} values its header declares")
        return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
    except (OSError, ValueError, struct.error, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: not a valid IDX file ({exc})") from None


def _read_exactly(f, size: int, what: str) -> bytes:
    """``size`` bytes in chunks (a damaged header cannot make one huge allocation), or ``ValueError``."""
    chunks, left = [], size
    while left:
        chunk = f.read(min(left, 1 << 24))
        if not chunk:
            raise ValueError(f"truncated: the file ends before its {what}")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.int64)[:, None]  # values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.3, random_state=0, stratify=digits.target)
    return Dataset("digits", x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64),
                   levels=16, classes=10)


def _find_idx_dir(name: str, data_dir) -> Path:
    candidates = [Path(data_dir)] if data_dir else []
    if not data_dir and os.environ.get(DATA_DIR_ENV):
        candidates.append(Path(os.environ[DATA_DIR_ENV]))
    if not candidates and name == "fmnist":
        candidates.append(FMNIST_SYSTEM_DIR)
    for directory in candidates:
        if all(_idx_path(directory, stem) for stem in IDX_FILES.values()):
            return directory
    where = ", ".join(str(c) for c in candidates) or "nowhere (no --data-dir given)"
    hint = ("install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
            "or pass --data-dir" if name == "fmnist" else f"pass --data-dir or set {DATA_DIR_ENV}")
    raise UserError(f"{name}: IDX files ({', '.join(IDX_FILES.values())}, optionally .gz) not found in "
                    f"{where}; {hint}")


def _idx_path(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _idx_dataset(name: str, directory: Path) -> Dataset:
    arrays = {key: read_idx(_idx_path(directory, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match")
        if len(images) == 0 or images.shape[1] == 0 or images.shape[2] == 0:
            raise UserError(f"{directory}: the {split} split holds no images {images.shape}")
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise UserError(f"{directory}: the {split} images and labels must be unsigned bytes (IDX type 0x08, "
                            f"as the -ubyte names say), found {images.dtype} and {labels.dtype}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise UserError(f"{directory}: train images are {arrays['train_images'].shape[1:]} pixels, test images "
                        f"{arrays['test_images'].shape[1:]}; both splits must have one image size")
    classes = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
    return Dataset(name, arrays["train_images"][:, None].astype(np.int64),
                   arrays["train_labels"].astype(np.int64),
                   arrays["test_images"][:, None].astype(np.int64), arrays["test_labels"].astype(np.int64),
                   levels=255, classes=classes)
