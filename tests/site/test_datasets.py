"""A site's datasets from real images: the summary the server sees, the split the site records, its data roots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.site.images import MARKER, write_image_folder
from worker.engine.data import DataError
from worker.site.datasets import SPLITS_FILE, SiteData, site_config
from worker.site.identity import SiteError


def test_the_summary_counts_each_split_and_class_and_names_no_file(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "chest", per_class=30)
    (folder / "NORMAL" / "notes.txt").write_text("not an image")
    config = tmp_path / "site.yaml"
    config.write_text("split: {validation: 0.1, test: 0.2, seed: 7}\n")

    [summary] = SiteData(site_config(config, [f"chest=image-folder:{folder}"]), tmp_path).prepare()

    # 30 per class: 6 (20%) to test, then 3 (10% of all) to validation, 21 to train
    assert summary.counts == {
        "train": {"negative": 21, "positive": 21},
        "validation": {"negative": 3, "positive": 3},
        "test": {"negative": 6, "positive": 6},
    }
    assert (summary.image_sizes, summary.skipped, summary.split_seed) == (["28x28"], 1, 7)
    recorded = json.loads((tmp_path / SPLITS_FILE).read_text())
    assert recorded["seed"] == 7 and recorded["fractions"] == {"validation": 0.1, "test": 0.2}
    assert recorded["datasets"]["chest"]["counts"] == summary.counts
    for text in (summary.model_dump_json(), (tmp_path / SPLITS_FILE).read_text()):
        assert MARKER not in text and ".png" not in text and str(tmp_path) not in text


def test_the_fingerprint_follows_the_images_not_their_names_or_order(tmp_path: Path) -> None:
    first = write_image_folder(tmp_path / "a", per_class=10)
    renamed = tmp_path / "b"
    for file in sorted(first.rglob("*.png")):
        target = renamed / file.parent.name / f"{file.stem[::-1]}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, target)
    other = write_image_folder(tmp_path / "c", per_class=10, offset=10)

    summaries = SiteData(
        site_config(None, [f"a=image-folder:{first}", f"b=image-folder:{renamed}", f"c=image-folder:{other}"]), tmp_path
    ).prepare()

    assert summaries[0].fingerprint == summaries[1].fingerprint != summaries[2].fingerprint


def test_without_a_seed_the_first_split_is_kept_across_restarts(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "chest", per_class=10)
    declared = [f"chest=image-folder:{folder}"]

    first = SiteData(site_config(None, declared), tmp_path)
    first.prepare()
    again = SiteData(site_config(None, declared), tmp_path)
    again.prepare()

    assert first.summaries()[0].split_seed == again.summaries()[0].split_seed
    for part in ("train", "validation", "test"):
        assert (first.prepared["chest"].parts[part] == again.prepared["chest"].parts[part]).all()


def test_a_dataset_outside_the_data_roots_is_refused(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "elsewhere", per_class=2)
    (tmp_path / "roots").mkdir()
    config = tmp_path / "site.yaml"
    config.write_text(f"data_roots: [{tmp_path / 'roots'}]\n")
    (tmp_path / "roots" / "link").symlink_to(folder)  # a link inside the roots does not make its target inside

    with pytest.raises(SiteError, match="outside this site's data roots"):
        site_config(config, [f"chest=image-folder:{tmp_path / 'roots' / 'link'}"])


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ("chest:/data", "expected NAME=FORMAT:PATH"),
        ("chest=synthetic:x", "a site declares its own files"),
        ("../up=npz:/data/x.npz", "name"),
    ],
)
def test_bad_declarations_say_what_is_wrong(declaration: str, message: str) -> None:
    with pytest.raises(SiteError, match=message):
        site_config(None, [declaration])


def test_a_link_inside_a_dataset_that_leads_out_is_refused(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "chest", per_class=3)
    outside = write_image_folder(tmp_path / "outside", per_class=1)
    (folder / "PNEUMONIA" / "extra.png").symlink_to(next((outside / "PNEUMONIA").iterdir()))

    with pytest.raises(DataError, match="outside the data roots"):
        SiteData(site_config(None, [f"chest=image-folder:{folder}"]), tmp_path).prepare()
