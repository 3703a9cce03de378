"""BatchNorm for detection training: a fused training path, and statistics for small batches."""

from __future__ import annotations

from collections.abc import Iterable

import keras
from keras import ops

# tf.nn.fused_batch_norm raises smaller epsilons to this value; such layers keep Keras' own path.
_FUSED_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="keras_retinanet")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training-mode step runs TensorFlow's fused kernel (one kernel
    per direction instead of separate ops), with the Keras layer's results and moving-average updates. Every
    other case (inference, frozen, a mask, renorm, another axis or backend) runs the Keras layer's own code.

    Input and output: (B, H, W, C), any float dtype; statistics and parameters stay float32.
    """

    def _use_fused(self, inputs, training, mask) -> bool:
        return (
            bool(training)
            and self.trainable
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.epsilon >= _FUSED_MIN_EPSILON
        )

    def call(self, inputs, training=None, mask=None):
        if not self._use_fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else ops.ones((channels,), "float32")
        offset = self.beta if self.center else ops.zeros((channels,), "float32")
        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, is_training=True
        )
        # The kernel returns the unbiased batch variance; Keras' moving average uses the biased one.
        count = ops.cast(tf.size(inputs) // channels, "float32")
        variance = unbiased_variance * (count - 1.0) / ops.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def recompute_batchnorm_statistics(model: keras.Model, images: Iterable, max_batches: int = 100) -> int:
    """Sets every BatchNorm's moving mean and variance to the exact average over ``images`` (detectron2's
    PreciseBN: a short training leaves the moving averages behind the weights); returns the batches used.

    Args:
        images: iterable of (B, H, W, 3) image batches, or of (images, targets) tuples.
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
