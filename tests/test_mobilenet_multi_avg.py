"""MobileNet-MultiHW-AVG (``keras_retinanet.backbones.mobilenet_multi_avg``): its documented layer table, TF
SAME padding of the strided 5x5 depthwise conv, the Model Garden checkpoint-key mapping, ``.keras`` round trip, and its
outputs against TF Model Garden's own backbone.

``tests/fixtures/model_garden_reference`` holds what Model Garden (tf-models-official, ``tools/
model_garden_reference.py``) computed for the MobileNetMultiAVG backbone filled with weights that numpy rebuilds
from a recipe (one generator per checkpoint variable, seeded by the crc32 of its key): the checkpoint's variable
names and shapes, one image, and every 11th value of the three backbone endpoints. Rebuilding the weights here,
loading them through ``model_garden_weight_names`` and running the Keras model must give the same numbers.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from helpers.ci_skips import skip_missing
from retinanet_testing import REPO
from test_convert_model_garden import make_values

from keras_retinanet.backbones.mobilenet_multi_avg import (
    FEATURE_LAYERS,
    build_mobilenet_multi_avg,
    model_garden_weight_names,
)

REFERENCE = REPO / "tests" / "fixtures" / "model_garden_reference"
VARIABLES_FILE = REFERENCE / "mobilenet_multi_avg_variables.json"
OUTPUTS_FILE = REFERENCE / "mobilenet_multi_avg_outputs.npz"
TOLERANCE = 1e-4  # absolute, on the backbone endpoints
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# Model Garden's MNMultiAVG_BLOCK_SPECS written out independently of the module: block N = 1..16 as
# (kernel, stride, expand ratio, out channels); the stem is a 3x3 stride-2 conv to 32 channels.
SPECS = [
    (3, 2, 3, 32), (3, 1, 2, 32), (5, 2, 5, 64), (3, 1, 3, 64), (3, 1, 2, 64), (3, 1, 3, 64),
    (5, 2, 6, 128), (3, 1, 3, 128), (3, 1, 3, 128), (3, 1, 3, 128), (3, 1, 6, 160), (3, 1, 4, 160),
    (3, 2, 6, 192), (5, 1, 4, 192), (5, 1, 4, 192), (5, 1, 4, 192),
]  # fmt: skip
BLOCK_PARTS = ("expand", "expand_BN", "expand_relu", "depthwise", "depthwise_BN", "depthwise_relu", "project")


def documented_layers() -> dict[str, dict]:
    """{layer name: expected properties} of every layer of the model, from the module docstring's tables."""
    expected = {
        "input": {"class": "InputLayer"},
        "Conv1": {"class": "Conv2D", "kernel": (3, 3, 3, 32), "strides": (2, 2)},
        "bn_Conv1": {"class": "BatchNormalization", "channels": 32},
        "Conv1_relu": {"class": "ReLU"},
    }
    channels = 32
    for index, (kernel, stride, ratio, out) in enumerate(SPECS, start=1):
        expand, prefix = channels * ratio, f"block_{index}"
        expected |= {
            f"{prefix}_expand": {"class": "Conv2D", "kernel": (1, 1, channels, expand), "strides": (1, 1)},
            f"{prefix}_expand_BN": {"class": "BatchNormalization", "channels": expand},
            f"{prefix}_expand_relu": {"class": "ReLU"},
            f"{prefix}_depthwise": {
                "class": "DepthwiseConv2D",
                "kernel": (kernel, kernel, expand, 1),
                "strides": (stride, stride),
            },
            f"{prefix}_depthwise_BN": {"class": "BatchNormalization", "channels": expand},
            f"{prefix}_depthwise_relu": {"class": "ReLU"},
            f"{prefix}_project": {"class": "Conv2D", "kernel": (1, 1, expand, out), "strides": (1, 1)},
            f"{prefix}_project_BN": {"class": "BatchNormalization", "channels": out},
        }
        if stride == 1 and channels == out:
            expected[f"{prefix}_add"] = {"class": "Add"}
        channels = out
    return expected


@pytest.fixture(scope="module")
def model_256():
    return build_mobilenet_multi_avg((256, 256, 3))


