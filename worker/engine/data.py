"""Load labelled grayscale images from an image folder, an .npz file or the synthetic generator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.run_config import DataSource
from worker.engine.synthetic import synthetic_xrays

CLASSES = ("NORMAL", "PNEUMONIA")  # label 0, label 1
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


class DataError(ValueError):
    """Bad input data; the message names the file and the problem."""


@dataclass(frozen=True)
class Dataset:
    images: np.ndarray  # (N, size, size, 1) float32 in [0, 1]
    labels: np.ndarray  # (N,) uint8, 0 NORMAL, 1 PNEUMONIA

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset(self.images[indices], self.labels[indices])


def load_source(source: DataSource, image_size: int, seed: int) -> Dataset:
    if source.format == "synthetic":
        images, labels = synthetic_xrays(source.samples, image_size, source.positive_fraction, seed)
        return Dataset(images[..., None], labels)
    path = Path(source.path or "")
    if source.format == "image-folder":
        return _load_image_folder(path / (source.split or "train"), image_size)
    return _load_npz(path, source.split or "train", image_size)


def _resize(image: Image.Image, size: int) -> np.ndarray:
    gray = image.convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.float32) / 255.0


def _load_image_folder(root: Path, size: int) -> Dataset:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; expected {root}/{{{','.join(CLASSES)}}}/*.jpeg")
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in CLASSES)
    if unknown:
        raise DataError(f"{root}: unknown class folder(s) {unknown}; allowed: {list(CLASSES)}")
    images, labels = [], []
    for label, cls in enumerate(CLASSES):
        folder = root / cls
        if not folder.is_dir():
            raise DataError(f"{folder}: missing class folder; every split needs {list(CLASSES)}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no .jpeg, .jpg or .png images in this class folder")
        for file in files:
            try:
                with Image.open(file) as image:
                    images.append(_resize(image, size))
            except (UnidentifiedImageError, OSError) as error:
                raise DataError(f"{file}: unreadable image ({error})") from error
        labels += [label] * len(files)
    return Dataset(np.stack(images)[..., None], np.asarray(labels, dtype=np.uint8))


def _npz_arrays(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: no such .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz archive of images and labels")
    with archive:
        for image_key, label_key in ((f"{split}_images", f"{split}_labels"), ("images", "labels")):
            if image_key in archive.files and label_key in archive.files:
                return archive[image_key], archive[label_key]
    raise DataError(
        f"{path}: needs arrays '{split}_images'/'{split}_labels' (MedMNIST) or 'images'/'labels'; "
        f"it has {sorted(archive.files)}"
    )


def _load_npz(path: Path, split: str, size: int) -> Dataset:
    images, labels = _npz_arrays(path, split)
    labels = labels.reshape(-1)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise DataError(f"{path}: images must be (N, H, W) grayscale, got shape {images.shape}")
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
    bad = sorted(set(np.unique(labels).tolist()) - {0, 1})
    if bad:
        raise DataError(f"{path}: labels must be 0 (NORMAL) or 1 (PNEUMONIA), found {bad[:5]}")
    if np.issubdtype(images.dtype, np.floating):
        if images.min() < 0 or images.max() > 1:
            raise DataError(f"{path}: float images must lie in [0, 1], found [{images.min():g}, {images.max():g}]")
        images = np.round(images * 255)
    pixels = images.astype(np.uint8)
    if pixels.shape[1:] == (size, size):
        scaled = pixels.astype(np.float32) / 255.0
    else:
        scaled = np.stack([_resize(Image.fromarray(p), size) for p in pixels])
    return Dataset(scaled[..., None], labels.astype(np.uint8))


def require_both_classes(data: Dataset, what: str) -> None:
    counts = np.bincount(data.labels, minlength=2)
    if counts.min() == 0:
        missing = CLASSES[int(np.argmin(counts))]
        raise DataError(f"{what} has no {missing} images; AUC and the client splits need both classes")
