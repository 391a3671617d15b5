"""DICOM radiographs written with pydicom decode to the pixels a viewer shows (rescale, window, MONOCHROME1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from app.run_config import DataSource
from worker.engine.data import DataError, load_source
from worker.engine.data.decode import decode_file

STORED = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)  # 12 bits stored in 16


def write_dicom(path: Path, photometric: str = "MONOCHROME2", pixels: np.ndarray = STORED, **tags: object) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=12)
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_stored_values_scale_by_their_12_bit_range(tmp_path: Path) -> None:
    pixels = decode_file(write_dicom(tmp_path / "a.dcm")).pixels
    np.testing.assert_allclose(pixels, STORED / 4095, atol=1e-6)
    assert decode_file(tmp_path / "a.dcm").bits == 12


def test_rescale_and_linear_window_give_the_windowed_view(tmp_path: Path) -> None:
    # Modality values = stored - 1024: [[-1024, -24], [976, 3071]]. Window centre 1000, width 2001 (LINEAR,
    # PS3.3 C.11.2.1.2.1): values <= -0.5 are black, > 1999.5 white, between (v + 0.5) / 2000.
    path = write_dicom(tmp_path / "w.dcm", RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=1000, WindowWidth=2001)
    np.testing.assert_allclose(decode_file(path).pixels, [[0.0, 0.0], [976.5 / 2000, 1.0]], atol=1e-6)


def test_monochrome1_is_inverted_so_that_bone_stays_white(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "m1.dcm", "MONOCHROME1", RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=1000, WindowWidth=2001
    )
    np.testing.assert_allclose(decode_file(path).pixels, [[1.0, 1.0], [1 - 976.5 / 2000, 0.0]], atol=1e-6)


def test_compressed_transfer_syntax_decodes_to_the_same_pixels(tmp_path: Path) -> None:
    plain = write_dicom(tmp_path / "plain.dcm")
    import pydicom

    ds = pydicom.dcmread(plain)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    np.testing.assert_allclose(decode_file(tmp_path / "rle.dcm").pixels, STORED / 4095, atol=1e-6)


def test_dicom_files_load_from_an_image_folder(tmp_path: Path) -> None:
    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        write_dicom(tmp_path / "train" / cls / "1.dcm")
    data = load_source(DataSource(format="image-folder", path=str(tmp_path)), 2, seed=0)
    assert data.labels.tolist() == [0, 1]
    np.testing.assert_allclose(data.images[1, ..., 0], STORED / 4095, atol=1e-6)


def test_a_dicom_without_pixels_or_not_dicom_at_all_is_a_data_error(tmp_path: Path) -> None:
    report = write_dicom(tmp_path / "sr.dcm")
    import pydicom

    ds = pydicom.dcmread(report)
    del ds.PixelData
    ds.save_as(report)
    with pytest.raises(DataError, match=f"^{report}: a DICOM file without pixel data"):
        decode_file(report)
    text = tmp_path / "fake.dcm"
    text.write_text("patient notes, not DICOM")
    with pytest.raises(DataError, match=f"^{text}: not a readable DICOM file"):
        decode_file(text)
