"""``.npz`` sources: MedMNIST (``<split>_images``/``<split>_labels``) or plain ``images``/``labels`` arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worker.engine.data.dataset import DataError, Dataset, LoadReport, resize
from worker.engine.data.decode import integer_to_unit, require_finite


def _arrays(path: Path, split: str) -> tuple[str, np.ndarray, np.ndarray]:
    """The images and labels of ``split``; errors never name what else the archive holds."""
    if not path.is_file():
        raise DataError(f"{path}: no such .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz file") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz archive of images and labels")
    with archive:
        if archive.zip is None or not all(name.endswith(".npy") for name in archive.zip.namelist()):
            raise DataError(f"{path}: a zip archive holding other files than .npy arrays, not an .npz file")
        for image_key, label_key in ((f"{split}_images", f"{split}_labels"), ("images", "labels")):
            if image_key in archive.files and label_key in archive.files:
                try:
                    return image_key, archive[image_key], archive[label_key]
                except ValueError as error:  # object arrays need pickle, which is never allowed
                    raise DataError(f"{path}: arrays must be numeric, not Python objects") from error
    raise DataError(f"{path}: needs arrays '{split}_images'/'{split}_labels' (MedMNIST) or 'images'/'labels'")


def _binary_labels(name: str, labels: np.ndarray, n: int) -> np.ndarray:
    if (labels.ndim == 2 and labels.shape[1] != 1) or labels.ndim > 2:
        raise DataError(
            f"{name}: labels have shape {labels.shape}, one column per finding (multi-label, as in ChestMNIST); "
            "fedlens classifies NORMAL vs PNEUMONIA and needs one 0/1 label per image, shape (N,) or (N, 1)"
        )
    flat = labels.reshape(-1)
    if len(flat) != n:
        raise DataError(f"{name}: {n} images but {len(flat)} labels")
    bad = sorted(set(np.unique(flat).tolist()) - {0, 1})
    if bad:
        raise DataError(f"{name}: labels must be 0 (NORMAL) or 1 (PNEUMONIA), found {bad[:5]}")
    return flat.astype(np.uint8)


def _unit_pixels(name: str, key: str, images: np.ndarray) -> tuple[np.ndarray, int]:
    """Pixels in [0, 1] and the stored bit depth; integers scale by their dtype's range."""
    if np.issubdtype(images.dtype, np.floating):
        require_finite(images, f"{name} array '{key}'")
        low, high = float(images.min(initial=0)), float(images.max(initial=0))
        if low < 0 or high > 1:
            raise DataError(f"{name} array '{key}': float images must lie in [0, 1], found [{low:g}, {high:g}]")
        return images.astype(np.float32), 8 * images.dtype.itemsize
    if images.dtype == np.bool_ or np.issubdtype(images.dtype, np.integer):
        return integer_to_unit(images), 1 if images.dtype == np.bool_ else 8 * images.dtype.itemsize
    raise DataError(f"{name} array '{key}': unsupported pixel type {images.dtype}")


def load_npz(path: Path, split: str, size: int, report: LoadReport) -> Dataset:
    """Read one split of an .npz file. Raises DataError naming the file and array."""
    key, images, labels = _arrays(path, split)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise DataError(f"{path} array '{key}': images must be (N, H, W) grayscale, got shape {images.shape}")
    binary = _binary_labels(str(path), labels, len(images))
    pixels, bits = _unit_pixels(str(path), key, images)
    height, width = pixels.shape[1:]
    for label in binary:
        report.saw(int(label), width, height, bits)
    scaled = pixels if (height, width) == (size, size) else np.stack([resize(p, size) for p in pixels])
    return Dataset(scaled[..., None], binary)
