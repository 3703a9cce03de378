"""The layer that brings RGB pixels to what a backbone's ImageNet weights expect."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_retinanet")
class ImageNormalization(keras.layers.Layer):
    """Maps RGB pixels in [0, 255] to what a backbone's ImageNet weights expect.

    Modes: ``"caffe"`` (RGB -> BGR, minus the ImageNet mean; ResNet v1), ``"tf"`` (to [-1, 1]; MobileNetV2,
    ResNet v2), ``"torch"`` (``(x / 255 - mean) / std``, ImageNet's, torchvision's models), ``"none"``.
    """

    def __init__(self, mode: str = "none", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch", "none"):
            raise ValueError(
                f"ImageNormalization mode must be 'caffe', 'tf', 'torch' or 'none', got {mode!r}"
            )
        self.mode = mode

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            mean = ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=self.compute_dtype)
            return ops.flip(images, axis=-1) - mean
        if self.mode == "tf":
            return images / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor([0.485, 0.456, 0.406], dtype=self.compute_dtype)
            std = ops.convert_to_tensor([0.229, 0.224, 0.225], dtype=self.compute_dtype)
            return (images / 255.0 - mean) / std
        return images

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(mode=self.mode)
        return config
