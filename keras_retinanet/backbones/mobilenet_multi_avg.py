"""MobileNet-MultiHW-AVG, the backbone of MediaPipe Model Maker's ``MOBILENET_MULTI_AVG`` object detector.

TF Model Garden's ``MobileNet(model_id="MobileNetMultiAVG")`` (width 1.0) from standard Keras layers only, up
to block 16: with Model Garden's weights (:func:`model_garden_weight_names`) the same function. It maps a
(B, H, W, 3) image, **already normalised**, to the stride-32 features; C3, C4, C5 are the outputs of
:data:`FEATURE_LAYERS` (by name: the expand convs of blocks 7 and 13 still run at strides 8 and 16).

Layer names (``N`` = Model Garden's block 1..16, checkpoint ``backbone/layer_with_weights-N``): the stem
``Conv1``, ``bn_Conv1``, ``Conv1_relu`` (block 0); per block ``block_N_expand`` (``_conv0``),
``block_N_expand_BN`` (``_norm0``), ``block_N_expand_relu``, ``block_N_depthwise`` (``_conv1``),
``block_N_depthwise_BN`` (``_norm1``), ``block_N_depthwise_relu``, ``block_N_project`` (``_conv2``),
``block_N_project_BN`` (``_norm2``) and, where stride 1 keeps the channels, ``block_N_add``. The input layer is
``input``, the output ``block_16_add``.
"""

from __future__ import annotations

import re

import keras
from keras import layers

# Blocks N = 1..16: (kernel size, stride, expand channels, out channels); Model Garden's MNMultiAVG_BLOCK_SPECS.
BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (3, 2, 96, 32),
    (3, 1, 64, 32),
    (5, 2, 160, 64),
    (3, 1, 192, 64),
    (3, 1, 128, 64),
    (3, 1, 192, 64),
    (5, 2, 384, 128),
    (3, 1, 384, 128),
    (3, 1, 384, 128),
    (3, 1, 384, 128),
    (3, 1, 768, 160),
    (3, 1, 640, 160),
    (3, 2, 960, 192),
    (5, 1, 768, 192),
    (5, 1, 768, 192),
    (5, 1, 768, 192),
)

# C3 (stride 8, 64 channels), C4 (16, 160), C5 (32, 192): Model Garden's endpoints '3', '4', '5'.
FEATURE_LAYERS = ("block_6_add", "block_12_add", "block_16_add")

_BATCHNORM_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
_CHECKPOINT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_BACKBONE_KEY = re.compile(r"backbone/layer_with_weights-(\d+)/(_conv|_norm)(\d+)/(\w+)")
# Checkpoint sub-layer index -> this module's layer-name suffix inside an inverted-bottleneck block.
_BLOCK_PARTS = {0: "expand", 1: "depthwise", 2: "project"}


def _batchnorm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)


def _inverted_bottleneck(x, index: int, kernel_size: int, strides: int, expand: int, filters: int):
    """Model Garden's ``InvertedBottleneckBlock`` (ReLU, no SE): (B, H, W, C) -> (B, H / s, W / s, filters)."""
    prefix = f"block_{index}"
    y = layers.Conv2D(expand, 1, padding="same", use_bias=False, name=f"{prefix}_expand")(x)
    y = _batchnorm(f"{prefix}_expand_BN")(y)
    y = layers.ReLU(name=f"{prefix}_expand_relu")(y)
    y = layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding="same", use_bias=False, name=f"{prefix}_depthwise"
    )(y)
    y = _batchnorm(f"{prefix}_depthwise_BN")(y)
    y = layers.ReLU(name=f"{prefix}_depthwise_relu")(y)
    y = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{prefix}_project")(y)
    y = _batchnorm(f"{prefix}_project_BN")(y)
    if strides == 1 and x.shape[-1] == filters:
        y = layers.Add(name=f"{prefix}_add")([x, y])
    return y


def build_mobilenet_multi_avg(
    input_shape: tuple[int | None, int | None, int] = (None, None, 3), name: str = "mobilenet_multi_avg"
) -> keras.Model:
    """Builds MobileNet-MultiHW-AVG (width 1.0) up to block 16, with random weights.

    Args:
        input_shape: (H, W, 3) of one image, ``None`` for any size. Feature map sizes are ``ceil(H / stride)``.
        name: the model's name.
    Returns:
        A functional ``keras.Model``: (B, H, W, 3) float, already normalised -> (B, H/32, W/32, 192); the
        stride-8 (64 channels) and stride-16 (160) features are the outputs of :data:`FEATURE_LAYERS`.
    """
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3), got {input_shape}")
    inputs = keras.Input(tuple(input_shape), name="input")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = _batchnorm("bn_Conv1")(x)
    x = layers.ReLU(name="Conv1_relu")(x)
    for index, (kernel_size, strides, expand, filters) in enumerate(BLOCKS, start=1):
        x = _inverted_bottleneck(x, index, kernel_size, strides, expand, filters)
    return keras.Model(inputs, x, name=name)


def model_garden_weight_names(checkpoint_key: str) -> str | None:
    """The weight of :func:`build_mobilenet_multi_avg`'s model that a Model Garden checkpoint variable fills.

    Args:
        checkpoint_key: ``backbone/layer_with_weights-N/<sub-layer>/<weight>``, with or without the
            ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix.
    Returns:
        The Keras variable's ``path`` (``"block_3_depthwise/kernel"``); ``None`` for keys outside the backbone,
        optimizer slots and the unused blocks 17-18.
    Raises:
        ValueError: a ``backbone/`` key this backbone does not have (a checkpoint of another architecture).
    """
    if not checkpoint_key.startswith("backbone/") or "/.OPTIMIZER_SLOT/" in checkpoint_key:
        return None
    key = checkpoint_key.removesuffix(_CHECKPOINT_SUFFIX)
    match = _BACKBONE_KEY.fullmatch(key)
    if not match:
        raise ValueError(f"not a MobileNet-MultiAVG backbone variable: {checkpoint_key!r}")
    block, kind, part, weight = int(match[1]), match[2], int(match[3]), match[4]
    if block in (17, 18):  # after the last FPN level: not in this model
        return None
    if block > len(BLOCKS) or (block == 0 and part != 0) or part not in _BLOCK_PARTS:
        raise ValueError(f"not a MobileNet-MultiAVG backbone variable: {checkpoint_key!r}")
    if block == 0:
        layer = "Conv1" if kind == "_conv" else "bn_Conv1"
    else:
        layer = f"block_{block}_{_BLOCK_PARTS[part]}" + ("_BN" if kind == "_norm" else "")
    expected = _BATCHNORM_WEIGHTS if kind == "_norm" else ("depthwise_kernel",) if part == 1 else ("kernel",)
    if weight not in expected:
        raise ValueError(f"not a MobileNet-MultiAVG backbone variable: {checkpoint_key!r}")
    # Keras 3's DepthwiseConv2D calls its kernel "kernel" (tf_keras: "depthwise_kernel").
    return f"{layer}/{'kernel' if weight == 'depthwise_kernel' else weight}"
