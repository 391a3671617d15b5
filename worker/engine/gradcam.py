"""Grad-CAM (Selvaraju et al., 2017) of a chain of Keras layers, with the backend's own gradient; Keras is lazy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import keras

#: Smallest class-activation map, in cells per side, that can place a finding. The study's CNN ends in a 5x5
#: map at 150 px and a 2x2 or 1x1 one at 64 or 32 px: too coarse to tell a lung opacity from a corner marker.
MIN_MAP = 8


def target_layer(model: keras.Model) -> int:
    """Position in ``model.layers`` of the convolution to explain: the last Conv2D whose map is >= MIN_MAP cells.

    Grad-CAM uses the last convolution, whose features are the most class-specific while still spatial
    (Selvaraju et al., 2017). This CNN pools its maps down to a few cells, so the last convolution that
    still has MIN_MAP cells per side is used: the fourth of five at 150 px (15x15), the third at 64 px (12x12).
    With the 4x4 map at 64 px the peak of an opacity's heat missed it by ~17 px (median), with 12x12 by ~5.
    """
    import keras

    convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no Conv2D layer to explain")
    large = [i for i in convs if min(model.layers[i].output.shape[1:3]) >= MIN_MAP]
    return large[-1] if large else convs[0]


def class_activation_maps(features: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """ReLU(sum_k alpha_k A^k) per image, where alpha_k is the spatial mean of d score / d A^k.

    ``features`` and ``gradients`` are (N, h, w, K): the maps A^k and their gradients; alpha_k is the
    neuron-importance weight of Selvaraju et al. (2017), eq. 1-2.
    """
    weights = gradients.mean(axis=(1, 2))
    cams: np.ndarray = np.maximum(np.einsum("nhwk,nk->nhw", features, weights), 0.0).astype(np.float32)
    return cams


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) maps to (N, size, size) by bilinear interpolation, as Grad-CAM lays a map over its image."""
    bilinear = Image.Resampling.BILINEAR
    resized = [np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((size, size), bilinear)) for m in maps]
    return np.stack(resized) if resized else np.zeros((0, size, size), np.float32)


def scaled(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum, so 1 is the hottest place; all zeros where nothing speaks for the class."""
    peaks = maps.max(axis=(1, 2), keepdims=True)
    out: np.ndarray = np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)
    return out


def _run(layers: Sequence[Any], x: Any) -> Any:
    for layer in layers:
        x = layer(x, training=False)
    return x


def _logit(model: keras.Model, first: int) -> Callable[[Any], Any]:
    """Layers ``first:`` of the model up to the pre-activation of its sigmoid output unit.

    The logit, not the probability: a confident prediction saturates the sigmoid and its gradient vanishes.
    """
    import keras

    *inner, last = model.layers[first:]
    if not isinstance(last, keras.layers.Dense) or last.units != 1 or last.activation is not keras.activations.sigmoid:
        raise ValueError(f"model {model.name!r} does not end in one sigmoid unit")

    def logit(features: Any) -> Any:
        hidden = _run(inner, features)
        return keras.ops.reshape(keras.ops.matmul(hidden, last.kernel) + last.bias, (-1,))

    return logit


def backend_gradient(fn: Callable[[Any], Any], x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """d sum_i(signs_i fn(x)_i) / dx with the gradient function of Keras' backend (TensorFlow or JAX).

    Each image's score depends on its own row only (inference mode), so one gradient of the sum gives
    every image's gradient at once.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensor = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            total = tf.reduce_sum(fn(tensor) * signs)
        return np.asarray(tape.gradient(total, tensor))
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        return np.asarray(jax.grad(lambda v: jnp.sum(fn(v) * signs))(jnp.asarray(x)))
    raise ValueError(f"Grad-CAM needs the tensorflow or jax backend of Keras, not {backend!r}")


def grad_cam(model: keras.Model, images: np.ndarray, classes: np.ndarray, layer: int | None = None) -> np.ndarray:
    """Heat maps (N, H, W) in [0, 1] of where the model sees evidence for ``classes`` (1 PNEUMONIA, 0 NORMAL).

    The score of class 1 is the output logit z, that of class 0 is -z (the logit of 1 - p). ``model`` is
    a chain of layers (the study's keras.Sequential) with its weights set; ``layer`` defaults to
    ``target_layer(model)``.
    """
    split = target_layer(model) if layer is None else layer
    x = images[..., None] if images.ndim == 3 else images
    features = np.asarray(_run(model.layers[: split + 1], x.astype(np.float32)))
    signs = np.where(np.asarray(classes) == 1, 1.0, -1.0).astype(np.float32)
    gradients = backend_gradient(_logit(model, split + 1), features, signs)
    return scaled(upsample(class_activation_maps(features, gradients), x.shape[1]))
