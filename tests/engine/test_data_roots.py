"""Data roots: the pure path check, the config check the API uses, and the loaders' own check before they open."""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.run_config import DataSource, OutsideDataRoots, RunConfig, paths_outside_roots, within_roots
from worker.engine.data import DataError, load_source
from worker.engine.experiment import prepare


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the root holding a readable image, as /root or /proc would hold something."""
    folder = tmp_path / "outside"
    folder.mkdir()
    Image.new("L", (8, 8), 255).save(folder / "secret.png")
    return folder


def image_folder(root: Path) -> Path:
    for cls, value in (("NORMAL", 0), ("PNEUMONIA", 255)):
        (root / "xray" / "train" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (8, 8), value).save(root / "xray" / "train" / cls / f"{i}.png")
    return root / "xray"


def refusal(path: str | Path, roots: tuple[Path, ...]) -> str:
    with pytest.raises(OutsideDataRoots) as caught:
        within_roots(path, roots)
    return str(caught.value)


def test_a_path_inside_a_root_is_resolved_and_accepted(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "a").mkdir()
    monkeypatch.chdir(root)
    assert within_roots(root / "a" / "b.npz", (root,)) == root / "a" / "b.npz"
    assert within_roots("a/../a/b.npz", (root,)) == root / "a" / "b.npz"  # relative: from the working directory
    assert within_roots(root, (root,)) == root


@pytest.mark.parametrize("escape", ["/", "/proc/self", "{root}/..", "{root}/../outside/secret.png", "{root}x"])
def test_the_filesystem_root_dot_dot_and_a_sibling_with_the_roots_name_are_outside(
    root: Path, outside: Path, escape: str
) -> None:
    message = refusal(escape.format(root=root), (root,))
    assert message.startswith(f"outside the data roots ({root}); ")


def test_a_link_inside_the_root_that_leads_out_is_outside(root: Path, outside: Path) -> None:
    (root / "link").symlink_to(outside)
    (root / "file.png").symlink_to(outside / "secret.png")
    (root / "inner").mkdir()
    (root / "to-inner").symlink_to(root / "inner")

    refusal(root / "link", (root,))
    refusal(root / "link" / "secret.png", (root,))
    refusal(root / "file.png", (root,))
    assert within_roots(root / "to-inner" / "x.png", (root,)) == root / "inner" / "x.png"  # a link inside is fine


def test_dot_dot_is_removed_as_written_so_nothing_outside_decides(root: Path, outside: Path, tmp_path: Path) -> None:
    """``outside/link/../../root/x`` means root/x, whatever ``link`` is: no link outside the roots is followed."""
    (outside / "link").symlink_to("/")
    assert within_roots(outside / "link" / ".." / ".." / "root" / "x", (root,)) == root / "x"


def test_refusals_of_a_path_that_exists_and_one_that_does_not_read_the_same(root: Path, outside: Path) -> None:
    roots = (root, root.parent / "other-root")
    messages = {refusal(p, roots) for p in (outside / "secret.png", outside / "missing.png", "/etc", "/nowhere")}
    assert len(messages) == 1
    assert "secret" not in messages.pop()


def test_a_nul_byte_is_refused_like_any_path_outside(root: Path) -> None:
    assert refusal(f"{root}/a\x00b", (root,)) == refusal("/nowhere", (root,))


def config(train: dict[str, object], test: dict[str, object] | None = None) -> RunConfig:
    return RunConfig.model_validate({"data": {"train": train, "test": test}})


def test_the_config_check_names_each_field_that_leads_out_and_an_image_folders_split(root: Path) -> None:
    cfg = config(
        {"format": "image-folder", "path": str(root), "split": "../../etc"},
        {"format": "npz", "path": "/etc/passwd"},
    )
    problems = paths_outside_roots(cfg, (root,))

    assert set(problems) == {("data", "train", "split"), ("data", "test", "path")}
    assert problems[("data", "test", "path")] == f"this path is {OutsideDataRoots((root,))}"
    assert problems[("data", "train", "split")].startswith("the folder of this split is outside the data roots")
    assert paths_outside_roots(config({"format": "synthetic"}), ()) == {}
    assert paths_outside_roots(config({"format": "csv", "path": str(root / "labels.csv")}), (root,)) == {}


def test_the_loader_refuses_a_source_outside_the_roots_before_it_looks(root: Path, outside: Path) -> None:
    messages = set()
    for path in (outside, outside / "missing"):
        with pytest.raises(DataError) as caught:
            load_source(DataSource(format="image-folder", path=str(path)), 8, 0, roots=(root,))
        messages.add(str(caught.value))
    assert messages == {f"this path is {OutsideDataRoots((root,))}"}


@pytest.mark.parametrize("split", ["/", "../..", "../../outside"])
def test_the_loader_refuses_a_split_that_climbs_out(root: Path, outside: Path, split: str) -> None:
    folder = image_folder(root)
    with pytest.raises(DataError, match=r"^this path is outside the data roots"):
        load_source(DataSource(format="image-folder", path=str(folder), split=split), 8, 0, roots=(root,))


def test_an_image_folder_reads_within_the_roots(root: Path) -> None:
    data = load_source(DataSource(format="image-folder", path=str(image_folder(root))), 8, 0, roots=(root,))
    assert data.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("target", ["secret.png", "missing.png"])
def test_an_image_linked_from_outside_is_refused_by_name_not_read(root: Path, outside: Path, target: str) -> None:
    folder = image_folder(root)
    link = folder / "train" / "PNEUMONIA" / "2.png"
    link.symlink_to(outside / target)

    with pytest.raises(DataError) as caught:
        load_source(DataSource(format="image-folder", path=str(folder)), 8, 0, roots=(root,))
    assert str(caught.value) == f"{link}: leads {OutsideDataRoots((root,))}"  # the same for either target


def test_a_class_folder_linked_from_outside_is_refused(root: Path, outside: Path) -> None:
    folder = image_folder(root)
    os.rename(folder / "train" / "NORMAL", root / "moved")
    (folder / "train" / "NORMAL").symlink_to(outside)
    with pytest.raises(DataError, match="NORMAL: leads outside the data roots"):
        load_source(DataSource(format="image-folder", path=str(folder)), 8, 0, roots=(root,))


def test_a_csv_row_whose_image_links_out_is_refused_at_its_row(root: Path, outside: Path) -> None:
    folder = image_folder(root) / "train"
    (folder / "NORMAL" / "out.png").symlink_to(outside / "secret.png")
    table = folder / "labels.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["path", "label"], ["NORMAL/0.png", "0"], ["NORMAL/out.png", "0"], ["PNEUMONIA/0.png", "1"]])
    source = DataSource(format="csv", path=str(table))

    with pytest.raises(DataError) as caught:
        load_source(source, 8, 0, roots=(root,))
    assert str(caught.value).startswith(f"{table} row 3, column 'path': image file 'NORMAL/out.png': leads outside")
    assert len(load_source(source, 8, 0)) == 3  # without roots (the local CLI) the link is read


def test_an_npz_that_is_a_zip_of_other_files_is_refused_without_naming_them(root: Path) -> None:
    path = root / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", b"")
        archive.writestr("patients/jane-doe.txt", "secret")
    with pytest.raises(DataError) as caught:
        load_source(DataSource(format="npz", path=str(path)), 8, 0, roots=(root,))
    assert str(caught.value) == f"{path}: a zip archive holding other files than .npy arrays, not an .npz file"


def test_prepare_passes_the_roots_to_every_source(root: Path, outside: Path) -> None:
    np.savez(root / "d.npz", images=np.zeros((40, 8, 8), np.uint8), labels=np.repeat([0, 1], 20))
    cfg = config({"format": "npz", "path": str(root / "d.npz")}, {"format": "npz", "path": str(outside / "x.npz")})
    with pytest.raises(DataError) as caught:
        prepare(cfg, (root,))
    assert (caught.value.field, str(caught.value)) == ("data.test", f"this path is {OutsideDataRoots((root,))}")