def test_every_documented_layer_is_there_as_documented(model_256):
    expected = documented_layers()
    layers = {layer.name: layer for layer in model_256.layers}
    assert sorted(layers) == sorted(expected)
    # 16 blocks; residual adds in blocks 2, 4-6, 8-10, 12, 14-16 only.
    adds = sorted(int(name.split("_")[1]) for name in layers if name.endswith("_add"))
    assert adds == [2, 4, 5, 6, 8, 9, 10, 12, 14, 15, 16]
    for name, want in expected.items():
        layer = layers[name]
        assert type(layer).__name__ == want["class"], name
        assert type(layer).__module__.startswith("keras."), name  # standard Keras layers only
        if "kernel" in want:
            assert tuple(layer.kernel.shape) == want["kernel"], name
            assert tuple(layer.strides) == want["strides"], name
            assert layer.padding == "same" and not layer.use_bias, name
            assert [tuple(w.shape) for w in layer.weights] == [want["kernel"]], name
        if want["class"] == "DepthwiseConv2D":
            assert layer.depth_multiplier == 1, name
        if want["class"] == "BatchNormalization":
            assert (layer.epsilon, layer.momentum, layer.center, layer.scale) == (1e-3, 0.99, True, True), (
                name
            )
            assert [w.path for w in layer.weights] == [
                f"{name}/{weight}" for weight in ("gamma", "beta", "moving_mean", "moving_variance")
            ]
            assert all(tuple(w.shape) == (want["channels"],) for w in layer.weights), name
        if want["class"] == "ReLU":  # plain ReLU, not ReLU6
            assert layer.max_value is None and layer.negative_slope == 0 and layer.threshold == 0, name
    # The project conv has no activation after it: its BatchNorm feeds the add or the next block's expand.
    assert model_256.get_layer("block_3_expand").input is model_256.get_layer("block_2_add").output
    assert model_256.get_layer("block_4_expand").input is model_256.get_layer("block_3_project_BN").output


def test_feature_maps_of_a_256_input(model_256):
    assert FEATURE_LAYERS == ("block_6_add", "block_12_add", "block_16_add")
    shapes = [tuple(model_256.get_layer(name).output.shape) for name in FEATURE_LAYERS]
    assert shapes == [(None, 32, 32, 64), (None, 16, 16, 160), (None, 8, 8, 192)]
    assert model_256.output is model_256.get_layer("block_16_add").output
    assert model_256.get_layer("Conv1_relu").output.shape[1:3] == (128, 128)
    # Any input size: strides 8, 16, 32 round up (TF SAME) on a 100 x 130 image.
    flexible = build_mobilenet_multi_avg()
    features = keras.Model(flexible.input, [flexible.get_layer(name).output for name in FEATURE_LAYERS])
    outputs = features(np.zeros((1, 100, 130, 3), np.float32))
    assert [tuple(o.shape) for o in outputs] == [(1, 13, 17, 64), (1, 7, 9, 160), (1, 4, 5, 192)]


