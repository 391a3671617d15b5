"""CSV-labelled sources (RSNA, ChestX-ray14, CheXpert, MIMIC-CXR style): one row per image, paths beside the CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from app.run_config import DataSource
from worker.engine.data.dataset import DataError, Dataset, LoadReport, Roots, guarded, resize, stack
from worker.engine.data.decode import IMAGE_SUFFIXES, decode_file

MAX_ROWS = 1_000_000


def _label(source: DataSource, value: str, where: str) -> int:
    if value in source.positive:
        return 1
    if value in source.negative:
        return 0
    raise DataError(
        f"{where}: label {value!r} is neither positive {source.positive} nor negative {source.negative}; "
        "add it to one of them or remove the row"
    )


def _image_path(folder: Path, value: str, where: str, roots: Roots) -> Path:
    relative = Path(value.strip())
    if not value.strip() or relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"{where}: image path {value!r} must be relative to the CSV's folder, without '..'")
    if relative.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{where}: {value!r} is not a PNG, JPEG or DICOM file")
    path = guarded(folder / relative, roots, f"image file {value!r}")  # before is_file: a link out is not followed
    if not path.is_file():
        raise DataError(f"{where}: no such image file {value!r} next to the CSV")
    return path


def load_csv(
    table: Path, source: DataSource, split: str, size: int, report: LoadReport, roots: Roots = None
) -> Dataset:
    """Read the rows of ``split`` (all rows when there is no split column) from ``table``, the source's checked
    path. Errors name the row and the column."""
    if not table.is_file():
        raise DataError(f"{table}: no such CSV file")
    images: list[np.ndarray] = []
    labels: list[int] = []
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        needed = [source.image_column, source.label_column] + ([source.split_column] if source.split_column else [])
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(f"{table}: missing column(s) {missing}; the header has {header}")
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            if number > MAX_ROWS:
                raise DataError(f"{table}: more than {MAX_ROWS:,} rows")
            if source.split_column and (row[source.split_column] or "").strip() != split:
                continue
            label = _label(
                source,
                (row[source.label_column] or "").strip(),
                f"{table} row {number}, column '{source.label_column}'",
            )
            where = f"{table} row {number}, column '{source.image_column}'"
            try:
                decoded = decode_file(_image_path(table.parent, row[source.image_column] or "", where, roots))
            except DataError as error:
                raise DataError(f"{where}: {error}" if not str(error).startswith(where) else str(error)) from error
            height, width = decoded.pixels.shape
            report.saw(label, width, height, decoded.bits)
            images.append(resize(decoded.pixels, size))
            labels.append(label)
    if not images:
        which = f"with {source.split_column} = {split!r}" if source.split_column else "at all"
        raise DataError(f"{table}: no rows {which}")
    return stack(images, labels)
