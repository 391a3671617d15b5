"""DP-SGD with Keras: per-example gradients, clipping, noise, and training the GroupNorm CNN."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.run_config import ModelConfig
from tests.worker.dp_models import BATCH, SIZE, batch, groupnorm_model
from worker.engine.client import KerasTrainer
from worker.engine.data import Dataset
from worker.engine.dp_training import DpSgdStep
from worker.engine.model import compiled_cnn
from worker.engine.privacy.dpsgd import DpSgdSettings, clip_factors

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]

#: the GPU hosts run Keras on JAX; CI installs no JAX, so there these tests skip (a plain skip: CI fails only the
#: real-data ones, see tests/realdata.py)
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (GPU hosts only)")


def assert_close(got: np.ndarray, want: np.ndarray, *, scale: float = 0.0) -> None:
    """Equal up to float32 round-off: vectorised and one-by-one convolutions sum in different orders, and ``got``
    computed as a difference of values of norm ``scale`` carries their rounding too."""
    rounding = 4 * float(np.finfo(np.float32).eps) * scale
    assert np.linalg.norm(got - want) <= 1e-4 * np.linalg.norm(want) + 1e-7 + rounding


def hand_gradients(model: Any, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray) -> list[list[Any]]:
    """Each example's gradient by its own GradientTape through the model's ordinary training-mode call."""
    import keras
    import tensorflow as tf

    grads = []
    for i in range(len(images)):
        with tf.GradientTape() as tape:
            prob = model(images[i : i + 1], training=True)
            loss = loss_weights[i] * keras.losses.binary_crossentropy(labels[i : i + 1, None], prob)[0]
        grads.append([np.asarray(g) for g in tape.gradient(loss, model.trainable_variables)])
    return grads


def test_per_example_gradients_match_one_tape_per_example_with_the_same_dropout_seeds() -> None:
    model = groupnorm_model()
    step = DpSgdStep(model, DpSgdSettings(noise_multiplier=0.0, clip_norm=1.0))
    images, labels = batch()
    weights = np.array([1.0, 2.0, 0.5, 1.0, 1.0, 3.0], np.float32)
    seed_states = model.non_trainable_variables  # the dropout layers' seeds, in layer order
    seeds = np.random.default_rng(1).integers(0, 2**31, (BATCH, len(seed_states), 2))

    vectorised = step.per_example_gradients(images, labels, weights, seeds)

    assert len(seed_states) == 4 and [g.shape[0] for g in vectorised] == [BATCH] * len(vectorised)
    for i in range(BATCH):
        for state, seed in zip(seed_states, seeds[i], strict=True):
            state.assign(seed.astype(state.dtype))
        expected = hand_gradients(model, images[i : i + 1], labels[i : i + 1], weights[i : i + 1])[0]
        for got, want in zip(vectorised, expected, strict=True):
            assert_close(got[i], want)


def test_noiseless_unclipped_step_is_an_sgd_step_on_the_mean_gradient() -> None:
    model = groupnorm_model(learning_rate=0.1, dropout=False)
    step = DpSgdStep(model, DpSgdSettings(noise_multiplier=0.0, clip_norm=1e9))
    images, labels = batch()
    ones = np.ones(BATCH, np.float32)
    before = [np.asarray(v) for v in model.trainable_variables]
    per_example = hand_gradients(model, images, labels, ones)

    stats = step.run(images, labels, ones, float(BATCH), np.random.default_rng(0))

    for k, variable in enumerate(model.trainable_variables):
        mean_gradient = np.mean([g[k] for g in per_example], axis=0)
        assert_close(before[k] - np.asarray(variable), 0.1 * mean_gradient, scale=float(np.linalg.norm(before[k])))
    assert stats.examples == BATCH and 0 <= stats.correct <= BATCH and np.isfinite(stats.loss_sum)


def test_small_clip_norm_bounds_each_example_and_the_sum() -> None:
    clip = 1e-3
    model = groupnorm_model()
    step = DpSgdStep(model, DpSgdSettings(noise_multiplier=0.0, clip_norm=clip))
    images, labels = batch()
    ones = np.ones(BATCH, np.float32)
    seeds = np.random.default_rng(2).integers(0, 2**31, (BATCH, 4, 2))

    per_example = step.per_example_gradients(images, labels, ones, seeds)
    summed = step.clipped_sum(images, labels, ones, seeds)

    norms = np.sqrt(sum(np.sum(g.reshape(BATCH, -1) ** 2, axis=1) for g in per_example))
    assert np.all(norms > clip)  # every example is clipped
    factors = clip_factors(norms, clip)
    for got, g in zip(summed, per_example, strict=True):
        assert_close(got, np.tensordot(factors, g, axes=1))
    total = np.sqrt(sum(np.sum(s**2) for s in summed))
    assert total <= BATCH * clip * (1 + 1e-5)


def test_noise_on_an_empty_batch_has_std_z_times_c_over_the_expected_batch() -> None:
    model = groupnorm_model(learning_rate=1.0)
    step = DpSgdStep(model, DpSgdSettings(noise_multiplier=2.0, clip_norm=0.5))
    before = np.concatenate([np.asarray(v).ravel() for v in model.trainable_variables])
    empty = np.zeros((0, SIZE, SIZE, 1), np.float32)

    stats = step.run(empty, np.zeros(0), np.zeros(0), 4.0, np.random.default_rng(0))

    after = np.concatenate([np.asarray(v).ravel() for v in model.trainable_variables])
    noise = (before - after) * 4.0  # SGD with lr 1: the update is noise / expected batch
    assert stats.examples == 0 and noise.size > 100_000
    assert noise.mean() == pytest.approx(0.0, abs=0.01)
    assert noise.std() == pytest.approx(2.0 * 0.5, rel=0.01)


def test_batchnorm_model_is_refused() -> None:
    with pytest.raises(ValueError, match="GroupNorm"):
        DpSgdStep(compiled_cnn(SIZE, "sgd", 0.1), DpSgdSettings(noise_multiplier=1.0, clip_norm=1.0))


def test_groupnorm_cnn_trains_one_dp_epoch_with_augmentation() -> None:
    from keras import layers

    trainer = KerasTrainer(
        SIZE,
        ModelConfig(batch_size=16, normalization="groupnorm"),
        dp=DpSgdSettings(noise_multiplier=1.0, clip_norm=1.0),
    )
    plain = compiled_cnn(SIZE, "rmsprop", 0.001)
    rng = np.random.default_rng(4)
    data = Dataset(rng.random((48, SIZE, SIZE, 1), np.float32), (rng.random(48) < 0.5).astype(np.uint8))

    def count(model: Any, kind: type) -> int:
        return sum(isinstance(layer, kind) for layer in model.layers)

    assert count(trainer.model, layers.BatchNormalization) == 0 and count(trainer.model, layers.GroupNormalization) == 5
    for kind in (layers.Conv2D, layers.Dense, layers.Dropout):
        assert count(trainer.model, kind) == count(plain, kind)
    assert trainer.batchnorm_slots == []
    initial = trainer.initial_weights(seed=1)
    trainer.warm_up()

    result = trainer.fit(initial, data, epochs=1, seed=3, class_weight={0: 1.5, 1: 0.75})

    assert result.dp_steps == 3  # ceil(48 / 16)
    assert np.isfinite(result.loss) and 0.0 <= result.accuracy <= 1.0
    assert any(not np.array_equal(a, b) for a, b in zip(result.weights, initial, strict=True))


@pytest.fixture(scope="module")
def jax_figures() -> dict[str, Any]:
    """tests/worker/jax_dp_checks.py run once under KERAS_BACKEND=jax (this process has Keras on TensorFlow)."""
    out = subprocess.run(  # -m from the checkout's root puts it on sys.path
        [sys.executable, "-m", "tests.worker.jax_dp_checks"],
        cwd=ROOT,
        env=os.environ | {"KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["backend"] == "jax"
    return figures


@needs_jax
def test_jax_per_example_gradients_match_one_grad_per_example_with_the_same_dropout_seeds(
    jax_figures: dict[str, Any],
) -> None:
    assert jax_figures["gradients"]["error"] < 1e-4
    assert jax_figures["gradients"]["twins_apart"] > 1e-3  # one image, two seeds: two dropout masks


@needs_jax
def test_jax_noiseless_unclipped_step_is_an_sgd_step_on_the_mean_gradient(jax_figures: dict[str, Any]) -> None:
    assert jax_figures["sgd_error"] < 1e-4


@needs_jax
def test_jax_noise_on_an_empty_batch_has_std_z_times_c_over_the_expected_batch(jax_figures: dict[str, Any]) -> None:
    noise = jax_figures["noise"]
    assert noise["examples"] == 0 and noise["size"] > 100_000
    assert noise["mean"] == pytest.approx(0.0, abs=0.01)
    assert noise["std"] == pytest.approx(2.0 * 0.5, rel=0.01)


@needs_jax
def test_jax_groupnorm_cnn_trains_one_dp_epoch_with_augmentation(jax_figures: dict[str, Any]) -> None:
    epoch = jax_figures["epoch"]
    assert epoch["dp_steps"] == 3  # ceil(48 / 16)
    assert np.isfinite(epoch["loss"]) and 0.0 <= epoch["accuracy"] <= 1.0 and epoch["changed"]
