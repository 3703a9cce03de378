"""MobileNet-MultiHW-AVG, the backbone of MediaPipe Model Maker's ``MOBILENET_MULTI_AVG`` object detector.

A Keras 3 functional re-implementation of TF Model Garden's ``MobileNet(model_id="MobileNetMultiAVG")``
(``official/vision/modeling/backbones/mobilenet.py``, ``MNMultiAVG_BLOCK_SPECS``, width multiplier 1.0), built
from standard Keras layers only (``.keras`` files load with no custom objects), in the style of
``keras.applications.MobileNetV2``: it maps a (B, H, W, 3) float image, **already normalised** (no
preprocessing inside: Model Garden's COCO checkpoints expect ImageNet mean/std on x / 255, Model Maker's
fine-tuned models x / 127.5 - 1) to the stride-32 features, and the stride-8 and stride-16 features are the
outputs of the layers named in :data:`FEATURE_LAYERS`. With Model Garden's weights (see
:func:`model_garden_weight_names`) it computes the same function as Model Garden's backbone.

Architecture, as in Model Garden:

- a stem conv (3x3, stride 2) + BatchNorm + ReLU, then 16 inverted-bottleneck blocks: 1x1 expand conv + BN +
  ReLU, k x k depthwise conv (stride s, depth multiplier 1) + BN + ReLU, 1x1 project conv + BN with no
  activation, plus a residual ``Add`` of the block input when the stride is 1 and the channel count does not
  change;
- every conv has no bias and ``padding="same"`` (with the TensorFlow backend this is TF's SAME, which Model
  Garden uses: an even-sized input is padded one pixel less at the top/left than at the bottom/right, e.g. 1
  and 2 for the 5x5 stride-2 depthwise convs of blocks 3 and 7);
- activation plain ReLU throughout (not ReLU6; MobileNetV2 uses ReLU6);
- every BatchNorm has epsilon 1e-3 and momentum 0.99 (Model Garden's ``norm_epsilon`` / ``norm_momentum``);
- no squeeze-excite, no stochastic depth.

Model Garden's network goes on after block 16 with a 1x1 conv to 960 channels (+ BN + ReLU, checkpoint block
17), global average pooling and a 1x1 conv to 1280 (block 18). RetinaNet's FPN only reads levels 3-5, so those
layers are not part of this model, and their checkpoint variables are ignored.

Layer names (``N`` = Model Garden's block index 1..16, i.e. the checkpoint's ``backbone/layer_with_weights-N``):

=================================  ==========================================================================
layer                              what it is
=================================  ==========================================================================
``Conv1``                          Conv2D 3x3, stride 2, 32 filters, ``same``, no bias (checkpoint block 0)
``bn_Conv1``                       BatchNormalization
``Conv1_relu``                     ReLU                                                       (stride 2, 32 ch)
``block_N_expand``                 Conv2D 1x1, ``expand`` filters, no bias     (ckpt ``_conv0``)
``block_N_expand_BN``              BatchNormalization                          (ckpt ``_norm0``)
``block_N_expand_relu``            ReLU
``block_N_depthwise``              DepthwiseConv2D k x k, stride s, ``same``, no bias (ckpt ``_conv1``)
``block_N_depthwise_BN``           BatchNormalization                          (ckpt ``_norm1``)
``block_N_depthwise_relu``         ReLU
``block_N_project``                Conv2D 1x1, ``out`` filters, no bias        (ckpt ``_conv2``)
``block_N_project_BN``             BatchNormalization, no activation after it  (ckpt ``_norm2``)
``block_N_add``                    Add(block input, ``block_N_project_BN``), only in residual blocks
=================================  ==========================================================================

The blocks (``in`` -> ``expand`` -> ``out`` channels; the expand width is Model Garden's
``make_divisible(in * expand_ratio, 8)``, which at width 1.0 is ``in * expand_ratio`` exactly):

=====  =  ======  ===  ======  ===  ========  ====================  =============================
N      k  stride  in   expand  out  residual  output stride         block output (its last layer)
=====  =  ======  ===  ======  ===  ========  ====================  =============================
1      3  2       32   96      32   no        4                     ``block_1_project_BN``
2      3  1       32   64      32   yes       4 (level 2)           ``block_2_add``
3      5  2       32   160     64   no        8                     ``block_3_project_BN``
4      3  1       64   192     64   yes       8                     ``block_4_add``
5      3  1       64   128     64   yes       8                     ``block_5_add``
6      3  1       64   192     64   yes       8 (**level 3**)       ``block_6_add``
7      5  2       64   384     128  no        16                    ``block_7_project_BN``
8-10   3  1       128  384     128  yes       16                    ``block_N_add``
11     3  1       128  768     160  no        16                    ``block_11_project_BN``
12     3  1       160  640     160  yes       16 (**level 4**)      ``block_12_add``
13     3  2       160  960     192  no        32                    ``block_13_project_BN``
14-16  5  1       192  768     192  yes       32 (16: **level 5**)  ``block_N_add``
=====  =  ======  ===  ======  ===  ========  ====================  =============================

The model's input layer is named ``input`` and its one output is ``block_16_add`` (stride 32, 192 channels);
for a 256 x 256 input the three feature maps are (B, 32, 32, 64), (B, 16, 16, 160) and (B, 8, 8, 192).
Pick C3, C4, C5 by name (:data:`FEATURE_LAYERS`), not by "the last layer of each stride": the expand convs of
blocks 7 and 13 still run at strides 8 and 16.
"""

