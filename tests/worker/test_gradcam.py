"""Grad-CAM of the real CNN: on images whose only class evidence is an opacity, the heat map must find it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.run_config import ModelConfig
from worker.engine.client import KerasTrainer
from worker.engine.data import Dataset
from worker.engine.gallery import write_gallery
from worker.engine.gradcam import grad_cam

pytestmark = pytest.mark.slow
SIZE = 64
BLOB_SIGMA = 4.0


def opacity_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy gray images in a bright frame (a film border that does not tell the classes apart, as in Kermany's
    images); the odd ones (PNEUMONIA) also hold a blurred opacity at a random place.

    Returns images (n, SIZE, SIZE, 1), labels and the (row, column) centre of each image's opacity.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = 0.3 + rng.normal(0, 0.05, (n, SIZE, SIZE))
    labels = (np.arange(n) % 2).astype(np.uint8)
    centres = rng.uniform(16, 48, (n, 2))
    images[:, :3] = images[:, -3:] = images[:, :, :3] = images[:, :, -3:] = 0.95
    for i in np.flatnonzero(labels):
        distance2 = (yy - centres[i, 0]) ** 2 + (xx - centres[i, 1]) ** 2
        images[i] += 0.5 * np.exp(-distance2 / (2 * BLOB_SIGMA**2))
    return np.clip(images, 0, 1).astype(np.float32)[..., None], labels, centres


@pytest.fixture(scope="module")
def trainer() -> KerasTrainer:
    """The study's CNN trained briefly on the opacity images, with precise BatchNorm statistics."""
    import keras

    keras.utils.set_random_seed(0)
    trainer = KerasTrainer(SIZE, ModelConfig(optimizer="adam", batchnorm="local"))
    images, labels, _ = opacity_images(320, seed=1)
    fitted = trainer.fit(trainer.initial_weights(3), Dataset(images, labels), epochs=3, seed=4)
    trainer.model.set_weights(fitted.weights)
    return trainer


def test_heat_map_of_a_pneumonia_image_peaks_over_its_opacity(trainer: KerasTrainer) -> None:
    images, labels, centres = opacity_images(40, seed=2)
    model = trainer.model
    positive = labels == 1
    assert (model.predict(images[positive], verbose=0) >= 0.5).all(), "the CNN did not learn the opacity"

    heat = grad_cam(model, images[positive], np.ones(positive.sum(), np.uint8))

    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    misses, contrasts = [], []
    for h, (cy, cx) in zip(heat, centres[positive], strict=True):
        peak_y, peak_x = np.unravel_index(np.argmax(h), h.shape)
        misses.append(np.hypot(peak_y - cy, peak_x - cx))
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= (2 * BLOB_SIGMA) ** 2
        contrasts.append(h[inside].mean() / max(h[~inside].mean(), 1e-6))
    assert heat.shape == (20, SIZE, SIZE) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    assert np.median(misses) <= 10, misses  # px from the opacity's centre; its blur sigma is 4 px
    assert np.median(contrasts) >= 5, contrasts  # mean heat over the opacity / mean heat elsewhere


def test_heat_map_of_a_saturated_prediction_is_that_of_its_logit(trainer: KerasTrainer) -> None:
    """With the output unit's weights scaled by 100 the sigmoid rounds to exactly 1 and its gradient to 0;
    the logit's gradient only scales, so the map stays the same."""
    images, labels, _ = opacity_images(40, seed=2)
    positives = images[labels == 1][:4]
    ones = np.ones(len(positives), np.uint8)
    model, weights = trainer.model, trainer.model.get_weights()
    before = grad_cam(model, positives, ones)
    try:
        model.layers[-1].set_weights([w * 100 for w in model.layers[-1].get_weights()])
        assert (model.predict(positives, verbose=0) == 1.0).all()
        saturated = grad_cam(model, positives, ones)
    finally:
        model.set_weights(weights)

    np.testing.assert_allclose(saturated, before, atol=1e-4)


def test_gallery_of_a_trained_model_writes_every_png_its_index_names(trainer: KerasTrainer, tmp_path: Path) -> None:
    images, labels, _ = opacity_images(40, seed=2)
    weights = trainer.model.get_weights()

    index = write_gallery(trainer, weights, Dataset(images, labels), tmp_path, rnd=3, seed=1, per_category=2)

    assert json.loads((tmp_path / "round-0003.json").read_text())["items"] == index["items"]
    assert index["counts"]["TP"] + index["counts"]["FN"] == 20 and index["test_samples"] == 40
    assert [i["category"] for i in index["items"]][:4] == ["TP", "TP", "TN", "TN"]
    assert all(i["prediction"] == "PNEUMONIA" for i in index["items"] if i["category"] == "TP")
    assert index["map_size"] == [12, 12]  # the third convolution at 64 px
    for item in index["items"]:
        with Image.open(tmp_path / item["file"]) as png:
            assert png.size == (224, 224) and png.mode == "RGB"
