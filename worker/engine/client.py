"""Client-side work on one reusable Keras model: local training, prediction, BatchNorm statistics."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.run_config import ModelConfig
from worker.engine.data import Dataset
from worker.engine.dp_training import DpSgdStep
from worker.engine.metrics import binary_metrics
from worker.engine.model import Normalization, build_cnn, compiled_cnn, recalibrate_batchnorm
from worker.engine.privacy.dpsgd import DpSgdSettings, poisson_batch, sampling_rate, steps_per_epoch
from worker.engine.thresholds import GridCounts, empty_counts, grid_counts
from worker.engine.types import EvalMetrics, Weights

PREDICT_BATCH = 256


@dataclass(frozen=True)
class FitResult:
    weights: Weights
    optimizer_state: Weights
    loss: float
    accuracy: float
    seconds: float
    #: DP-SGD steps taken (0 without DP): the true count for privacy accounting, since batches are Poisson-sampled
    dp_steps: int = 0


class KerasTrainer:
    """Trains the study's CNN for any client by swapping weights into one compiled model.

    Building a model per fit retraces its graph and made a 10-client round ~3x slower
    (../shared/NOTES.md), so a process builds one per configuration and reuses it.
    With ``dp`` set, ``fit`` trains with DP-SGD (sample-level privacy at the site) on the GroupNorm variant of the
    CNN, which has no BatchNorm statistics (``batchnorm_slots`` is empty and recalibration does nothing).
    """

    def __init__(self, image_size: int, config: ModelConfig, dp: DpSgdSettings | None = None) -> None:
        import keras

        self.image_size = image_size
        self.config = config
        self.normalization: Normalization = config.normalization
        if dp and self.normalization != "groupnorm":
            raise ValueError("DP-SGD needs per-example gradients, which BatchNorm mixes: use normalization groupnorm")
        self.model = compiled_cnn(
            image_size, config.optimizer, config.learning_rate, config.augmentation, self.normalization
        )
        self.model.optimizer.build(self.model.trainable_variables)
        self._dp_step = DpSgdStep(self.model, dp) if dp else None
        self._fresh_optimizer = [v.numpy() for v in self.model.optimizer.variables]
        #: the seed generators of the layers that draw random numbers while training (dropout, augmentation)
        self._generators = [
            g
            for g in (getattr(x, "seed_generator", None) or getattr(x, "generator", None) for x in self.model.layers)
            if g
        ]
        self._bn_layers = [layer for layer in self.model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        paths = [w.path for w in self.model.weights]
        #: positions of each BatchNorm layer's moving mean in ``get_weights()``; the variance follows it.
        self.batchnorm_slots = [i for i, path in enumerate(paths) if path.endswith("moving_mean")]
        self._warmed = False

    def warm_up(self, class_weight: dict[int, float] | None = None) -> float:
        """Trace the training and prediction functions on one batch of zeros; the seconds it took (0 if done).

        Keras traces them on the first ``fit`` and ``predict``; done here, that one-off cost is counted as
        start-up instead of inflating the first round's (or epoch's) training time. Weights and optimizer state
        are restored afterwards. ``class_weight`` must match the real fits' (it changes the traced signature).
        """
        if self._warmed:
            return 0.0
        started = time.perf_counter()
        weights, state = self.model.get_weights(), [v.numpy() for v in self.model.optimizer.variables]
        batch = self.config.batch_size
        zeros = np.zeros((batch, self.image_size, self.image_size, 1), np.float32)
        if self._dp_step:
            self._dp_step.run(zeros, np.zeros(batch), np.ones(batch), batch, np.random.default_rng(0))
        else:
            self.model.fit(zeros, np.zeros(batch), batch_size=batch, verbose=0, class_weight=class_weight)
        self.model.predict(zeros, batch_size=PREDICT_BATCH, verbose=0)
        self.model.set_weights(weights)
        for variable, value in zip(self.model.optimizer.variables, state, strict=True):
            variable.assign(value)
        self._warmed = True
        return time.perf_counter() - started

    def initial_weights(self, seed: int) -> Weights:
        """Fresh Glorot-initialised weights, the same for the same seed on any host."""
        import keras

        keras.utils.set_random_seed(seed)
        weights: Weights = build_cnn(self.image_size, normalization=self.normalization).get_weights()
        return weights

    def fit(
        self,
        weights: Weights,
        data: Dataset,
        *,
        epochs: int,
        seed: int,
        optimizer_state: Weights | None = None,
        class_weight: dict[int, float] | None = None,
    ) -> FitResult:
        """Local training from ``weights``; the optimizer starts fresh unless a state is passed in.

        ``class_weight`` scales each class's loss (see ``aggregate.balanced_class_weight``). Loss and accuracy
        are the last epoch's, measured as the training steps computed them (dropout and augmentation on).
        """
        started = time.perf_counter()
        rng = self._seed(seed)
        self.model.set_weights(weights)
        for variable, value in zip(
            self.model.optimizer.variables, optimizer_state or self._fresh_optimizer, strict=True
        ):
            variable.assign(value)
        dp_steps = 0
        if self._dp_step:
            loss, accuracy, dp_steps = self._fit_dp(self._dp_step, data, epochs, rng, class_weight)
        else:
            loss, accuracy = self._fit_plain(data, epochs, rng, class_weight)
        if self.config.batchnorm != "keras":
            recalibrate_batchnorm(self.model, self._calibration_images(data, seed))
        return FitResult(
            weights=self.model.get_weights(),
            optimizer_state=[v.numpy() for v in self.model.optimizer.variables],
            loss=loss,
            accuracy=accuracy,
            seconds=time.perf_counter() - started,
            dp_steps=dp_steps,
        )

    def _fit_plain(
        self, data: Dataset, epochs: int, rng: np.random.Generator, class_weight: dict[int, float] | None
    ) -> tuple[float, float]:
        for _ in range(epochs):
            order = rng.permutation(len(data))
            history = self.model.fit(
                data.images[order],
                data.labels[order],
                batch_size=self.config.batch_size,
                shuffle=False,
                verbose=0,
                class_weight=class_weight,
            )
        return float(history.history["loss"][-1]), float(history.history["accuracy"][-1])

    def _fit_dp(
        self,
        step: DpSgdStep,
        data: Dataset,
        epochs: int,
        rng: np.random.Generator,
        class_weight: dict[int, float] | None,
    ) -> tuple[float, float, int]:
        """DP-SGD epochs of ``steps_per_epoch`` Poisson batches; (loss, accuracy) of the last epoch's examples, steps.

        Each example's loss is scaled by its class weight before its gradient is clipped, so the weight changes the
        direction of the update but never lets one example count for more than ``clip_norm``.
        """
        n, batch = len(data), self.config.batch_size
        rate = sampling_rate(batch, n)
        # Who is in each batch and the noise must be secret: the server knows the run's seed, and noise it could
        # regenerate (or batches it could reconstruct) would void the guarantee, so DP-SGD is not reproducible.
        rng = np.random.default_rng(secrets.randbits(128))
        weight_of = class_weight or {0: 1.0, 1: 1.0}
        loss_weights = np.where(data.labels > 0.5, weight_of[1], weight_of[0]).astype(np.float32)
        steps = steps_per_epoch(n, batch)
        loss_sum, correct, seen = 0.0, 0, 0
        for _ in range(epochs):
            loss_sum, correct, seen = 0.0, 0, 0
            for _ in range(steps):
                pick = poisson_batch(n, rate, rng)
                stats = step.run(data.images[pick], data.labels[pick], loss_weights[pick], rate * n, rng)
                loss_sum, correct, seen = loss_sum + stats.loss_sum, correct + stats.correct, seen + stats.examples
        return loss_sum / max(seen, 1), correct / max(seen, 1), epochs * steps

    def _seed(self, seed: int) -> np.random.Generator:
        """Seed dropout masks and augmentation (each layer's own SeedGenerator); return the shuffling generator.

        ``keras.utils.set_random_seed`` before every fit made a federated round ~20% slower with
        TensorFlow (bench/overhead.py: ratio 1.24 with it, 1.03 without), so fits are made
        reproducible without touching the global seed.
        """
        rng = np.random.default_rng([seed, 0xD0])
        for generator in self._generators:
            state = generator.state
            state.assign(np.array([rng.integers(2**31), 0], dtype=state.dtype))
        return rng

    def predict(self, weights: Weights, images: np.ndarray) -> np.ndarray:
        self.model.set_weights(weights)
        return np.asarray(self.model.predict(images, batch_size=PREDICT_BATCH, verbose=0)).reshape(-1)

    def evaluate(self, weights: Weights, data: Dataset, threshold: float = 0.5) -> EvalMetrics:
        """The model with ``weights`` on a test set: loss, AUC, ROC, and the rest at ``threshold``."""
        return binary_metrics(data.labels, self.predict(weights, data.images), threshold)

    def grid_counts(self, weights: Weights, data: Dataset) -> GridCounts:
        """Confusion counts of the model on ``data`` at every grid threshold; empty data gives zeros."""
        if not len(data):
            return empty_counts()
        return grid_counts(data.labels, self.predict(weights, data.images))

    def batchnorm_statistics(self, weights: Weights, data: Dataset, seed: int) -> Weights:
        """``[mean_1, var_1, mean_2, ...]`` of every BatchNorm input under ``weights`` on this client's data."""
        self.model.set_weights(weights)
        recalibrate_batchnorm(self.model, self._calibration_images(data, seed))
        stats: Weights = []
        for layer in self._bn_layers:
            stats += [np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)]
        return stats

    def save(self, weights: Weights, path: Path) -> None:
        """The model as a .keras file that ``keras.models.load_model`` opens without fedlens."""
        self.model.set_weights(weights)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(path)

    def _calibration_images(self, data: Dataset, seed: int) -> np.ndarray:
        n = self.config.calibration_samples
        if len(data) <= n:
            return data.images
        pick = np.random.default_rng([seed, 0xB4]).choice(len(data), n, replace=False)
        return data.images[np.sort(pick)]
