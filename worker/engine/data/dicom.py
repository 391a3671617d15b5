"""DICOM radiographs through pydicom: modality rescale, VOI LUT or window, MONOCHROME1 inverted (DICOM PS3.3 C.11)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worker.engine.data.dataset import DataError
from worker.engine.data.decode import LUMA, Decoded, require_finite


def _output_range(ds: Any) -> tuple[float, float]:
    """The range the modality and VOI transforms map into, as pydicom's windowing defines it (PS3.3 C.11.2.1.2)."""
    if "VOILUTSequence" in ds:
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    low, high = (
        (0.0, 2.0**bits - 1) if int(ds.PixelRepresentation) == 0 else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    )
    slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def decode_dicom(path: Path) -> Decoded:
    """Pixels as a DICOM viewer displays the first VOI: 0 black, 1 white. Raises DataError naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable DICOM file ({type(error).__name__})") from error
    if "PixelData" not in ds:
        raise DataError(f"{path}: a DICOM file without pixel data (not an image)")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(f"{path}: a multi-frame DICOM; one radiograph per file is expected")
    try:
        stored = ds.pixel_array
    except Exception as error:  # pydicom raises many types for unsupported or damaged pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise DataError(f"{path}: cannot decode its pixel data ({name}: {type(error).__name__})") from error
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if not photometric.startswith("MONOCHROME"):
        rgb = np.asarray(stored, dtype=np.float64)
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise DataError(f"{path}: unsupported photometric interpretation {photometric}")
        scale = float(2 ** int(ds.BitsStored) - 1)
        return Decoded((rgb @ LUMA / scale).astype(np.float32), int(ds.BitsStored))
    try:
        values = apply_voi_lut(apply_modality_lut(stored, ds), ds, index=0)
    except ValueError as error:
        raise DataError(f"{path}: invalid rescale or window tags ({error})") from error
    low, high = _output_range(ds)
    pixels = ((np.asarray(values, dtype=np.float64) - low) / (high - low)).clip(0, 1)
    if photometric == "MONOCHROME1":  # the lowest value is white
        pixels = 1.0 - pixels
    require_finite(pixels, str(path))
    return Decoded(pixels.astype(np.float32), int(ds.BitsStored))
