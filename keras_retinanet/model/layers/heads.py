"""RetinaNet's classification and box subnets, shared over pyramid levels."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_retinanet.model.layers.feature_pyramid import activate, check_activation, make_conv


class _SharedHead(keras.layers.Layer):
    """``depth`` x (3x3 conv, ``channels``, [norm], activation), then a 3x3 conv to A * ``outputs_per_anchor``.

    The same convs run on every level; weights ~ N(0, 0.01), biases 0 except the last (``final_bias``).
    GroupNorm has min(32, ``channels``) groups (torchvision v2's); ``batchnorm_per_level`` instead puts a
    BatchNorm (epsilon 1e-3) per level after each conv (TF Model Garden); ``separable``: every conv
    depthwise-separable.

    Call arguments:
        features: [P3, ..., P7], (B, Hl, Wl, C) each.
    Returns:
        (B, N, outputs_per_anchor) float32, N = sum of Hl * Wl * A, in the anchor generator's order.
    """

    outputs_per_anchor: int

    def __init__(
        self,
        num_anchors: int = 9,
        depth: int = 4,
        channels: int = 256,
        use_group_norm: bool = False,
        group_norm_epsilon: float = 1e-5,
        batchnorm_per_level: bool = False,
        separable: bool = False,
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if use_group_norm and batchnorm_per_level:
            raise ValueError("a head takes GroupNorm (use_group_norm) or BatchNorm per level, not both")
        self.num_anchors = int(num_anchors)
        self.depth = int(depth)
        self.channels = int(channels)
        self.use_group_norm = bool(use_group_norm)
        self.group_norm_epsilon = float(group_norm_epsilon)
        self.batchnorm_per_level = bool(batchnorm_per_level)
        self.separable = bool(separable)
        self.activation = check_activation(activation)
        init = keras.initializers.RandomNormal(stddev=0.01)

        def conv(filters: int, name: str, **options) -> keras.layers.Layer:
            return make_conv(self.separable, filters, 3, init, padding="same", name=name, **options)

        self.convs = []
        for i in range(self.depth):
            self.convs.append(conv(channels, f"conv{i}"))
            if self.use_group_norm:
                self.convs.append(
                    keras.layers.GroupNormalization(
                        groups=min(32, channels), epsilon=self.group_norm_epsilon, name=f"norm{i}"
                    )
                )
            if not self.batchnorm_per_level:  # there the BatchNorm of the level comes first (call)
                self.convs.append(
                    keras.layers.ReLU(6.0 if self.activation == "relu6" else None, name=f"relu{i}")
                )
        # One BatchNorm per level and conv, level-major: created in build, when the number of levels is known.
        self.level_norms: list[keras.layers.BatchNormalization] = []
        self.final = conv(
            self.num_anchors * self.outputs_per_anchor,
            "final",
            bias_initializer=keras.initializers.Constant(self.final_bias()),
        )

    def final_bias(self) -> float:
        return 0.0

    def build(self, input_shape):
        shape = input_shape[0]
        for layer in self.convs:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.final.build(shape)
        if self.batchnorm_per_level:
            self.level_norms = [
                keras.layers.BatchNormalization(epsilon=1e-3, name=f"norm{i}_p{level + 3}")
                for level in range(len(input_shape))
                for i in range(self.depth)
            ]
            for norm in self.level_norms:
                norm.build((None, None, None, self.channels))

    def call(self, features):
        outputs = []
        for level, feature in enumerate(features):
            x = feature
            if self.batchnorm_per_level:
                norms = self.level_norms[level * self.depth : (level + 1) * self.depth]
                for conv, norm in zip(self.convs, norms, strict=True):
                    x = activate(norm(conv(x)), self.activation)
            else:
                for layer in self.convs:
                    x = layer(x)
            x = self.final(x)
            outputs.append(ops.reshape(x, (ops.shape(x)[0], -1, self.outputs_per_anchor)))
        return ops.cast(ops.concatenate(outputs, axis=1), "float32")

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], None, self.outputs_per_anchor)

    def get_config(self) -> dict:
        config = super().get_config()
        names = ("num_anchors", "depth", "channels", "use_group_norm", "group_norm_epsilon")
        names += ("batchnorm_per_level", "separable", "activation")
        return {**config, **{name: getattr(self, name) for name in names}}


@keras.saving.register_keras_serializable(package="keras_retinanet")
class ClassificationHead(_SharedHead):
    """Classification subnet: (B, N, num_classes) logits, starting at foreground probability
    ``prior_probability`` (so the many easy negatives do not swamp the first steps)."""

    def __init__(self, num_classes: int, prior_probability: float = 0.01, **kwargs):
        self.num_classes = int(num_classes)
        self.outputs_per_anchor = self.num_classes
        self.prior_probability = float(prior_probability)
        super().__init__(**kwargs)

    def final_bias(self) -> float:
        return -math.log((1.0 - self.prior_probability) / self.prior_probability)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(num_classes=self.num_classes, prior_probability=self.prior_probability)
        return config


@keras.saving.register_keras_serializable(package="keras_retinanet")
class BoxHead(_SharedHead):
    """Box regression subnet: (B, N, 4) deltas (dx, dy, dw, dh) relative to the anchors."""

    outputs_per_anchor = 4
