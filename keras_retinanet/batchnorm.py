"""BatchNorm helpers for detection training with small batches."""

from __future__ import annotations

from collections.abc import Iterable

import keras


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def recompute_batchnorm_statistics(model: keras.Model, images: Iterable, max_batches: int = 100) -> int:
    """Sets every BatchNorm's moving mean and variance to the exact average over ``images`` (detectron2's PreciseBN).

    A short or small-batch training leaves the moving averages (momentum 0.99) far from the statistics the
    trained weights produce, so inference-mode outputs lag behind training-mode ones. This runs forward passes
    in training mode with a momentum that makes the moving values a cumulative mean, then restores the layers.

    Args:
        model: any Keras model.
        images: iterable of (B, H, W, 3) image batches, or of (images, targets) tuples.
        max_batches: batches to average over.
    Returns:
        The number of batches used.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    count = 0
    try:
        for count, batch in enumerate(images, start=1):
            if count > max_batches:
                count -= 1
                break
            batch = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                # moving = m * moving + (1 - m) * batch with m = (n - 1) / n keeps the mean of n batches.
                layer.momentum = (count - 1) / count
            model(batch, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return count
