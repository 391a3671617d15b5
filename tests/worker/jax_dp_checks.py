"""Run under KERAS_BACKEND=jax by test_dp_training.py: measures DP-SGD on JAX and prints the figures as JSON."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tests.worker.dp_models import BATCH, SIZE, batch, groupnorm_model


def relative_error(got: Any, want: Any) -> float:
    got, want = np.asarray(got), np.asarray(want)
    return float(np.linalg.norm(got - want) / (np.linalg.norm(want) + 1e-12))


def hand_gradients(model: Any, images: np.ndarray, labels: np.ndarray, weights: np.ndarray, seeds: Any) -> list[Any]:
    """Each example's gradient by its own ``jax.grad`` of the model's ``stateless_call`` with that example's seeds."""
    import jax
    import keras

    def loss(params: list[Any], i: int) -> Any:
        seed = [np.asarray(s, v.dtype) for s, v in zip(seeds[i], model.non_trainable_variables, strict=True)]
        prob, _ = model.stateless_call(params, seed, images[i : i + 1], training=True)
        return weights[i] * keras.losses.binary_crossentropy(labels[i : i + 1, None], prob)[0]

    params = [v.value for v in model.trainable_variables]
    return [jax.grad(loss)(params, i) for i in range(len(images))]


def gradients_match_a_loop() -> dict[str, float]:
    """The largest relative error of a vmapped per-example gradient against its own ``jax.grad``, and how far two
    copies of one example apart with different seeds are (their dropout masks differ, so their gradients must)."""
    from worker.engine.dp_training import DpSgdStep
    from worker.engine.privacy.dpsgd import DpSgdSettings

    model = groupnorm_model(0.1, dropout=True)
    step = DpSgdStep(model, DpSgdSettings(noise_multiplier=0.0, clip_norm=1.0))
    images, labels = batch()
    weights = np.array([1.0, 2.0, 0.5, 1.0, 1.0, 3.0], np.float32)
    seeds = np.random.default_rng(1).integers(0, 2**31, (BATCH, len(model.non_trainable_variables), 2))
    vectorised = step.per_example_gradients(images, labels, weights, seeds)
    expected = hand_gradients(model, images, labels, weights, seeds)
    error = max(relative_error(g[i], w) for i in range(BATCH) for g, w in zip(vectorised, expected[i], strict=True))
    twins = step.per_example_gradients(images[:1].repeat(2, 0), labels[:2] * 0, weights[:2] * 0 + 1, seeds[:2])
    return {"error": error, "twins_apart": min(relative_error(g[0], g[1]) for g in twins)}


def step_is_sgd_on_the_mean_gradient() -> float:
    """The relative error of a noiseless, unclipped DP step against lr times the mean gradient (no dropout)."""
    from worker.engine.dp_training import DpSgdStep
    from worker.engine.privacy.dpsgd import DpSgdSettings

    model = groupnorm_model(0.1, dropout=False)
    step = DpSgdStep(model, DpSgdSettings(noise_multiplier=0.0, clip_norm=1e9))
    images, labels = batch()
    ones = np.ones(BATCH, np.float32)
    before = [np.asarray(v) for v in model.trainable_variables]
    seeds = np.zeros((BATCH, len(model.non_trainable_variables), 2))
    per_example = hand_gradients(model, images, labels, ones, seeds)
    step.run(images, labels, ones, float(BATCH), np.random.default_rng(0))
    after = [np.asarray(v) for v in model.trainable_variables]
    moved = np.concatenate([(b - a).ravel() for b, a in zip(before, after, strict=True)])
    mean = [np.mean([np.asarray(g[k]) for g in per_example], axis=0) for k in range(len(before))]
    return relative_error(moved, 0.1 * np.concatenate([m.ravel() for m in mean]))


def empty_batch_noise() -> dict[str, float]:
    """Mean and std of an empty batch's update times the expected batch 4 (SGD, lr 1): the noise, z C = 1 expected."""
    from worker.engine.dp_training import DpSgdStep
    from worker.engine.privacy.dpsgd import DpSgdSettings

    model = groupnorm_model(1.0, dropout=True)
    step = DpSgdStep(model, DpSgdSettings(noise_multiplier=2.0, clip_norm=0.5))
    before = np.concatenate([np.asarray(v).ravel() for v in model.trainable_variables])
    stats = step.run(np.zeros((0, SIZE, SIZE, 1), np.float32), np.zeros(0), np.zeros(0), 4.0, np.random.default_rng(0))
    noise = (before - np.concatenate([np.asarray(v).ravel() for v in model.trainable_variables])) * 4.0
    return {"mean": float(noise.mean()), "std": float(noise.std()), "size": noise.size, "examples": stats.examples}


def trainer_epoch() -> dict[str, float]:
    """One DP epoch of the GroupNorm CNN with augmentation through ``KerasTrainer``: loss, accuracy, steps."""
    from app.run_config import ModelConfig
    from worker.engine.client import KerasTrainer
    from worker.engine.data import Dataset
    from worker.engine.privacy.dpsgd import DpSgdSettings

    trainer = KerasTrainer(
        SIZE,
        ModelConfig(batch_size=16, normalization="groupnorm", augmentation=True),
        dp=DpSgdSettings(noise_multiplier=1.0, clip_norm=1.0),
    )
    rng = np.random.default_rng(4)
    data = Dataset(rng.random((48, SIZE, SIZE, 1), np.float32), (rng.random(48) < 0.5).astype(np.uint8))
    initial = trainer.initial_weights(seed=1)
    trainer.warm_up()
    result = trainer.fit(initial, data, epochs=1, seed=3, class_weight={0: 1.5, 1: 0.75})
    changed = any(not np.array_equal(a, b) for a, b in zip(result.weights, initial, strict=True))
    return {"loss": result.loss, "accuracy": result.accuracy, "dp_steps": result.dp_steps, "changed": changed}


if __name__ == "__main__":
    import keras

    figures = {
        "backend": keras.backend.backend(),
        "gradients": gradients_match_a_loop(),
        "sgd_error": step_is_sgd_on_the_mean_gradient(),
        "noise": empty_batch_noise(),
        "epoch": trainer_epoch(),
    }
    print(json.dumps(figures))
