"""Images decoded as a viewer shows them: bit depth, NaN, orientation, colour, alpha, hidden files, DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.run_config import DataSource
from tests.realdata import KERMANY
from worker.engine.data import DataError, LoadReport, load_source
from worker.engine.data.decode import decode_file

ONE_LEVEL = 1 / 255


@pytest.fixture(scope="module")
def xrays(shared_data: None) -> np.ndarray:
    """Six real chest X-rays (64x64 uint8) from the Kermany training split."""
    with np.load(KERMANY) as archive:
        return np.asarray(archive["images"][:6])


def folder(root: Path, normal: list[np.ndarray], pneumonia: list[np.ndarray], save: str = "png") -> Path:
    for cls, images in (("NORMAL", normal), ("PNEUMONIA", pneumonia)):
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / "train" / cls / f"{i}.{save}")
    return root


def load_folder(root: Path, size: int = 64, report: LoadReport | None = None) -> np.ndarray:
    source = DataSource(format="image-folder", path=str(root))
    return load_source(source, size, seed=0, report=report).images[..., 0]


def test_16_bit_png_gives_the_pixels_of_its_8_bit_original(tmp_path: Path, xrays: np.ndarray) -> None:
    eight = load_folder(folder(tmp_path / "8", [xrays[0]], [xrays[1]]))
    wide = [(x.astype(np.uint16) * 257) for x in xrays[:2]]  # 0..255 -> 0..65535, as a 16-bit export does
    sixteen_root = folder(tmp_path / "16", [wide[0]], [wide[1]])
    with Image.open(sixteen_root / "train" / "NORMAL" / "0.png") as saved:
        assert saved.mode in {"I;16", "I"}  # really stored as 16-bit
    sixteen = load_folder(sixteen_root)
    np.testing.assert_allclose(sixteen, eight, atol=ONE_LEVEL)
    assert (sixteen == 1.0).mean() < 0.05  # the old blind cast to uint8 saturated 97% of them


def test_uint16_npz_gives_the_pixels_of_its_uint8_original(tmp_path: Path, xrays: np.ndarray) -> None:
    labels = np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "u8.npz", images=xrays, labels=labels)
    np.savez(tmp_path / "u16.npz", images=xrays.astype(np.uint16) * 257, labels=labels)
    u8, u16 = (
        load_source(DataSource(format="npz", path=str(tmp_path / f"{n}.npz")), 64, seed=0).images for n in ("u8", "u16")
    )
    np.testing.assert_allclose(u16, u8, atol=ONE_LEVEL)
    np.testing.assert_allclose(u8[0, ..., 0], xrays[0] / 255, atol=1e-6)


def test_nan_pixels_in_a_float_npz_are_a_data_error_naming_file_array_and_count(tmp_path: Path) -> None:
    images = np.full((5, 8, 8), 0.5, np.float32)
    images[1] = np.nan  # a blank image after per-image min-max normalisation: 0 / 0
    images[3, 2, 2] = np.inf
    path = tmp_path / "norm.npz"
    np.savez(path, images=images, labels=np.array([0, 1, 0, 1, 0]))
    with pytest.raises(DataError) as caught:
        load_source(DataSource(format="npz", path=str(path)), 8, seed=0)
    assert str(caught.value) == f"{path} array 'images': 2 image(s) hold NaN or infinite pixels; fix or remove them"


def test_multi_label_arrays_get_a_message_about_the_label_shape(tmp_path: Path) -> None:
    path = tmp_path / "chest.npz"
    np.savez(path, images=np.zeros((300, 8, 8), np.uint8), labels=np.zeros((300, 14), np.uint8))
    with pytest.raises(DataError) as caught:
        load_source(DataSource(format="npz", path=str(path)), 8, seed=0)
    assert "labels have shape (300, 14)" in str(caught.value)
    assert "multi-label" in str(caught.value) and "4200" not in str(caught.value)


def test_exif_orientation_is_applied_as_a_viewer_does(tmp_path: Path) -> None:
    upright = np.zeros((6, 10), np.uint8)
    upright[:, :3] = 255  # bright left edge
    stored = Image.fromarray(np.rot90(upright, k=1))  # the camera stored it turned
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    stored.save(tmp_path / "turned.jpg", exif=exif, quality=100)
    shown = decode_file(tmp_path / "turned.jpg").pixels
    assert shown.shape == (6, 10)
    assert shown[:, :3].mean() > 0.9 and shown[:, 4:].mean() < 0.1


def test_palette_colour_and_alpha_images_become_the_gray_a_viewer_shows(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 200, 200, 200] + [0] * 762)
    palette.putdata([0, 1])
    palette.save(tmp_path / "p.png")
    np.testing.assert_allclose(decode_file(tmp_path / "p.png").pixels, [[0, 200 / 255]], atol=1e-6)

    rgb = Image.new("RGB", (1, 1), (255, 0, 0))
    rgb.save(tmp_path / "red.png")
    np.testing.assert_allclose(decode_file(tmp_path / "red.png").pixels, [[0.299]], atol=1e-6)

    gray_alpha = Image.new("LA", (2, 1))
    gray_alpha.putdata([(200, 255), (200, 0)])  # opaque, then fully transparent over the black background
    gray_alpha.save(tmp_path / "la.png")
    np.testing.assert_allclose(decode_file(tmp_path / "la.png").pixels, [[200 / 255, 0]], atol=1e-6)


def test_hidden_files_are_ignored_and_foreign_files_are_counted(tmp_path: Path) -> None:
    gray = np.full((8, 8), 100, np.uint8)
    root = folder(tmp_path, [gray, gray], [gray])
    normal = root / "train" / "NORMAL"
    (normal / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
    (normal / ".DS_Store").write_bytes(b"Bud1")
    (normal / ".ipynb_checkpoints").mkdir()
    (normal / ".ipynb_checkpoints" / "0-checkpoint.png").write_bytes(b"not read")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (normal / "scan.gif").write_bytes(b"GIF89a")
    (normal / "notes.txt").write_text("reader notes")
    (root / "train" / "PNEUMONIA" / "more.gif").write_bytes(b"GIF89a")
    report = LoadReport()
    images = load_folder(root, 8, report)
    assert images.shape == (3, 8, 8)
    assert dict(report.classes) == {"NORMAL": 2, "PNEUMONIA": 1}
    assert dict(report.skipped) == {"unsupported file type '.gif'": 2, "unsupported file type '.txt'": 1}
    assert report.summary() == [
        "2 NORMAL, 1 PNEUMONIA; sizes 8x8 (3); 8-bit",
        "2 file(s) skipped: unsupported file type '.gif'",
        "1 file(s) skipped: unsupported file type '.txt'",
    ]


def test_a_corrupt_image_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(DataError, match=f"^{bad}: unreadable image"):
        decode_file(bad)