@pytest.mark.parametrize("size", [8, 9])
def test_strided_5x5_depthwise_pads_as_tf_same(size):
    """Keras "same" with the TF backend is TF SAME: on an even size the 5x5 stride-2 conv pads 1 top/left and 2
    bottom/right (output ceil(size / 2)); on an odd size 2 and 2."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, size, size, 2)).astype(np.float32)
    kernel = rng.normal(size=(5, 5, 2, 1)).astype(np.float32)
    conv = keras.layers.DepthwiseConv2D(5, strides=2, padding="same", use_bias=False)
    conv.build(x.shape)
    conv.set_weights([kernel])
    out_size = -(-size // 2)
    total = max((out_size - 1) * 2 + 5 - size, 0)
    before = total // 2
    padded = np.pad(x[0], ((before, total - before), (before, total - before), (0, 0)))
    want = np.zeros((out_size, out_size, 2), np.float64)
    for i in range(5):
        for j in range(5):
            want += padded[i : i + 2 * out_size : 2, j : j + 2 * out_size : 2] * kernel[i, j, :, 0]
    assert (before, total - before) == ((1, 2) if size % 2 == 0 else (2, 2))
    np.testing.assert_allclose(np.asarray(conv(x))[0], want, atol=1e-5)


def test_model_garden_weight_names():
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    cases = {
        "backbone/layer_with_weights-0/_conv0/kernel": "Conv1/kernel",
        "backbone/layer_with_weights-0/_norm0/gamma": "bn_Conv1/gamma",
        "backbone/layer_with_weights-1/_conv0/kernel": "block_1_expand/kernel",
        "backbone/layer_with_weights-1/_norm0/moving_mean": "block_1_expand_BN/moving_mean",
        "backbone/layer_with_weights-3/_conv1/depthwise_kernel": "block_3_depthwise/kernel",
        "backbone/layer_with_weights-3/_norm1/beta": "block_3_depthwise_BN/beta",
        "backbone/layer_with_weights-16/_conv2/kernel": "block_16_project/kernel",
        "backbone/layer_with_weights-16/_norm2/moving_variance": "block_16_project_BN/moving_variance",
    }
    for key, name in cases.items():
        assert model_garden_weight_names(key + suffix) == name
        assert model_garden_weight_names(key) == name
    for key in (
        "backbone/layer_with_weights-17/_conv0/kernel",
        "backbone/layer_with_weights-18/_norm0/gamma",
        "decoder/layer_with_weights-0/depthwise_kernel",
        "head/_cls_convs/0/pointwise_kernel",
        "global_step",
        "model/_backbone/layer_with_weights-0/_conv0/kernel",
        "backbone/layer_with_weights-2/_conv0/kernel/.OPTIMIZER_SLOT/optimizer/momentum",
    ):
        assert model_garden_weight_names(key + suffix) is None, key
    for key in (
        "backbone/layer_with_weights-19/_conv0/kernel",
        "backbone/layer_with_weights-2/_conv3/kernel",
        "backbone/layer_with_weights-2/_conv0/bias",
        "backbone/layer_with_weights-2/_conv1/kernel",
        "backbone/layer_with_weights-0/_conv1/depthwise_kernel",
        "backbone/layer_with_weights-2/_squeeze_excitation/_se_reduce/kernel",
    ):
        with pytest.raises(ValueError, match="not a MobileNet-MultiAVG backbone variable"):
            model_garden_weight_names(key + suffix)
    # Every weight of the model has exactly one checkpoint key.
    model = build_mobilenet_multi_avg((64, 64, 3))
    bn = ("gamma", "beta", "moving_mean", "moving_variance")
    keys = ["backbone/layer_with_weights-0/_conv0/kernel"] + [
        f"backbone/layer_with_weights-0/_norm0/{w}" for w in bn
    ]
    for block in range(1, 17):
        prefix = f"backbone/layer_with_weights-{block}"
        keys += [f"{prefix}/_conv0/kernel", f"{prefix}/_conv1/depthwise_kernel", f"{prefix}/_conv2/kernel"]
        keys += [f"{prefix}/_norm{part}/{w}" for part in range(3) for w in bn]
    assert sorted(model_garden_weight_names(k) for k in keys) == sorted(w.path for w in model.weights)


def test_saves_and_loads_without_custom_objects(tmp_path):
    model = build_mobilenet_multi_avg((64, 64, 3))
    rng = np.random.default_rng(1)
    for weight in model.weights:
        weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
    path = tmp_path / "mobilenet_multi_avg.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    x = rng.normal(size=(1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def require_reference():
    missing = [path.name for path in (VARIABLES_FILE, OUTPUTS_FILE) if not path.is_file()]
    if missing and os.environ.get("CI"):
        pytest.fail(f"the Model Garden reference fixture is missing from {REFERENCE}: {', '.join(missing)}")
    if missing:
        skip_missing(f"Model Garden reference fixture not found: {', '.join(missing)} in {REFERENCE}")


def test_matches_model_garden_backbone_endpoints():
    require_reference()
    shapes = json.loads(VARIABLES_FILE.read_text())
    values = make_values(shapes)  # the reference's recipe (tests/test_convert_model_garden.py)
    reference = np.load(OUTPUTS_FILE)
    model = build_mobilenet_multi_avg()
    weights = {w.path: w for w in model.weights}
    filled = []
    for key, shape in shapes.items():
        name = model_garden_weight_names(key)
        if name is None:
            continue
        assert tuple(weights[name].shape) == tuple(shape), key
        weights[name].assign(values[key])
        filled.append(name)
    assert sorted(filled) == sorted(weights), "every weight filled exactly once"

    image = reference["image_uint8_rgb"].astype(np.float32)  # (H, W, 3)
    normalised = ((image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)
    stride = int(reference["subsample_stride"]) if "subsample_stride" in reference.files else 11
    features = keras.Model(model.input, [model.get_layer(name).output for name in FEATURE_LAYERS])
    outputs = features(normalised[None], training=False)
    for level, output in zip((3, 4, 5), outputs):
        output = np.asarray(output)[0]  # (H / 2^level, W / 2^level, C)
        assert output.shape == tuple(reference[f"backbone_{level}_shape"]), level
        got, want = output.reshape(-1)[::stride], reference[f"backbone_{level}_every11"]
        assert got.shape == want.shape, level
        worst = float(np.abs(got - want).max())
        assert worst < TOLERANCE, f"level {level}: max abs diff {worst:.3g}"


def test_the_registered_backbone_gives_c3_c4_c5_and_names_its_missing_imagenet_weights():
    from keras_retinanet.backbones.registry import BackboneWeightsError, build_backbone

    backbone = build_backbone("mobilenet_multi_avg", weights=None)
    features = backbone(np.zeros((1, 256, 256, 3), "float32"))
    assert [tuple(f.shape[1:]) for f in features] == [(32, 32, 64), (16, 16, 160), (8, 8, 192)]
    with pytest.raises(BackboneWeightsError, match="has no ImageNet weights in Keras: .* --weights none"):
        build_backbone("mobilenet_multi_avg")
