"""The feature pyramid network (Lin et al. 2017) with RetinaNet's extra levels P6 and P7."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_retinanet")
class FeaturePyramid(keras.layers.Layer):
    """C3, C4, C5 -> P3, P4, P5, P6, P7, all with ``channels`` channels.

    P5..P3: 1x1 lateral convs plus nearest-neighbour upsampled coarser levels, then a 3x3 conv. P6: 3x3
    stride-2 conv on C5 (paper, torchvision v2) or on P5 (torchvision v1). P7: 3x3 stride-2 conv on act(P6).

    Args:
        padding: of the stride-2 P6 and P7 convs: ``"same"`` (Keras: on even sizes none before, one after) or
            ``"symmetric"`` (PyTorch's ``padding=1``: one on each side).
        separable: ``SeparableConv2D`` everywhere (TF Model Garden's mobile FPN, the laterals too).
        batchnorm: a BatchNorm (epsilon 1e-3) on each output level; P6, P7 come from the levels before it.
        activation: ``"relu"`` or ``"relu6"``, applied to P6 before the P7 conv.

    Call arguments:
        features: [C3, C4, C5], (B, Hl, Wl, Cl) each, strides 8, 16, 32.
    Returns:
        [P3, P4, P5, P6, P7], (B, Hl, Wl, channels) each, strides 8 to 128, for any input size.
    """

    def __init__(
        self,
        channels: int = 256,
        p6_source: str = "c5",
        padding: str = "same",
        separable: bool = False,
        batchnorm: bool = False,
        activation: str = "relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if p6_source not in ("c5", "p5"):
            raise ValueError(f"p6_source must be 'c5' or 'p5', got {p6_source!r}")
        if padding not in ("same", "symmetric"):
            raise ValueError(f"FeaturePyramid padding must be 'same' or 'symmetric', got {padding!r}")
        self.channels = int(channels)
        self.p6_source = p6_source
        self.padding = padding
        self.separable = bool(separable)
        self.batchnorm = bool(batchnorm)
        self.activation = check_activation(activation)
        strided_padding = "same" if padding == "same" else "valid"  # "symmetric" pads in call()

        def conv(kernel_size: int, name: str, **options) -> keras.layers.Layer:
            return make_conv(self.separable, channels, kernel_size, "he_uniform", name=name, **options)

        self.lateral = [conv(1, f"lateral_c{i}") for i in (3, 4, 5)]
        self.output_convs = [conv(3, f"output_p{i}", padding="same") for i in (3, 4, 5)]
        self.p6_conv = conv(3, "p6", strides=2, padding=strided_padding)
        self.p7_conv = conv(3, "p7", strides=2, padding=strided_padding)
        self.norms = (
            [keras.layers.BatchNormalization(epsilon=1e-3, name=f"norm_p{i}") for i in range(3, 8)]
            if self.batchnorm
            else []
        )

    def build(self, input_shape):
        for layer, shape in zip(self.lateral, input_shape):
            layer.build(shape)
        for layer in self.output_convs:
            layer.build((None, None, None, self.channels))
        c5_channels = input_shape[2][-1] if self.p6_source == "c5" else self.channels
        self.p6_conv.build((None, None, None, c5_channels))
        self.p7_conv.build((None, None, None, self.channels))
        for norm in self.norms:
            norm.build((None, None, None, self.channels))

    @staticmethod
    def _upsample_to(coarse, fine):
        upsampled = ops.repeat(ops.repeat(coarse, 2, axis=1), 2, axis=2)
        shape = ops.shape(fine)
        return upsampled[:, : shape[1], : shape[2], :]

    def call(self, features):
        c3, c4, c5 = features
        m5 = self.lateral[2](c5)
        m4 = self.lateral[1](c4) + self._upsample_to(m5, c4)
        m3 = self.lateral[0](c3) + self._upsample_to(m4, c3)
        p3, p4, p5 = (conv(m) for conv, m in zip(self.output_convs, (m3, m4, m5)))
        p6 = self.p6_conv(self._pad(c5 if self.p6_source == "c5" else p5))
        p7 = self.p7_conv(self._pad(activate(p6, self.activation)))
        levels = [p3, p4, p5, p6, p7]
        if self.norms:
            levels = [norm(level) for norm, level in zip(self.norms, levels)]
        return levels

    def _pad(self, x):
        if self.padding == "same":
            return x
        return ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])

    def compute_output_shape(self, input_shape):
        batch = input_shape[0][0]
        return [(batch, None, None, self.channels)] * 5

    def get_config(self) -> dict:
        config = super().get_config()
        names = ("channels", "p6_source", "padding", "separable", "batchnorm", "activation")
        return {**config, **{name: getattr(self, name) for name in names}}


ACTIVATIONS = ("relu", "relu6")


def make_conv(separable: bool, filters: int, kernel_size: int, initializer, **options) -> keras.layers.Layer:
    """A ``Conv2D``, or a ``SeparableConv2D`` (depth multiplier 1) with ``initializer`` for both kernels."""
    if separable:
        return keras.layers.SeparableConv2D(
            filters,
            kernel_size,
            depthwise_initializer=initializer,
            pointwise_initializer=initializer,
            **options,
        )
    return keras.layers.Conv2D(filters, kernel_size, kernel_initializer=initializer, **options)


def check_activation(name: str) -> str:
    """``name`` if it is one of :data:`ACTIVATIONS`, else a ``ValueError``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return name


def activate(x, name: str):
    """ReLU, or ReLU6 (``min(max(x, 0), 6)``, MobileNet's)."""
    return ops.relu6(x) if name == "relu6" else ops.relu(x)
