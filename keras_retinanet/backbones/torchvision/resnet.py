"""ResNet laid out exactly as torchvision's ``resnet50`` / ``resnet101``, giving C3, C4, C5.

With its weights copied over (``keras_retinanet.convert.torchvision``) it computes torchvision's function, which
``keras.applications.ResNet50`` cannot: the stride is on the 3x3 conv (v1.5); strided layers pad the same on
each side as PyTorch (``ZeroPadding2D`` then ``"valid"``); no conv biases; BatchNorm epsilon 1e-5, frozen by
default (``FrozenBatchNorm2d``); RGB [0, 255] inputs normalised inside with ImageNet mean / std. Layer names are
torchvision's parameter names with ``.`` as ``_`` (``layer2_0_downsample_1``), so a state dict maps by name.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_retinanet.backbones.batchnorm import FusedBatchNormalization
from keras_retinanet.backbones.normalization import ImageNormalization

# Bottleneck blocks per stage (layer1..layer4), as torchvision's resnet50 / resnet101 / resnet152.
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
TORCH_BATCHNORM_EPSILON = 1e-5
# torchvision's trainable_backbone_layers counts these stages from the top; the rest are frozen.
_STAGES_TOP_DOWN = ("layer4", "layer3", "layer2", "layer1", "conv1")


@keras.saving.register_keras_serializable(package="keras_retinanet")
class FrozenBatchNormalization(keras.layers.Layer):
    """BatchNorm with fixed statistics and affine parameters (torchvision's ``FrozenBatchNorm2d``): no
    trainable weights, ``training`` ignored. (B, H, W, C) -> same, computed in float32."""

    def __init__(self, epsilon: float = TORCH_BATCHNORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = (int(input_shape[-1]),)
        fixed = dict(trainable=False, autocast=False)
        # Keras BatchNormalization's weight names, so that tools which read them recognise the layer.
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma", **fixed)
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta", **fixed)
        self.moving_mean = self.add_weight(shape=channels, initializer="zeros", name="moving_mean", **fixed)
        self.moving_variance = self.add_weight(
            shape=channels, initializer="ones", name="moving_variance", **fixed
        )

    def call(self, inputs, training=None):
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.epsilon)
        offset = self.beta - self.moving_mean * scale
        outputs = ops.cast(inputs, "float32") * scale + offset
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config


def _batchnorm(name: str, frozen: bool, momentum: float, epsilon: float):
    if frozen:
        return FrozenBatchNormalization(epsilon, name=name)
    return FusedBatchNormalization(momentum=momentum, epsilon=epsilon, name=name)


def _conv(x, filters: int, kernel: int, stride: int, name: str):
    """A bias-free convolution padded as PyTorch's ``Conv2d(padding=kernel // 2)``."""
    if stride == 1:
        # For stride 1 Keras' "same" pads (k - 1) / 2 on each side of odd kernels: PyTorch's padding.
        return keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", use_bias=False, name=name)(x)


def _bottleneck(x, width: int, stride: int, name: str, norm: dict):
    """torchvision's ``Bottleneck``: 1x1 (width) -> 3x3 (width, stride) -> 1x1 (4 * width), plus shortcut."""
    out_channels = 4 * width
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = keras.layers.Conv2D(
            out_channels, 1, strides=stride, use_bias=False, name=f"{name}_downsample_0"
        )(x)
        shortcut = _batchnorm(f"{name}_downsample_1", **norm)(shortcut)
    y = _conv(x, width, 1, 1, f"{name}_conv1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(_batchnorm(f"{name}_bn1", **norm)(y))
    y = _conv(y, width, 3, stride, f"{name}_conv2")
    y = keras.layers.ReLU(name=f"{name}_relu2")(_batchnorm(f"{name}_bn2", **norm)(y))
    y = _conv(y, out_channels, 1, 1, f"{name}_conv3")
    y = _batchnorm(f"{name}_bn3", **norm)(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_torchvision_resnet(
    depth: int = 50,
    frozen_batchnorm: bool = True,
    trainable_layers: int = 5,
    batchnorm_momentum: float | None = 0.9,
    batchnorm_epsilon: float = TORCH_BATCHNORM_EPSILON,
    name: str | None = None,
) -> keras.Model:
    """torchvision's ResNet-``depth`` without its classifier, as a Keras model returning [C3, C4, C5].

    Args:
        depth: 50, 101 or 152.
        frozen_batchnorm: :class:`FrozenBatchNormalization` (the default) or a trainable
            ``FusedBatchNormalization`` (torchvision v2's recipe).
        trainable_layers: torchvision's ``trainable_backbone_layers``: how many stages, counted from the top
            (layer4, layer3, layer2, layer1, conv1), train; the others are frozen.
        batchnorm_epsilon: 1e-5 (PyTorch's); torchvision runs its COCO v1 RetinaNet weights with 0.
    Returns:
        A functional ``keras.Model``, random weights: (B, H, W, 3) RGB pixels in [0, 255] -> [C3 (B, H/8, W/8,
        512), C4 (B, H/16, W/16, 1024), C5 (B, H/32, W/32, 2048)] (ceil(H / stride) as PyTorch does).
    """
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"torchvision ResNet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
    if not 0 <= int(trainable_layers) <= 5:
        raise ValueError(f"trainable_layers must be between 0 and 5, got {trainable_layers}")
    norm = dict(
        frozen=bool(frozen_batchnorm),
        momentum=0.9 if batchnorm_momentum is None else float(batchnorm_momentum),
        epsilon=float(batchnorm_epsilon),
    )

    images = keras.Input((None, None, 3), name="images")
    x = ImageNormalization("torch", name="image_normalization")(images)
    x = _conv(x, 64, 7, 2, "conv1")
    x = keras.layers.ReLU(name="relu")(_batchnorm("bn1", **norm)(x))
    # PyTorch pads a max pool with -inf; after the ReLU zero padding gives the same maxima.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)
    features = []
    for stage, blocks in enumerate(RESNET_BLOCKS[depth], start=1):
        width = 64 * 2 ** (stage - 1)
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _bottleneck(x, width, stride, f"layer{stage}_{block}", norm)
        if stage >= 2:
            features.append(x)
    model = keras.Model(images, features, name=name or f"torchvision_resnet{depth}")

    frozen_stages = _STAGES_TOP_DOWN[int(trainable_layers) :]
    for layer in model.layers:
        if layer.name.split("_")[0] in frozen_stages or (layer.name == "bn1" and "conv1" in frozen_stages):
            layer.trainable = False
    return model
