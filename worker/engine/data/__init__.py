"""Labelled grayscale images from an image folder, a CSV label table, an .npz file or the synthetic generator."""

from __future__ import annotations

from pathlib import Path

from app.run_config import DataSource
from worker.engine.data.arrays import load_npz
from worker.engine.data.dataset import CLASSES, DataError, Dataset, LoadReport, Roots, guarded, require_both_classes
from worker.engine.data.folder import load_image_folder
from worker.engine.data.table import load_csv
from worker.engine.synthetic import synthetic_xrays

__all__ = ["CLASSES", "DataError", "Dataset", "LoadReport", "Roots", "load_source", "require_both_classes"]


def load_source(
    source: DataSource,
    image_size: int,
    seed: int,
    *,
    default_split: str = "train",
    report: LoadReport | None = None,
    roots: Roots = None,
) -> Dataset:
    """Images resized to ``image_size`` square, as float32 in [0, 1], with 0/1 labels.

    ``default_split`` applies when the source names none: ``train`` for training data, ``test`` for a test set.
    ``report``, when given, collects the counts, sizes, bit depths and skipped files. With ``roots``, every path
    is checked against them before it is opened or listed (the service); None reads anything (the local CLI).
    Raises DataError.
    """
    report = report if report is not None else LoadReport()
    split = source.split or default_split
    if source.format == "synthetic":
        images, labels = synthetic_xrays(source.samples, image_size, source.positive_fraction, seed)
        for label in labels:
            report.saw(int(label), image_size, image_size, 8)
        return Dataset(images[..., None], labels)
    path = guarded(Path(source.path or ""), roots)
    if source.format == "image-folder":
        return load_image_folder(path, split, image_size, report, roots)
    if source.format == "csv":
        return load_csv(path, source, split, image_size, report, roots)
    return load_npz(path, split, image_size, report)
