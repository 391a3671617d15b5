"""CSV label tables: rows of a split, labels mapped to the two classes, and errors that name the row and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.run_config import DataSource
from worker.engine.data import DataError, LoadReport, load_source


def table(folder: Path, text: str, images: dict[str, int]) -> Path:
    for name, value in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), value, np.uint8)).save(folder / name)
    path = folder / "labels.csv"
    path.write_text(text)
    return path


def csv_source(path: Path, **fields: object) -> DataSource:
    return DataSource.model_validate({"format": "csv", "path": str(path), **fields})


def test_rows_of_the_split_load_with_their_labels_and_images(tmp_path: Path) -> None:
    path = table(
        tmp_path,
        "file,finding,fold\nimg/a.png,PNEUMONIA,train\nimg/b.png,1,test\nimg/c.png,NORMAL,train\nimg/d.png,0,train\n",
        {"img/a.png": 10, "img/b.png": 20, "img/c.png": 30, "img/d.png": 40},
    )
    source = csv_source(path, image_column="file", label_column="finding", split_column="fold")
    report = LoadReport()
    train = load_source(source, 4, seed=0, report=report)
    assert train.labels.tolist() == [1, 0, 0]
    np.testing.assert_allclose(train.images[:, 0, 0, 0], [10 / 255, 30 / 255, 40 / 255], atol=1e-6)
    assert dict(report.classes) == {"NORMAL": 2, "PNEUMONIA": 1}
    test = load_source(source, 4, seed=0, default_split="test")
    assert test.labels.tolist() == [1]


def test_without_a_split_column_every_row_is_read(tmp_path: Path) -> None:
    path = table(tmp_path, "path,label\na.png,1\nb.png,0\n", {"a.png": 1, "b.png": 2})
    assert load_source(csv_source(path), 4, seed=0).labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\na.png,1\nmissing.png,0\n", "labels.csv row 3, column 'path': no such image file 'missing.png'"),
        ("path,label\na.png,1\nb.png,maybe\n", "labels.csv row 3, column 'label': label 'maybe' is neither positive"),
        ("image,label\na.png,1\n", "labels.csv: missing column(s) ['path']; the header has ['image', 'label']"),
        ("path,label\n../a.png,1\n", "labels.csv row 2, column 'path': image path '../a.png' must be relative"),
        ("path,label\nnotes.txt,1\n", "labels.csv row 2, column 'path': 'notes.txt' is not a PNG, JPEG or DICOM"),
    ],
)
def test_each_kind_of_bad_row_names_its_row_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = table(tmp_path, text, {"a.png": 1, "b.png": 2})
    with pytest.raises(DataError) as caught:
        load_source(csv_source(path), 4, seed=0)
    assert str(caught.value).startswith(f"{tmp_path}/{message}")


def test_a_split_with_no_rows_says_so(tmp_path: Path) -> None:
    path = table(tmp_path, "path,label,split\na.png,1,train\n", {"a.png": 1})
    with pytest.raises(DataError, match="no rows with split = 'test'"):
        load_source(csv_source(path, split_column="split"), 4, seed=0, default_split="test")


def test_csv_only_fields_on_another_format_are_a_config_error() -> None:
    with pytest.raises(ValueError, match="image_column applies to format 'csv' only"):
        DataSource.model_validate({"format": "npz", "path": "x.npz", "image_column": "file"})
