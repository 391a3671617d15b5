"""The study's CNN for NORMAL/PNEUMONIA chest X-rays; the only module that imports Keras."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    import keras

#: (filters, dropout after the convolution) for the five convolution blocks of the study.
CONV_BLOCKS: tuple[tuple[int, float], ...] = ((32, 0.0), (64, 0.1), (64, 0.0), (128, 0.2), (256, 0.2))
DENSE_UNITS = 128
OPTIMIZERS = ("rmsprop", "adam", "sgd")
Normalization = Literal["batchnorm", "groupnorm"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)
#: Groups of every GroupNorm layer: 8 divides each block's filters (32..256, 4 to 32 channels a group). Wu & He
#: (ECCV 2018) found 8 to 32 groups within ~0.5 points of each other; 32 would make the first block instance
#: normalisation (one channel a group), which they found clearly worse.
GROUPNORM_GROUPS = 8
#: Training-time augmentation for chest radiographs: small rotations, shifts and zooms, no flips (the heart is
#: on the left; a mirrored film is a different image). The layers hold no weights and are identity at inference.
ROTATION_DEGREES = 5.0
SHIFT_FRACTION = 0.05
ZOOM_FRACTION = 0.1


def block_paddings(image_size: int) -> list[tuple[str, str]]:
    """(conv, pool) padding per block: ``valid`` as in the study while the map stays >= 1x1.

    At 150x150 every block is ``valid`` (150 → 2x2 before Flatten). Small inputs (28, 32, 64)
    would shrink below 1x1, so those blocks switch to ``same`` padding, which keeps the layer
    stack and parameter shapes of the study and only changes the border handling.
    """
    paddings = []
    size = image_size
    for _ in CONV_BLOCKS:
        conv = "valid" if size - 2 >= 2 else "same"
        size = size - 2 if conv == "valid" else size
        pool = "valid" if size >= 2 else "same"
        size = size // 2 if pool == "valid" else size
        paddings.append((conv, pool))
    return paddings


def augmentation_layers() -> list[Any]:
    """Random rotation, shift and zoom, filling with black like the film's border."""
    from keras import layers

    return [
        layers.RandomRotation(ROTATION_DEGREES / 360, fill_mode="constant"),
        layers.RandomTranslation(SHIFT_FRACTION, SHIFT_FRACTION, fill_mode="constant"),
        layers.RandomZoom(ZOOM_FRACTION, fill_mode="constant"),
    ]


def build_cnn(image_size: int, augment: bool = False, normalization: Normalization = "batchnorm") -> keras.Model:
    """Conv2D 32-64-64-128-256 with BatchNorm, MaxPool and Dropout, Dense 128, sigmoid.

    ``augment`` puts the augmentation layers first; they have no weights, so the weight list is the same.
    ``normalization="groupnorm"`` puts GroupNorm (``GROUPNORM_GROUPS`` groups) in place of every BatchNorm, the only
    change to the study's CNN: BatchNorm mixes the examples of a batch, so one example's gradient depends on the
    others and per-example clipping (DP-SGD) no longer bounds its influence; GroupNorm normalises each example on
    its own and keeps no moving statistics (Opacus makes the same swap). Raises ValueError for another name.
    """
    import keras
    from keras import layers

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; allowed: {', '.join(NORMALIZATIONS)}")

    model_layers: list[Any] = [keras.Input((image_size, image_size, 1))]
    if augment:
        model_layers += augmentation_layers()
    for (filters, dropout), (conv_pad, pool_pad) in zip(CONV_BLOCKS, block_paddings(image_size), strict=True):
        model_layers.append(layers.Conv2D(filters, 3, padding=conv_pad, activation="relu"))
        if dropout:
            model_layers.append(layers.Dropout(dropout))
        if normalization == "groupnorm":
            model_layers.append(layers.GroupNormalization(GROUPNORM_GROUPS))
        else:
            model_layers.append(layers.BatchNormalization())
        model_layers.append(layers.MaxPooling2D(2, strides=2, padding=pool_pad))
    model_layers += [
        layers.Flatten(),
        layers.Dense(DENSE_UNITS, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(1, activation="sigmoid"),
    ]
    return keras.Sequential(model_layers, name="study_cnn")


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    import keras

    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")


def compiled_cnn(
    image_size: int,
    optimizer: str,
    learning_rate: float,
    augment: bool = False,
    normalization: Normalization = "batchnorm",
) -> keras.Model:
    """The CNN compiled with binary cross-entropy, ready for ``fit``."""
    model = build_cnn(image_size, augment, normalization)
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def recalibrate_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int = 128) -> None:
    """Replace every BatchNorm layer's moving statistics with their average over ``images``; no-op without BatchNorm.

    Keras' default momentum of 0.99 lets the moving statistics trail the weights by ~100 steps;
    with this CNN their variance starts at 1.0 against a true ~1e-3, so a freshly trained model
    predicts one class in inference mode, and FedAvg averages those stale statistics too.
    Recomputing them for the final weights ("precise BN", Wu & Johnson, 2021) fixes both.
    Layers run one by one, BatchNorm in training mode and every other layer (Dropout, augmentation) in
    inference mode, so the statistics match inference; each batch enters a cumulative average
    (momentum (i-1)/i).
    """
    from keras import layers

    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    if not bns:  # the GroupNorm model: nothing to recalibrate
        return
    saved_momentum = [bn.momentum for bn in bns]
    try:
        for i, start in enumerate(range(0, len(images), batch_size)):
            for bn in bns:
                bn.momentum = i / (i + 1)
            x = images[start : start + batch_size]
            for layer in model.layers:
                x = layer(x, training=isinstance(layer, layers.BatchNormalization))
    finally:
        for bn, momentum in zip(bns, saved_momentum, strict=True):
            bn.momentum = momentum
