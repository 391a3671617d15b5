"""Generated chest-X-ray-like images: the zero-setup data set and the test fixture."""

from __future__ import annotations

import numpy as np


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: np.ndarray, cx: np.ndarray, ry: np.ndarray, rx: np.ndarray
) -> np.ndarray:
    """Soft-edged ellipse masks, one per image (parameters are per-image column vectors)."""
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    mask: np.ndarray = np.clip((1.0 - d) * 4, 0, 1)
    return mask


def synthetic_xrays(samples: int, size: int, positive_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, size, size) float32 in [0, 1], labels (N,) uint8), deterministic for a seed.

    A bright torso holds two dark lung fields; PNEUMONIA images (label 1) add one to three bright,
    blurred opacities inside a lung, as consolidations appear on a radiograph. Anatomy, exposure
    and noise vary per image, so the task is learnable but not trivial.
    """
    rng = np.random.default_rng(seed)
    labels = (rng.random(samples) < positive_fraction).astype(np.uint8)
    yy, xx = np.mgrid[0 : 1 : complex(size), 0 : 1 : complex(size)]
    yy, xx = yy[None], xx[None]

    def col(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, (samples, 1, 1))

    torso = _ellipse(yy, xx, col(0.5, 0.6), col(0.47, 0.53), col(0.5, 0.6), col(0.42, 0.5))
    images = 0.15 + 0.55 * torso * col(0.8, 1.0)
    lung_y, lung_ry, lung_rx = col(0.42, 0.5), col(0.24, 0.3), col(0.11, 0.15)
    for side in (-1, 1):
        lung = _ellipse(yy, xx, lung_y, 0.5 + side * col(0.15, 0.2), lung_ry, lung_rx)
        images = images - 0.35 * lung * col(0.8, 1.0)
    n_spots = rng.integers(1, 4, samples)
    for spot in range(3):
        active = (labels == 1) & (n_spots > spot)
        sign = np.where(rng.random((samples, 1, 1)) < 0.5, -1, 1)
        cy = lung_y + col(-0.15, 0.18)
        cx = 0.5 + sign * col(0.13, 0.22)
        radius = col(0.06, 0.12)
        blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)))
        images = images + active[:, None, None] * 0.3 * col(0.6, 1.0) * blob
    images = images * col(0.85, 1.15) + rng.normal(0, 0.04, images.shape)
    return np.clip(images, 0, 1).astype(np.float32), labels
