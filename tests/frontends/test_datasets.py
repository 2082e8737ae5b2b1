"""IDX loading on small files the tests write, and the embedded digits set."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from frontends.datasets import IDX_FILES, load_dataset, read_idx
from toolchain.errors import UserError


def write_idx(path, array, compress):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_style_directory(tmp_path, compress):
    rng = np.random.default_rng(1)
    arrays = {"train_images": rng.integers(0, 256, (12, 28, 28)), "train_labels": rng.integers(0, 10, 12),
              "test_images": rng.integers(0, 256, (5, 28, 28)), "test_labels": np.arange(5)}
    for key, stem in IDX_FILES.items():
        write_idx(tmp_path / (stem + (".gz" if compress else "")), arrays[key], compress)
    ds = load_dataset("mnist", tmp_path)
    assert ds.input_shape == (1, 28, 28) and ds.levels == 255
    assert np.array_equal(ds.x_test[:, 0], arrays["test_images"])
    assert np.array_equal(ds.y_test, np.arange(5))


def test_truncated_idx_is_rejected(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 10, 28, 28) + b"\0" * 100)
    with pytest.raises(UserError, match="not a valid IDX file"):
        read_idx(path)


def test_digits_is_embedded():
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and ds.levels == 16 and len(ds.x_train) + len(ds.x_test) == 1797


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("cifar100")
