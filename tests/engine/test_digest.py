"""The weights digest: stable across files and versions, and different for any change a model would notice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from worker.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from worker.engine.digest import weights_sha256


def test_digest_is_sha256_of_the_documented_layout() -> None:
    """Pinned, so that digests stored in the database stay comparable after an upgrade."""
    expected = hashlib.sha256(b"1 layers" + b"|<f4(2,)|" + bytes(8)).hexdigest()

    assert weights_sha256([np.zeros(2, np.float32)]) == expected


def test_the_same_weights_in_any_file_have_the_same_digest(tmp_path: Path) -> None:
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    save_checkpoint(Checkpoint(1, weights), tmp_path / "a.npz")
    save_checkpoint(Checkpoint(7, weights, optimizer_state=[np.zeros(1)]), tmp_path / "b.npz", durable=False)

    digests = {weights_sha256(load_checkpoint(tmp_path / name).weights) for name in ("a.npz", "b.npz")}

    assert digests == {weights_sha256(weights)}


def test_a_changed_value_dtype_shape_or_layer_split_changes_the_digest() -> None:
    base = [np.arange(6, dtype=np.float32).reshape(2, 3)]
    nudged = [base[0].copy()]
    nudged[0][1, 2] = np.nextafter(nudged[0][1, 2], np.float32(10))
    variants = [
        nudged,
        [base[0].astype(np.float64)],
        [base[0].reshape(3, 2)],
        [base[0].reshape(-1)[:3], base[0].reshape(-1)[3:]],
        [base[0], np.zeros(0, np.float32)],
    ]

    digests = {weights_sha256(w) for w in [base, *variants]}

    assert len(digests) == 1 + len(variants)


def test_a_non_contiguous_view_hashes_as_its_values() -> None:
    matrix = np.arange(6, dtype=np.float32).reshape(2, 3)

    assert weights_sha256([matrix.T]) == weights_sha256([np.ascontiguousarray(matrix.T)])
