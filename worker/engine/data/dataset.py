"""The in-memory data set, its load report and the errors that bad input data raises."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from app.run_config import OutsideDataRoots, within_roots

CLASSES = ("NORMAL", "PNEUMONIA")  # label 0, label 1


class DataError(ValueError):
    """Bad input data; the message names the file (or row, or array) and says what to change.

    ``field`` is the config field the problem belongs to (``data.train``, ``data.test``), so the form can show the
    message next to it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


Roots = tuple[Path, ...] | None  # None: no data roots, as for the local CLI, which reads what its user can


def guarded(path: Path, roots: Roots, name: str | None = None) -> Path:
    """The path to open: ``path`` itself without roots, else its resolution checked against them.

    ``name`` names a file or folder found inside a source (a link inside the roots that leads out); a source's own
    path is never named, so that two refused paths give the same message whether or not they exist.
    """
    if roots is None:
        return path
    try:
        return within_roots(path, roots)
    except OutsideDataRoots as error:
        raise DataError(f"{name}: leads {error}" if name else f"this path is {error}") from error


@dataclass(frozen=True)
class Dataset:
    images: np.ndarray  # (N, size, size, 1) float32 in [0, 1]
    labels: np.ndarray  # (N,) uint8, 0 NORMAL, 1 PNEUMONIA

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset(self.images[indices], self.labels[indices])


@dataclass
class LoadReport:
    """What a loader saw: the per-class counts, the native sizes and bit depths, and every file it skipped and why.

    Nothing is dropped silently: a skipped file is counted under its reason (hidden files and OS metadata are the
    only files ignored without a count, as a file manager hides them).
    """

    classes: Counter[str] = field(default_factory=Counter)
    sizes: Counter[str] = field(default_factory=Counter)  # "WxH" of the stored images
    bit_depths: Counter[int] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> number of files

    def saw(self, label: int, width: int, height: int, bits: int) -> None:
        self.classes[CLASSES[label]] += 1
        self.sizes[f"{width}x{height}"] += 1
        self.bit_depths[bits] += 1

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "classes": {cls: self.classes[cls] for cls in CLASSES},
            "sizes": dict(self.sizes.most_common()),
            "bit_depths": {str(bits): n for bits, n in sorted(self.bit_depths.items())},
            "skipped": dict(sorted(self.skipped.items())),
        }

    def summary(self) -> list[str]:
        return summarize(self.as_dict())


def summarize(report: dict[str, dict[str, int]]) -> list[str]:
    """A load report (``LoadReport.as_dict``) as one line of counts, then one line per reason files were skipped."""
    counts = ", ".join(f"{report['classes'][cls]:,} {cls}" for cls in CLASSES)
    sizes = ", ".join(f"{size} ({n:,})" for size, n in list(report["sizes"].items())[:3])
    more = f" and {len(report['sizes']) - 3} more" if len(report["sizes"]) > 3 else ""
    bits = "/".join(report["bit_depths"])
    head = f"{counts}; sizes {sizes}{more}; {bits}-bit"
    return [head] + [f"{count:,} file(s) skipped: {reason}" for reason, count in report["skipped"].items()]


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of one (H, W) float image in [0, 1], kept in float so 12- and 16-bit detail survives."""
    if pixels.shape == (size, size):
        return pixels.astype(np.float32, copy=False)
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32))  # mode "F"
    resized = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(resized, 0.0, 1.0)


def stack(images: list[np.ndarray], labels: list[int]) -> Dataset:
    return Dataset(np.stack(images)[..., None].astype(np.float32, copy=False), np.asarray(labels, dtype=np.uint8))


def require_both_classes(data: Dataset, what: str, field: str | None = None) -> None:
    counts = np.bincount(data.labels, minlength=2)
    if counts.min() == 0:
        missing = CLASSES[int(np.argmin(counts))]
        raise DataError(f"{what} has no {missing} images; AUC and the client splits need both classes", field)