from __future__ import annotations

import re

import keras
from keras import layers

# Model Garden's BatchNorm settings for this backbone (configs/common.py NormActivation as Model Maker sets it).
BATCHNORM_EPSILON = 1e-3
BATCHNORM_MOMENTUM = 0.99
STEM_FILTERS = 32

# One row per inverted-bottleneck block N = 1..16 (row N - 1): (kernel size, stride, expand channels, out
# channels). Model Garden's MNMultiAVG_BLOCK_SPECS with the expand ratios turned into channel counts.
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

# The layers whose outputs are C3 (stride 8, 64 channels), C4 (stride 16, 160) and C5 (stride 32, 192): Model
# Garden's endpoints '3', '4', '5', the FPN's inputs.
FEATURE_LAYERS = ("block_6_add", "block_12_add", "block_16_add")

# Model Garden's checkpoint blocks 17 (1x1 conv to 960) and 18 (1x1 conv to 1280) are not in this model.
_UNUSED_MODEL_GARDEN_BLOCKS = (17, 18)
_BATCHNORM_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
_CHECKPOINT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_BACKBONE_KEY = re.compile(r"backbone/layer_with_weights-(\d+)/(_conv|_norm)(\d+)/(\w+)")
# Checkpoint sub-layer index -> this module's layer-name suffix inside an inverted-bottleneck block.
_BLOCK_PARTS = {0: "expand", 1: "depthwise", 2: "project"}


def _batchnorm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BATCHNORM_EPSILON, momentum=BATCHNORM_MOMENTUM, name=name)


def _inverted_bottleneck(x, index: int, kernel_size: int, strides: int, expand: int, filters: int):
    """Model Garden's ``InvertedBottleneckBlock`` (ReLU, no SE) as block ``index``: (B, H, W, C_in) ->
    (B, H / strides, W / strides, filters)."""
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
        A functional ``keras.Model``: input ``input`` (B, H, W, 3) float, already normalised; output
        ``block_16_add`` (B, H/32, W/32, 192). The stride-8 (B, H/8, W/8, 64) and stride-16
        (B, H/16, W/16, 160) features are ``model.get_layer(name).output`` for the names in
        :data:`FEATURE_LAYERS`. Layer names as in the module docstring.
    """
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3), got {input_shape}")
    inputs = keras.Input(tuple(input_shape), name="input")
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = _batchnorm("bn_Conv1")(x)
    x = layers.ReLU(name="Conv1_relu")(x)
    for index, (kernel_size, strides, expand, filters) in enumerate(BLOCKS, start=1):
        x = _inverted_bottleneck(x, index, kernel_size, strides, expand, filters)
    return keras.Model(inputs, x, name=name)


def model_garden_weight_names(checkpoint_key: str) -> str | None:
    """The weight of :func:`build_mobilenet_multi_avg`'s model that a Model Garden checkpoint variable fills.

    Model Garden's detection checkpoints (``ckpt-277200``, written by its trainer and read by Model Maker) name
    the backbone's variables ``backbone/layer_with_weights-N/<sub-layer>/<weight>/.ATTRIBUTES/VARIABLE_VALUE``:
    block 0 is the stem (``_conv0``, ``_norm0``); in blocks 1-16 ``_conv0``/``_norm0`` are the expand conv and
    its BatchNorm, ``_conv1``/``_norm1`` the depthwise conv (``depthwise_kernel``, shape (k, k, C, 1), the same
    layout as the Keras 3 ``DepthwiseConv2D`` kernel) and ``_conv2``/``_norm2`` the project conv.

    Args:
        checkpoint_key: a checkpoint variable name, with or without the ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix.
    Returns:
        ``"<layer name>/<weight name>"``, which is the Keras variable's ``path`` in the built model, e.g.
        ``"Conv1/kernel"``, ``"bn_Conv1/gamma"``, ``"block_3_depthwise/kernel"``,
        ``"block_16_project_BN/moving_variance"``; ``None`` for keys outside the backbone (decoder, head,
        ``global_step``, optimizer), optimizer slot variables of backbone weights, and the unused blocks 17
        and 18.
    Raises:
        ValueError: a ``backbone/`` key of a shape this backbone does not have (e.g. a conv bias, a block
            index above 18, a fourth sub-layer): a checkpoint of another architecture.
    """
    if not checkpoint_key.startswith("backbone/") or "/.OPTIMIZER_SLOT/" in checkpoint_key:
        return None
    key = checkpoint_key.removesuffix(_CHECKPOINT_SUFFIX)
    match = _BACKBONE_KEY.fullmatch(key)
    if not match:
        raise ValueError(f"not a MobileNet-MultiAVG backbone variable: {checkpoint_key!r}")
    block, kind, part, weight = int(match[1]), match[2], int(match[3]), match[4]
    if block in _UNUSED_MODEL_GARDEN_BLOCKS:
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
