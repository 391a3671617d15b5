"""Shared set-up for the benchmarks: data paths and quiet TensorFlow logs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """A file of ../shared/data by name, or any existing path (a copy carried to a GPU host, say)."""
    given = Path(name)
    if given.is_file():
        return given
    path = SHARED_DATA / name
    if not path.exists():
        raise SystemExit(f"{path} not found: the benchmarks read the chest X-ray files in ../shared/data")
    return path


def kermany_sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of kermany_train_64.npz drawn without replacement, kept in file order, and their labels."""
    with np.load(shared_file("kermany_train_64.npz")) as archive:
        pick = np.sort(np.random.default_rng(seed).choice(len(archive["labels"]), n, replace=False))
        return archive["images"][pick], archive["labels"][pick]
