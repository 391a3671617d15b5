"""The synthetic generator renders in bounded chunks, in float32, with images that do not depend on the chunking."""

from __future__ import annotations

import numpy as np
import pytest

from worker.engine import synthetic


def test_synthetic_images_do_not_depend_on_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    whole, labels = synthetic.synthetic_xrays(50, 24, 0.5, seed=3)
    monkeypatch.setattr(synthetic, "CHUNK_BYTES", 7 * 24 * 24 * 8)  # 7 images per chunk: 8 chunks, the last short
    chunked, chunked_labels = synthetic.synthetic_xrays(50, 24, 0.5, seed=3)
    assert np.array_equal(whole, chunked)
    assert np.array_equal(labels, chunked_labels)


def test_synthetic_images_are_float32_in_the_unit_interval() -> None:
    images, labels = synthetic.synthetic_xrays(40, 16, 0.5, seed=1)
    assert images.dtype == np.float32 and images.shape == (40, 16, 16)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.dtype == np.uint8 and set(labels.tolist()) == {0, 1}
