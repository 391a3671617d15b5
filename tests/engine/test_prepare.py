"""Turning a config into client data: the test split default, the train/test overlap refusal, partition errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.run_config import RunConfig
from worker.engine.data import DataError
from worker.engine.experiment import prepare


def npz(path: Path, **splits: tuple[np.ndarray, np.ndarray]) -> str:
    arrays = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(path, **arrays)
    return str(path)


def distinct_images(n: int, offset: int) -> np.ndarray:
    return np.stack([np.full((8, 8), offset + i, np.uint8) for i in range(n)])


def config(train: dict[str, object], test: dict[str, object] | None = None, **federation: object) -> RunConfig:
    data: dict[str, object] = {"train": train, "image_size": 16}
    if test is not None:
        data["test"] = test
    return RunConfig.model_validate(
        {"data": data, "federation": {"clients": 2, **federation}, "model": {"calibration_samples": 32}}
    )


def test_a_test_source_without_split_reads_the_test_split(tmp_path: Path) -> None:
    labels = np.array([0, 1] * 10)
    path = npz(tmp_path / "d.npz", train=(distinct_images(20, 0), labels), test=(distinct_images(6, 100), labels[:6]))
    federation = prepare(config({"format": "npz", "path": path}, {"format": "npz", "path": path}))
    assert len(federation.test) == 6
    assert federation.test.images[:, 0, 0, 0].tolist() == pytest.approx([(100 + i) / 255 for i in range(6)])


def test_a_test_set_sharing_images_with_training_is_refused_naming_data_test(tmp_path: Path) -> None:
    labels = np.array([0, 1] * 10)
    train = distinct_images(20, 0)
    path = npz(tmp_path / "d.npz", train=(train, labels), test=(train[3:9], labels[3:9]))
    with pytest.raises(DataError) as caught:
        prepare(config({"format": "npz", "path": path}, {"format": "npz", "path": path}))
    assert caught.value.field == "data.test"
    assert str(caught.value).startswith("the common test set shares 6 image(s) with the training data")


def synthetic(samples: int, clients: int, partition: dict[str, object]) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"train": {"format": "synthetic", "samples": samples}, "image_size": 16},
            "federation": {"clients": clients, "partition": partition},
        }
    )


def test_a_client_left_without_images_is_named() -> None:
    with pytest.raises(DataError) as caught:
        prepare(synthetic(20, 3, {"kind": "sizes", "fractions": [0.49, 0.49, 0.02]}))
    assert caught.value.field == "federation.partition"
    assert str(caught.value) == (
        "client 3 gets 0 of the 16 training images with partition sizes; "
        "give it a larger share, use fewer clients or more data"
    )


def test_a_dirichlet_partition_that_starves_a_client_is_a_data_error() -> None:
    with pytest.raises(DataError) as caught:
        prepare(synthetic(20, 10, {"kind": "dirichlet", "alpha": 0.01}))
    assert caught.value.field == "federation.partition"
    assert "left a client with fewer than 2 samples" in str(caught.value)
