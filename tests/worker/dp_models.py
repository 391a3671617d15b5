"""The tiny GroupNorm CNN and batch of the DP-SGD tests, shared by the TensorFlow tests and the script they run
under KERAS_BACKEND=jax (tests/worker/jax_dp_checks.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.engine.model import compiled_cnn

SIZE = 28
BATCH = 6


def groupnorm_model(learning_rate: float = 0.1, dropout: bool = True) -> Any:
    """The study's CNN with GroupNorm and SGD, the same initial weights every time (the float32 round-off the tests
    compare against depends on them); ``dropout=False`` sets every dropout rate to 0 (a deterministic step)."""
    import keras

    keras.utils.set_random_seed(0)
    model = compiled_cnn(SIZE, "sgd", learning_rate, normalization="groupnorm")
    model.optimizer.build(model.trainable_variables)
    if not dropout:
        for layer in model.layers:
            if hasattr(layer, "rate"):
                layer.rate = 0.0
    return model


def batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((BATCH, SIZE, SIZE, 1), np.float32), np.array([0, 1, 1, 0, 1, 0], np.float32)
