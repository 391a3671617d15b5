"""Loading image folders, .npz files and synthetic images, and the DataError messages for bad data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.run_config import DataSource
from tests.realdata import KERMANY, PNEUMONIAMNIST
from worker.engine.data import DataError, Dataset, load_source


def npz_source(path: Path, split: str | None = None) -> DataSource:
    return DataSource(format="npz", path=str(path), split=split)


def folder_source(root: Path, split: str = "train") -> DataSource:
    return DataSource(format="image-folder", path=str(root), split=split)


def assert_images(data: Dataset, n: int, size: int) -> None:
    assert data.images.shape == (n, size, size, 1)
    assert data.images.dtype == np.float32
    assert data.labels.shape == (n,)
    assert data.labels.dtype == np.uint8
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0


@pytest.fixture(scope="module")
def kermany(shared_data: None) -> Dataset:
    return load_source(npz_source(KERMANY), 64, seed=0)


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize(("split", "per_class"), [("train", 1214), ("test", 234)])
def test_medmnist_npz_split_loads_with_the_documented_class_counts(split: str, per_class: int) -> None:
    data = load_source(npz_source(PNEUMONIAMNIST, split), 28, seed=0)
    assert_images(data, 2 * per_class, 28)
    assert np.bincount(data.labels).tolist() == [per_class, per_class]


@pytest.mark.usefixtures("shared_data")
def test_npz_at_its_own_size_is_the_raw_pixels_over_255() -> None:
    data = load_source(npz_source(PNEUMONIAMNIST, "test"), 28, seed=0)
    with np.load(PNEUMONIAMNIST) as raw:
        np.testing.assert_array_equal(data.images[..., 0], raw["test_images"].astype(np.float32) / 255)
        np.testing.assert_array_equal(data.labels, raw["test_labels"].reshape(-1))


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("size", [16, 64])
def test_npz_images_are_resized_to_the_requested_size(size: int) -> None:
    native = load_source(npz_source(PNEUMONIAMNIST, "test"), 28, seed=0)
    resized = load_source(npz_source(PNEUMONIAMNIST, "test"), size, seed=0)
    assert_images(resized, 468, size)
    np.testing.assert_array_equal(resized.labels, native.labels)
    # bilinear resizing keeps each image's overall brightness
    np.testing.assert_allclose(resized.images.mean(axis=(1, 2, 3)), native.images.mean(axis=(1, 2, 3)), atol=0.02)


def test_plain_npz_loads_images_and_labels_with_the_documented_class_counts(kermany: Dataset) -> None:
    assert_images(kermany, 5190, 64)
    assert np.bincount(kermany.labels).tolist() == [1340, 3850]


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_missing_real_data_fails_under_ci_and_is_skipped_elsewhere(ci: str, outcome: str, tmp_path: Path) -> None:
    env = {**os.environ, "CI": ci, "FEDLENS_TEST_DATA": str(tmp_path / "absent")}
    test = f"{__file__}::test_npz_at_its_own_size_is_the_raw_pixels_over_255"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode != 0) == bool(ci), done.stdout
    assert outcome in done.stdout
    # the summary names the missing file, whether it skips or fails
    assert f"real test data missing: {tmp_path / 'absent' / 'pneumoniamnist_balanced_28.npz'}" in done.stdout


def write_image(path: Path, mode: str, size: tuple[int, int], value: int | tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    train = tmp_path / "train"
    write_image(train / "NORMAL" / "a.png", "L", (40, 30), 0)
    write_image(train / "NORMAL" / "b.jpeg", "RGB", (50, 50), (128, 128, 128))
    write_image(train / "NORMAL" / "c.jpg", "L", (17, 90), 60)
    write_image(train / "PNEUMONIA" / "d.png", "RGB", (20, 20), (255, 255, 255))
    write_image(train / "PNEUMONIA" / "e.JPEG", "L", (64, 80), 200)
    (train / "PNEUMONIA" / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_loads_grayscale_images_with_labels_from_class_folders(image_folder: Path) -> None:
    data = load_source(folder_source(image_folder), 16, seed=0)
    assert_images(data, 5, 16)
    assert data.labels.tolist() == [0, 0, 0, 1, 1]
    np.testing.assert_array_equal(data.images[0], 0.0)  # black PNG
    np.testing.assert_array_equal(data.images[3], 1.0)  # white RGB PNG
    np.testing.assert_allclose(data.images[1].mean(), 128 / 255, atol=2 / 255)  # gray RGB JPEG
    np.testing.assert_allclose(data.images[4].mean(), 200 / 255, atol=2 / 255)


def test_image_folder_reads_the_named_split(image_folder: Path) -> None:
    write_image(image_folder / "test" / "NORMAL" / "x.png", "L", (8, 8), 10)
    write_image(image_folder / "test" / "PNEUMONIA" / "y.png", "L", (8, 8), 20)
    data = load_source(folder_source(image_folder, "test"), 32, seed=0)
    assert_images(data, 2, 32)
    assert data.labels.tolist() == [0, 1]


def assert_data_error(source: DataSource, *parts: str) -> str:
    with pytest.raises(DataError) as caught:
        load_source(source, 16, seed=0)
    message = str(caught.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def test_missing_image_folder_is_named(tmp_path: Path) -> None:
    assert_data_error(folder_source(tmp_path / "nowhere"), str(tmp_path / "nowhere" / "train"), "no such folder")


def test_unknown_class_folders_are_counted_not_listed_with_the_allowed_classes(image_folder: Path) -> None:
    write_image(image_folder / "train" / "COVID" / "z.png", "L", (8, 8), 0)
    write_image(image_folder / "train" / "normal" / "z.png", "L", (8, 8), 0)
    message = assert_data_error(
        folder_source(image_folder),
        str(image_folder / "train"),
        "2 folder(s) other than the class folders",
        "only ['NORMAL', 'PNEUMONIA'] (names are case-sensitive)",
    )
    assert "COVID" not in message and "normal" not in message  # an error never lists a folder


def test_missing_class_folder_is_named(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "NORMAL" / "a.png", "L", (8, 8), 0)
    assert_data_error(folder_source(tmp_path), str(tmp_path / "train" / "PNEUMONIA"), "missing class folder")


def test_class_folder_without_images_is_named(image_folder: Path) -> None:
    for file in (image_folder / "train" / "PNEUMONIA").iterdir():
        if file.suffix != ".txt":
            file.unlink()
    assert_data_error(folder_source(image_folder), str(image_folder / "train" / "PNEUMONIA"), "no .jpeg, .jpg or .png")


def test_unreadable_image_is_named(image_folder: Path) -> None:
    broken = image_folder / "train" / "PNEUMONIA" / "broken.jpeg"
    broken.write_bytes(b"\x00garbage, not a JPEG\xff" * 10)
    assert_data_error(folder_source(image_folder), str(broken), "unreadable image")


def test_truncated_image_is_named(image_folder: Path) -> None:
    whole = image_folder / "train" / "NORMAL" / "b.jpeg"
    cut = image_folder / "train" / "NORMAL" / "cut.jpeg"
    cut.write_bytes(whole.read_bytes()[:200])
    assert_data_error(folder_source(image_folder), str(cut), "unreadable image")


def save_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_with_more_images_than_labels_is_named(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", images=np.zeros((5, 8, 8), np.uint8), labels=np.array([0, 1, 0, 1], np.uint8))
    assert_data_error(npz_source(path), str(path), "5 images but 4 labels")


def test_npz_with_labels_other_than_0_and_1_is_named(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 2, 7]))
    assert_data_error(npz_source(path), str(path), "labels must be 0 (NORMAL) or 1 (PNEUMONIA), found [2, 7]")


def test_npz_without_image_and_label_arrays_names_the_arrays_it_needs_not_those_it_has(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", secret_x=np.zeros((4, 8, 8)), secret_y=np.zeros(4))
    message = assert_data_error(npz_source(path, "val"), str(path), "'val_images'/'val_labels'", "'images'/'labels'")
    assert "secret" not in message


def test_npz_with_colour_images_asks_for_grayscale(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.array([0, 1]))
    assert_data_error(npz_source(path), str(path), "(N, H, W) grayscale", "(2, 8, 8, 3)")


def test_npz_with_float_images_outside_0_1_is_named(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", images=np.full((2, 8, 8), 255.0), labels=np.array([0, 1]))
    assert_data_error(npz_source(path), str(path), "float images must lie in [0, 1]")


def test_npz_with_float_images_in_0_1_loads_them(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "d.npz", images=np.full((2, 8, 8), 0.5, np.float32), labels=np.array([[0], [1]]))
    data = load_source(npz_source(path), 8, seed=0)
    assert_images(data, 2, 8)
    np.testing.assert_allclose(data.images, 0.5)  # float pixels keep their precision


def test_missing_npz_file_is_named(tmp_path: Path) -> None:
    assert_data_error(npz_source(tmp_path / "none.npz"), str(tmp_path / "none.npz"), "no such .npz file")


def test_text_file_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_text("images,labels\n1,0\n")
    assert_data_error(npz_source(path), str(path), "not a readable .npz file")


def test_single_npy_array_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.zeros((4, 8, 8), np.uint8))
    assert_data_error(npz_source(path), str(path), "not an .npz archive")


def synthetic(samples: int = 40) -> DataSource:
    return DataSource(format="synthetic", samples=samples)


@pytest.mark.parametrize("size", [16, 32, 150])
def test_synthetic_images_come_in_any_size_with_both_classes(size: int) -> None:
    data = load_source(synthetic(), size, seed=3)
    assert_images(data, 40, size)
    assert set(data.labels.tolist()) == {0, 1}
    assert data.images.std() > 0.05  # not a blank image set


def test_synthetic_images_are_deterministic_for_a_seed() -> None:
    a, b = load_source(synthetic(), 32, seed=3), load_source(synthetic(), 32, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    other = load_source(synthetic(), 32, seed=4)
    assert not np.array_equal(a.images, other.images)


def test_synthetic_positive_fraction_sets_the_share_of_pneumonia() -> None:
    data = load_source(DataSource(format="synthetic", samples=2000, positive_fraction=0.25), 16, seed=1)
    assert abs(data.labels.mean() - 0.25) < 0.03
