"""Generated chest-X-ray-like images: the zero-setup data set and the test fixture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Bytes of one float64 work array per chunk: the images are rendered a slice at a time, so the peak memory is the
#: float32 result plus a few chunks, not several float64 copies of the whole data set.
CHUNK_BYTES = 32 * 2**20


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: np.ndarray, cx: np.ndarray, ry: np.ndarray, rx: np.ndarray
) -> np.ndarray:
    """Soft-edged ellipse masks, one per image (parameters are per-image column vectors)."""
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    mask: np.ndarray = np.clip((1.0 - d) * 4, 0, 1)
    return mask


@dataclass(frozen=True)
class _Spot:
    active: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    radius: np.ndarray
    gain: np.ndarray


@dataclass(frozen=True)
class _Anatomy:
    """Every per-image parameter, drawn in one fixed order so the images do not depend on the chunk size."""

    torso: tuple[np.ndarray, ...]
    torso_gain: np.ndarray
    lungs: list[tuple[tuple[np.ndarray, ...], np.ndarray]]
    spots: list[_Spot]
    exposure: np.ndarray


def _anatomy(rng: np.random.Generator, labels: np.ndarray) -> _Anatomy:
    samples = len(labels)

    def col(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, (samples, 1, 1))

    torso = (col(0.5, 0.6), col(0.47, 0.53), col(0.5, 0.6), col(0.42, 0.5))
    torso_gain = col(0.8, 1.0)
    lung_y, lung_ry, lung_rx = col(0.42, 0.5), col(0.24, 0.3), col(0.11, 0.15)
    lungs: list[tuple[tuple[np.ndarray, ...], np.ndarray]] = []
    for side in (-1, 1):
        shape = (lung_y, 0.5 + side * col(0.15, 0.2), lung_ry, lung_rx)
        lungs.append((shape, col(0.8, 1.0)))
    n_spots = rng.integers(1, 4, samples)
    spots = []
    for spot in range(3):
        active = ((labels == 1) & (n_spots > spot))[:, None, None]
        sign = np.where(rng.random((samples, 1, 1)) < 0.5, -1, 1)
        cy = lung_y + col(-0.15, 0.18)
        cx = 0.5 + sign * col(0.13, 0.22)
        radius = col(0.06, 0.12)
        spots.append(_Spot(active, cy, cx, radius, col(0.6, 1.0)))
    return _Anatomy(torso, torso_gain, lungs, spots, col(0.85, 1.15))


def _render(a: _Anatomy, part: slice, yy: np.ndarray, xx: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Images ``part`` of the data set in float64, as one expression of the per-image parameters."""
    images = 0.15 + 0.55 * _ellipse(yy, xx, *(p[part] for p in a.torso)) * a.torso_gain[part]
    for shape, gain in a.lungs:
        images = images - 0.35 * _ellipse(yy, xx, *(p[part] for p in shape)) * gain[part]
    for s in a.spots:
        blob = np.exp(-(((yy - s.cy[part]) ** 2 + (xx - s.cx[part]) ** 2) / (2 * s.radius[part] ** 2)))
        images = images + s.active[part] * 0.3 * s.gain[part] * blob
    rendered: np.ndarray = images * a.exposure[part] + noise
    return rendered


def synthetic_xrays(samples: int, size: int, positive_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, size, size) float32 in [0, 1], labels (N,) uint8), deterministic for a seed.

    A bright torso holds two dark lung fields; PNEUMONIA images (label 1) add one to three bright,
    blurred opacities inside a lung, as consolidations appear on a radiograph. Anatomy, exposure
    and noise vary per image, so the task is learnable but not trivial.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random(samples) < positive_fraction).astype(np.uint8)
    anatomy = _anatomy(rng, labels)
    yy, xx = np.mgrid[0 : 1 : complex(size), 0 : 1 : complex(size)]
    yy, xx = yy[None], xx[None]
    images = np.empty((samples, size, size), dtype=np.float32)
    step = max(1, CHUNK_BYTES // (8 * size * size))
    for start in range(0, samples, step):
        part = slice(start, min(start + step, samples))
        noise = rng.normal(0, 0.04, (part.stop - part.start, size, size))  # the stream continues across chunks
        images[part] = np.clip(_render(anatomy, part, yy, xx, noise), 0, 1)
    return images, labels
