"""DP-SGD's per-example part on Keras's JAX backend: ``jax.vmap`` of ``jax.grad`` over ``stateless_call``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from worker.engine.privacy.dpsgd import DpSgdSettings, clip_factors

if TYPE_CHECKING:
    import keras

#: examples per compiled call. One DP epoch of 128 images at 28 px, batch 32, 2 CPUs: chunk 8 0.50 s, 16 0.61 s,
#: 32 0.66 s (batch 16: 0.66, 0.73, 0.97 s); bigger chunks pad more. Not measured on a GPU, where more may pay.
CHUNK = 8


class JaxDpSgd:
    """DP-SGD on JAX, compiled once for any batch size.

    ``jax.jit`` compiles once per input shape, and Poisson batches vary in size. So a batch goes through in chunks
    of ``chunk`` examples, each one compiled call that augments it, takes its per-example gradients, clips them and
    adds them to the running sum; the last chunk is padded with zero images of loss weight 0, whose gradient is 0
    (clip factor 1), so they add nothing. A second compiled call adds the noise and applies the optimizer's
    ``stateless_apply``; the new values are then assigned to the model's variables. An empty batch is no chunk:
    the sum is 0 and the noise and the step still happen, as the privacy accounting assumes. Building and compiling
    the step took 10-16 s here (28 px, 2 CPUs; TensorFlow ~2.5 s): compiling per batch size would pay most of that
    again for each new size, and a batch of 32 drawn by Poisson sampling takes some 20 sizes.
    """

    def __init__(
        self,
        model: keras.Model,
        prefix: list[Any],
        core: keras.Model,
        settings: DpSgdSettings,
        chunk: int = CHUNK,
    ) -> None:
        import jax
        import keras

        self.model = model
        self.settings = settings
        self.chunk = chunk
        self._core = core
        #: the seed states of the core's dropout layers: each example gets its own values
        self._seed_states = core.non_trainable_variables
        self._seed_dtype = self._seed_states[0].dtype if self._seed_states else "uint32"
        self._augmentation: keras.Model | None = None
        if prefix:
            inputs = keras.Input(model.input_shape[1:])
            outputs = inputs
            for layer in prefix:
                outputs = layer(outputs)
            self._augmentation = keras.Model(inputs, outputs)
        self._gradients = jax.jit(self._per_example)
        self._clipped = jax.jit(self._clip_and_add)
        self._chunk = jax.jit(self._augment_clip_and_add)
        self._update = jax.jit(self._noisy_update)

    def per_example_gradients(
        self, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray, seeds: np.ndarray
    ) -> list[np.ndarray]:
        grads, _, _ = self._gradients(self._trainable(), *self._inputs(images, labels, loss_weights, seeds))
        return [np.asarray(g) for g in grads]

    def clipped_sum(
        self, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray, seeds: np.ndarray
    ) -> list[np.ndarray]:
        inputs = self._inputs(images, labels, loss_weights, seeds)
        summed, _, _ = self._clipped(self._trainable(), self._zeros(), *inputs)
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
        trainable = self._trainable()
        augmentation = [v.value for v in self._augmentation.non_trainable_variables] if self._augmentation else []
        summed = self._zeros()
        losses, probs = [], []
        for start in range(0, examples, self.chunk):
            take = slice(start, start + self.chunk)
            seeds = rng.integers(0, 2**31, (self.chunk, len(self._seed_states), 2))
            x, y, w = (self._pad(a[take]) for a in (images, labels, loss_weights))
            padded = self._inputs(x, y, w, seeds)
            summed, augmentation, chunk_losses, chunk_probs = self._chunk(trainable, augmentation, summed, *padded)
            losses.append(chunk_losses)
            probs.append(chunk_probs)
        optimizer = self.model.optimizer
        key = rng.integers(0, 2**32, 2, dtype=np.uint32)
        new_trainable, new_optimizer = self._update(
            trainable, [v.value for v in optimizer.variables], summed, key, np.float32(expected_batch)
        )
        for variable, value in zip(self._core.trainable_variables, new_trainable, strict=True):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, new_optimizer, strict=True):
            variable.assign(value)
        if self._augmentation:
            for variable, value in zip(self._augmentation.non_trainable_variables, augmentation, strict=True):
                variable.assign(value)
        if not examples:
            return 0.0, 0
        loss = np.concatenate([np.asarray(x) for x in losses])[:examples]
        prob = np.concatenate([np.asarray(x) for x in probs])[:examples]
        return float(loss.sum()), int(np.sum((prob > 0.5).astype(np.float32) == labels))

    def _trainable(self) -> list[Any]:
        return [v.value for v in self._core.trainable_variables]

    def _zeros(self) -> list[np.ndarray]:
        return [np.zeros(v.shape, v.dtype) for v in self._core.trainable_variables]

    def _pad(self, array: np.ndarray) -> np.ndarray:
        """``array`` with zeros appended along the batch axis up to ``chunk`` rows."""
        return np.concatenate([array, np.zeros((self.chunk - len(array), *array.shape[1:]), array.dtype)])

    def _inputs(
        self, images: np.ndarray, labels: np.ndarray, loss_weights: np.ndarray, seeds: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        floats = (np.asarray(a, np.float32) for a in (images, labels, loss_weights))
        return (*floats, np.asarray(seeds).astype(self._seed_dtype))

    def _per_example(
        self, trainable: list[Any], images: Any, labels: Any, loss_weights: Any, seeds: Any
    ) -> tuple[list[Any], Any, Any]:
        """Per-example gradients, losses and probabilities: the batch dimension is vmapped, the weights shared."""
        import jax
        import keras

        def loss(params: list[Any], image: Any, label: Any, weight: Any, seed: Any) -> tuple[Any, tuple[Any, Any]]:
            prob, _ = self._core.stateless_call(params, list(seed), image[None], training=True)
            value = weight * keras.losses.binary_crossentropy(label[None, None], prob)[0]
            return value, (value, prob[0, 0])

        one = jax.grad(loss, has_aux=True)
        grads, (losses, probs) = jax.vmap(one, in_axes=(None, 0, 0, 0, 0))(
            trainable, images, labels, loss_weights, seeds
        )
        return grads, losses, probs

    def _clip_and_add(
        self, trainable: list[Any], summed: list[Any], images: Any, labels: Any, loss_weights: Any, seeds: Any
    ) -> tuple[list[Any], Any, Any]:
        import jax.numpy as jnp

        grads, losses, probs = self._per_example(trainable, images, labels, loss_weights, seeds)
        norms = jnp.sqrt(sum(jnp.sum(jnp.reshape(g * g, (g.shape[0], -1)), axis=1) for g in grads))
        factors = clip_factors(norms, self.settings.clip_norm, jnp)
        return [s + jnp.tensordot(factors, g, axes=1) for s, g in zip(summed, grads, strict=True)], losses, probs

    def _augment_clip_and_add(
        self,
        trainable: list[Any],
        augmentation: list[Any],
        summed: list[Any],
        images: Any,
        labels: Any,
        loss_weights: Any,
        seeds: Any,
    ) -> tuple[list[Any], list[Any], Any, Any]:
        """Augment the chunk (its seed states in, the advanced ones out), then clip and add its gradients."""
        if self._augmentation:
            images, augmentation = self._augmentation.stateless_call([], augmentation, images, training=True)
        summed, losses, probs = self._clip_and_add(trainable, summed, images, labels, loss_weights, seeds)
        return summed, augmentation, losses, probs

    def _noisy_update(
        self, trainable: list[Any], optimizer: list[Any], summed: list[Any], key: Any, expected_batch: Any
    ) -> tuple[list[Any], list[Any]]:
        """(sum + N(0, (z C)^2)) / expected batch, applied by the optimizer: the new weights and optimizer state."""
        import jax

        keys = jax.random.split(jax.random.wrap_key_data(key), len(summed))
        update = [
            (s + self.settings.noise_std * jax.random.normal(k, s.shape, s.dtype)) / expected_batch
            for s, k in zip(summed, keys, strict=True)
        ]
        new_trainable, new_optimizer = self.model.optimizer.stateless_apply(optimizer, update, trainable)
        return list(new_trainable), list(new_optimizer)
