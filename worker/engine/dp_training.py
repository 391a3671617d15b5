"""DP-SGD on the Keras 3 API: per-example gradients, clipping and Gaussian noise (Abadi et al., CCS 2016)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from worker.engine.privacy.dpsgd import DpSgdSettings, clip_factors

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class StepStats:
    """What one step saw: the summed class-weighted loss and the correct predictions (threshold 0.5) of its batch."""

    loss_sum: float
    correct: int
    examples: int


class DpSgdBackend(Protocol):
    """The compiled per-example part of DP-SGD on one Keras backend; arrays in and out are numpy."""

    def per_example_gradients(
        self, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray, seeds: np.ndarray
    ) -> list[np.ndarray]: ...

    def clipped_sum(
        self, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray, seeds: np.ndarray
    ) -> list[np.ndarray]: ...

    def step(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        loss_weights: np.ndarray,
        expected_batch: float,
        rng: np.random.Generator,
    ) -> tuple[float, int]:
        """Augment, clip, add noise and apply the optimizer; (loss sum, correct predictions) of the batch."""
        ...


class DpSgdStep:
    """The compiled DP-SGD step of one Keras model, on the TensorFlow or the JAX backend.

    Layers before the first one with weights (the augmentation) run once on the whole batch: they transform each
    image on its own and carry no parameter gradient. The rest runs once per example with the example's own seeds,
    so each example draws its own dropout mask, as in ``fit``. Raises ValueError for a model with
    BatchNormalization (it mixes the examples of a batch, so clipping one example's gradient would not bound its
    influence) and NotImplementedError on another backend.
    """

    def __init__(self, model: keras.Model, settings: DpSgdSettings) -> None:
        import keras

        backend = keras.backend.backend()
        if backend not in ("tensorflow", "jax"):
            raise NotImplementedError(f"DP-SGD runs on the TensorFlow and JAX backends only, not {backend}")
        if any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers):
            raise ValueError("DP-SGD needs the GroupNorm model: BatchNormalization mixes the examples of a batch")
        self.model = model
        self.settings = settings
        first = next(i for i, layer in enumerate(model.layers) if layer.weights)
        inputs = keras.Input(model.layers[first].input.shape[1:])
        outputs = inputs
        for layer in model.layers[first:]:
            outputs = layer(outputs)
        core = keras.Model(inputs, outputs)
        self._backend: DpSgdBackend
        if backend == "jax":
            from worker.engine.dp_jax import JaxDpSgd

            self._backend = JaxDpSgd(model, model.layers[:first], core, settings)
        else:
            self._backend = TensorFlowDpSgd(model, model.layers[:first], core, settings)

    def per_example_gradients(
        self, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray, seeds: np.ndarray
    ) -> list[np.ndarray]:
        """Each example's gradient of its weighted loss, one ``(batch, *variable.shape)`` array per variable.

        ``seeds`` ``(batch, dropout layers, 2)`` are the dropout seed states of each example. No augmentation.
        """
        return self._backend.per_example_gradients(images, labels, loss_weights, seeds)

    def clipped_sum(
        self, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray, seeds: np.ndarray
    ) -> list[np.ndarray]:
        """The sum over the batch of the per-example gradients, each clipped to norm ``clip_norm``; no noise."""
        return self._backend.clipped_sum(images, labels, loss_weights, seeds)

    def run(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        loss_weights: np.ndarray,
        expected_batch: float,
        rng: np.random.Generator,
    ) -> StepStats:
        """One DP-SGD step on a Poisson batch, which may be empty: noise is added and the optimizer steps anyway.

        The update is (sum of clipped gradients + N(0, (z C)^2)) / ``expected_batch``, dividing by the expected
        batch size q n, not the drawn one, which would depend on who is in the batch. Seeds come from ``rng``.
        """
        loss_sum, correct = self._backend.step(images, labels, loss_weights, expected_batch, rng)
        return StepStats(loss_sum=loss_sum, correct=correct, examples=len(images))


class TensorFlowDpSgd:
    """DP-SGD's compiled part on TensorFlow: ``tf.vectorized_map`` over ``stateless_call``.

    The step is traced once for any batch size (batch dimension None): Poisson batches vary in size, and padding
    them to a fixed 49 at batch 32 made each step ~1.6x slower (64 px, 2 CPUs) than this.
    """

    def __init__(self, model: keras.Model, prefix: list[Any], core: keras.Model, settings: DpSgdSettings) -> None:
        import tensorflow as tf

        self.model = model
        self.settings = settings
        self._prefix = prefix
        self._core = core
        #: the seed states of the core's dropout layers: each example gets its own values
        self._seed_states = self._core.non_trainable_variables
        image = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        vector = tf.TensorSpec([None], tf.float32)
        seeds = tf.TensorSpec([None, len(self._seed_states), 2], self._seed_dtype)
        batch = (image, vector, vector, seeds)
        self._gradients = tf.function(self._per_example_gradients, input_signature=batch)
        self._clipped = tf.function(self._clipped_sum, input_signature=batch)
        step_signature = (*batch, tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.float32))
        self._step = tf.function(self._train_step, input_signature=step_signature)

    @property
    def _seed_dtype(self) -> str:
        return self._seed_states[0].dtype if self._seed_states else "int32"

    def per_example_gradients(
        self, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray, seeds: np.ndarray
    ) -> list[np.ndarray]:
        grads, _, _ = self._gradients(images, labels, loss_weights, seeds.astype(self._seed_dtype))
        return [np.asarray(g) for g in grads]

    def clipped_sum(
        self, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray, seeds: np.ndarray
    ) -> list[np.ndarray]:
        summed, _, _ = self._clipped(images, labels, loss_weights, seeds.astype(self._seed_dtype))
        return [np.asarray(s) for s in summed]

    def step(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        loss_weights: np.ndarray,
        expected_batch: float,
        rng: np.random.Generator,
    ) -> tuple[float, int]:
        examples = len(images)
        if not examples:  # the vectorised gradient cannot stack 0 examples: one with loss weight 0 adds nothing
            images, labels, loss_weights = np.zeros((1, *images.shape[1:])), np.zeros(1), np.zeros(1)
        seeds = rng.integers(0, 2**31, (len(images), len(self._seed_states), 2)).astype(self._seed_dtype)
        noise_seed = rng.integers(0, 2**62, 2)
        loss_sum, correct = self._step(
            images.astype(np.float32),
            labels.astype(np.float32),
            loss_weights.astype(np.float32),
            seeds,
            noise_seed,
            np.float32(expected_batch),
        )
        if not examples:
            return 0.0, 0
        return float(loss_sum), int(correct)

    def _per_example_gradients(self, images: Any, labels: Any, loss_weights: Any, seeds: Any) -> tuple[Any, Any, Any]:
        import keras
        import tensorflow as tf

        trainable = [v.value for v in self._core.trainable_variables]

        def one(example: tuple[Any, Any, Any, Any]) -> tuple[list[Any], Any, Any]:
            image, label, weight, seed = example
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                prob, _ = self._core.stateless_call(trainable, tf.unstack(seed), image[None], training=True)
                loss = weight * keras.losses.binary_crossentropy(label[None, None], prob)[0]
            return tape.gradient(loss, trainable), loss, prob[0, 0]

        return tf.vectorized_map(one, (images, labels, loss_weights, seeds))  # type: ignore[no-any-return]

    def _clipped_sum(self, images: Any, labels: Any, loss_weights: Any, seeds: Any) -> tuple[list[Any], Any, Any]:
        import tensorflow as tf

        grads, losses, probs = self._per_example_gradients(images, labels, loss_weights, seeds)
        squares = [tf.reduce_sum(tf.reshape(g * g, [tf.shape(g)[0], -1]), axis=1) for g in grads]
        factors = clip_factors(tf.sqrt(tf.add_n(squares)), self.settings.clip_norm, tf)
        return [tf.tensordot(factors, g, axes=1) for g in grads], losses, probs

    def _train_step(
        self, images: Any, labels: Any, loss_weights: Any, seeds: Any, noise_seed: Any, expected_batch: Any
    ) -> tuple[Any, Any]:
        import tensorflow as tf

        for layer in self._prefix:
            images = layer(images, training=True)
        summed, losses, probs = self._clipped_sum(images, labels, loss_weights, seeds)
        noise_seeds = tf.random.experimental.stateless_split(noise_seed, len(summed))
        update = [
            (s + tf.random.stateless_normal(tf.shape(s), seed=noise_seeds[i], stddev=self.settings.noise_std))
            / expected_batch
            for i, s in enumerate(summed)
        ]
        self.model.optimizer.apply(update, self._core.trainable_variables)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.cast(probs > 0.5, tf.float32), labels), tf.int32))
        return tf.reduce_sum(losses), correct
