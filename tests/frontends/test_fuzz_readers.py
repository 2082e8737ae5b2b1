"""Damaged input files end in a result or one clear error line, never another exception or a crash.

Small valid files (a NIR graph, a checkpoint, an ANN checkpoint, IDX files raw and
gzip-compressed) are mutated by a seeded mutator (byte flips, truncation, splices,
insertions, deletions) and read the way the command line reads them. NIR files are
parsed by libhdf5 in a child process (``toolchain.isolation``), so even a mutant that
crashes it ends in an error line here.
"""

from __future__ import annotations

import gzip
import io
import random
import struct

import nir
import numpy as np
import pytest
import torch

from frontends.ann_training import build_mlp, load_ann, save_ann
from frontends.checkpoint import save_checkpoint
from frontends.datasets import IDX_FILES, load_dataset
from frontends.models import SpikingNetwork, default_config
from frontends.nir_export import to_nir
from snn_compile.compile import check_runnable, load_model
from toolchain.errors import UserError
from toolchain.nir_import import graph_from_nir, read_nir_file

MUTANTS = {"nir": 120, "checkpoint": 200, "ann": 150, "idx": 150, "idx.gz": 150}


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random damage of ``data``."""
    b = bytearray(data)
    kind = rng.choice(["flip", "flip", "truncate", "splice", "insert", "delete"])
    if kind == "flip":
        for _ in range(rng.randint(1, 10)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "truncate":
        del b[rng.randrange(len(b)):]
    elif kind == "splice":  # a piece of the file copied over another place of it
        source, length, target = rng.randrange(len(b)), rng.randint(1, 64), rng.randrange(len(b))
        b[target:target + length] = b[source:source + length]
    elif kind == "insert":
        at = rng.randrange(len(b))
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        at = rng.randrange(len(b))
        del b[at:at + rng.randint(1, 64)]
    return bytes(b)


def outcomes(kind: str, original: bytes, read) -> dict:
    """Read every mutant of ``original``; count results and user errors. Anything else fails."""
    rng = random.Random(f"{kind}-mutants")
    counts = {"result": 0, "user error": 0}
    for index in range(MUTANTS[kind]):
        mutant = mutate(original, rng)
        try:
            read(mutant, index)
        except UserError as exc:
            assert len(str(exc).splitlines()) == 1 and str(exc).strip(), (kind, index, str(exc))
            counts["user error"] += 1
        except Exception as exc:  # noqa: BLE001 - the point: report which mutant escaped, and how
            pytest.fail(f"{kind} mutant {index} raised {type(exc).__name__}: {exc}")
        else:
            counts["result"] += 1
    return counts


def small_model() -> SpikingNetwork:
    torch.manual_seed(0)
    return SpikingNetwork(default_config("mlp", (1, 8, 8), 10, widths=[16]), (1, 8, 8), 10, 4)


def test_damaged_nir_files(tmp_path):
    """Read as ``load_model`` reads a .nir file. Two of these mutants send libhdf5 into an endless
    loop: the reader's time limit ends it (here 5 s, not a minute, to keep the test short)."""
    buffer = io.BytesIO()
    nir.write(buffer, to_nir(small_model(), input_levels=16))

    def read(mutant, index):
        path = tmp_path / f"{index}.nir"
        path.write_bytes(mutant)
        graph = graph_from_nir(read_nir_file(path, timeout=5))
        check_runnable(graph, str(path))
        assert all(np.isfinite(c.weight).all() for c in graph.connections)

    counts = outcomes("nir", buffer.getvalue(), read)
    assert counts["user error"] > 0 and sum(counts.values()) == MUTANTS["nir"]


def test_damaged_checkpoints(tmp_path):
    save_checkpoint(small_model(), tmp_path / "model.pt", dataset="digits", levels=16)

    def read(mutant, index):
        path = tmp_path / f"{index}.pt"
        path.write_bytes(mutant)
        source = load_model(path)
        assert all(np.isfinite(c.weight).all() for c in source.graph.connections)

    counts = outcomes("checkpoint", (tmp_path / "model.pt").read_bytes(), read)
    assert counts["user error"] > 0 and counts["result"] > 0


def test_damaged_ann_checkpoints(tmp_path):
    save_ann(build_mlp((1, 8, 8), 10, [16]), tmp_path / "ann.pt", "digits", (1, 8, 8), 16)

    def read(mutant, index):
        path = tmp_path / f"{index}.pt"
        path.write_bytes(mutant)
        model, _ = load_ann(path)
        assert all(torch.isfinite(p).all() for p in model.parameters())

    counts = outcomes("ann", (tmp_path / "ann.pt").read_bytes(), read)
    assert counts["user error"] > 0 and counts["result"] > 0


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_damaged_idx_files(tmp_path, compressed):
    """The training images are damaged (in their compressed bytes, for .gz); the other files are valid."""
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (6, 8, 8)), "train_labels": rng.integers(0, 10, 6),
              "test_images": rng.integers(0, 256, (3, 8, 8)), "test_labels": np.arange(3)}
    files = {key: gzip.compress(idx_bytes(a), mtime=0) if compressed else idx_bytes(a) for key, a in arrays.items()}
    suffix = ".gz" if compressed else ""

    def read(mutant, index):
        directory = tmp_path / str(index)
        directory.mkdir()
        for key, stem in IDX_FILES.items():
            (directory / (stem + suffix)).write_bytes(mutant if key == "train_images" else files[key])
        dataset = load_dataset("mnist", directory)
        assert dataset.x_train.shape[1:] == dataset.x_test.shape[1:] and len(dataset.x_train) > 0

    kind = "idx.gz" if compressed else "idx"
    counts = outcomes(kind, files["train_images"], read)
    assert counts["user error"] > 0 and sum(counts.values()) == MUTANTS[kind]
