"""Decode one image file as a radiology viewer shows it: upright, grayscale, full bit depth, scaled to [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from worker.engine.data.dataset import DataError

RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
IMAGE_SUFFIXES = RASTER_SUFFIXES | DICOM_SUFFIXES
# ITU-R BT.601 luma, the weights Pillow's own RGB -> L conversion uses, applied here in float.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # (H, W) float32 in [0, 1]; 0 is black as displayed
    bits: int  # bit depth of the stored samples: 1, 8, 12, 16...


def integer_to_unit(values: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Scale integer samples by their range (``bits`` if known, else the dtype's), never by a cast to uint8.

    Signed integers map their full range, so -32768 is black and 32767 white. Raises DataError for other dtypes.
    """
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if not np.issubdtype(values.dtype, np.integer):
        raise DataError(f"expected integer pixels, got {values.dtype}")
    info = np.iinfo(values.dtype)
    low, high = (float(info.min), float(info.max)) if bits is None else (0.0, float(2**bits - 1))
    if bits is not None and info.min < 0:
        low, high = -float(2 ** (bits - 1)), float(2 ** (bits - 1) - 1)
    return ((values.astype(np.float64) - low) / (high - low)).clip(0, 1).astype(np.float32)


def require_finite(pixels: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(pixels)
    if bad.any():
        images = int(bad.reshape(len(pixels), -1).any(axis=1).sum()) if pixels.ndim == 3 else 1
        raise DataError(f"{where}: {images} image(s) hold NaN or infinite pixels; fix or remove them")


def decode_file(path: Path) -> Decoded:
    """Decode a PNG, JPEG or DICOM file. Raises DataError naming the file when it cannot be shown as an image."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        from worker.engine.data.dicom import decode_dicom

        return decode_dicom(path)
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # the EXIF orientation a viewer applies
            decoded = decode_pillow(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(f"{path}: unreadable image ({type(error).__name__})") from error
    except DataError as error:
        raise DataError(f"{path}: {error}") from error
    require_finite(decoded.pixels, str(path))
    return decoded


def decode_pillow(image: Image.Image) -> Decoded:
    """Grayscale in [0, 1] for every Pillow mode a PNG or JPEG decodes to.

    Transparent pixels are composited over black (the background of a radiograph); palette and colour images
    become BT.601 luma; 16-bit samples are scaled by 65535.
    """
    mode = image.mode
    if mode == "1":
        return Decoded(np.asarray(image, dtype=np.float32), 1)
    if mode == "L":
        return Decoded(np.asarray(image, dtype=np.float32) / 255.0, 8)
    if mode.startswith("I;16"):
        return Decoded(integer_to_unit(np.asarray(image).astype(np.uint16)), 16)
    if mode == "I":  # how Pillow may open a 16-bit grayscale PNG: int32 holding 0..65535
        values = np.asarray(image, dtype=np.int64)
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise DataError("32-bit integer pixels are not supported; save the image as 8- or 16-bit")
        return Decoded(integer_to_unit(values.astype(np.uint16)), 16)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        require_finite(values, "float image")
        if values.min(initial=0) < 0 or values.max(initial=0) > 1:
            raise DataError("float pixels must lie in [0, 1]")
        return Decoded(values, 32)
    if mode == "LA":
        gray, alpha = (np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)
        return Decoded(gray * alpha, 8)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
    luma = rgba[..., :3] @ LUMA
    return Decoded((luma * rgba[..., 3]).astype(np.float32), 8)
