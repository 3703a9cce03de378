"""The torchvision-layout ResNet backbone, its frozen BatchNorm and ImageNet mean/std normalisation, checked
against PyTorch's definitions re-derived in numpy (convolution with symmetric padding, max pool padded with
-inf, FrozenBatchNorm2d, Bottleneck v1.5)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from test_convert_torchvision import make_weights, require_reference

from keras_retinanet.backbones.registry import (
    BackboneWeightsError,
    ImageNormalization,
    available_backbones,
    build_backbone,
    resolve_torchvision_weights,
)
from keras_retinanet.backbones.torchvision.resnet import FrozenBatchNormalization, build_torchvision_resnet


def torch_conv(x, weight, stride=1, padding=0):
    """PyTorch's Conv2d on one (H, W, Cin) image with an (out, in, kh, kw) weight, zero padding on each side."""
    x = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
    out_c, _, kh, kw = weight.shape
    out_h = (x.shape[0] - kh) // stride + 1
    out_w = (x.shape[1] - kw) // stride + 1
    out = np.zeros((out_h, out_w, out_c))
    for i in range(kh):
        for j in range(kw):
            patch = x[i : i + stride * out_h : stride, j : j + stride * out_w : stride]
            out += patch @ weight[:, :, i, j].T
    return out


def torch_frozen_bn(x, tensors, prefix, eps=1e-5):
    scale = tensors[f"{prefix}.weight"] / np.sqrt(tensors[f"{prefix}.running_var"] + eps)
    return x * scale + tensors[f"{prefix}.bias"] - tensors[f"{prefix}.running_mean"] * scale


def torch_maxpool(x, kernel=3, stride=2, padding=1):
    x = np.pad(x, ((padding, padding), (padding, padding), (0, 0)), constant_values=-np.inf)
    out_h = (x.shape[0] - kernel) // stride + 1
    out_w = (x.shape[1] - kernel) // stride + 1
    return np.max(
        [
            x[i : i + stride * out_h : stride, j : j + stride * out_w : stride]
            for i in range(kernel)
            for j in range(kernel)
        ],
        axis=0,
    )


def torch_bottleneck(x, t, prefix, stride):
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    y = relu(torch_frozen_bn(torch_conv(x, t[f"{prefix}.conv1.weight"]), t, f"{prefix}.bn1"))
    y = relu(torch_frozen_bn(torch_conv(y, t[f"{prefix}.conv2.weight"], stride, 1), t, f"{prefix}.bn2"))
    y = torch_frozen_bn(torch_conv(y, t[f"{prefix}.conv3.weight"]), t, f"{prefix}.bn3")
    shortcut = x
    if f"{prefix}.downsample.0.weight" in t:
        shortcut = torch_frozen_bn(
            torch_conv(x, t[f"{prefix}.downsample.0.weight"], stride), t, f"{prefix}.downsample.1"
        )
    return relu(y + shortcut)


@pytest.fixture(scope="module")
def resnet_weights():
    """An ImageNet-classifier-style state dict (no prefix, with fc) from the reference recipe."""
    shapes = json.loads((require_reference() / "torchvision_retinanet_state_dict.json").read_text())
    body = {
        k[len("backbone.body.") :]: v
        for k, v in shapes["retinanet_resnet50_fpn"].items()
        if k.startswith("backbone.body.")
    }
    body.update({"fc.weight": [1000, 2048], "fc.bias": [1000]})
    return make_weights(body)


@pytest.fixture(scope="module")
def backbone(resnet_weights):
    model = build_backbone("torchvision_resnet50", weights=None)
    from keras_retinanet.backbones.torchvision.weights import load_torchvision_resnet_weights

    report = load_torchvision_resnet_weights(model, resnet_weights)
    assert report["layers"] == 53 + 53  # every conv and its BatchNorm
    assert report["ignored"] == ["fc.bias", "fc.weight"]
    return model


def test_torchvision_backbone_is_listed_and_has_torchvision_layout():
    assert {"torchvision_resnet50", "torchvision_resnet101"} <= set(available_backbones())
    model = build_torchvision_resnet(50)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53 and not any(conv.use_bias for conv in convs)
    # ResNet v1.5: the stride of a downsampling block is on its 3x3 conv, padded explicitly, not "same".
    assert model.get_layer("layer2_0_conv1").strides == (1, 1)
    assert model.get_layer("layer2_0_conv2").strides == (2, 2)
    assert model.get_layer("layer2_0_conv2").padding == "valid"
    assert model.get_layer("layer2_0_conv2_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("conv1_pad").padding == ((3, 3), (3, 3))
    norms = [layer for layer in model.layers if isinstance(layer, FrozenBatchNormalization)]
    assert len(norms) == 53 and {n.epsilon for n in norms} == {1e-5}
    outputs = model(np.zeros((1, 64, 96, 3), "float32"))
    assert [tuple(o.shape) for o in outputs] == [(1, 8, 12, 512), (1, 4, 6, 1024), (1, 2, 3, 2048)]


def test_stem_and_downsampling_block_equal_pytorch(backbone, resnet_weights):
    """conv1 (7x7/2, pad 3) -> bn -> relu -> maxpool (3x3/2, pad 1) and layer2.0 (stride 2 on the 3x3) as
    PyTorch computes them, on an even-sized input where Keras' "same" padding would shift every window."""
    t = {k: v.astype(np.float64) for k, v in resnet_weights.items()}
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (32, 32, 3)).astype("float32")

    x = (image / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    stem = torch_maxpool(np.maximum(torch_frozen_bn(torch_conv(x, t["conv1.weight"], 2, 3), t, "bn1"), 0))
    keras_stem = keras.Model(backbone.inputs, backbone.get_layer("maxpool").output)(image[None])
    np.testing.assert_allclose(np.asarray(keras_stem)[0], stem, atol=2e-4, rtol=1e-4)

    layer1_out = backbone.get_layer("layer1_2_out").output
    layer2_0_out = backbone.get_layer("layer2_0_out").output
    sub = keras.Model(backbone.inputs, [layer1_out, layer2_0_out])
    c2, block = (np.asarray(v)[0] for v in sub(image[None]))
    expected = torch_bottleneck(c2.astype(np.float64), t, "layer2.0", stride=2)
    assert expected.shape == block.shape == (4, 4, 512)
    np.testing.assert_allclose(block, expected, atol=2e-4, rtol=1e-4)


def test_frozen_batchnorm_never_changes():
    layer = FrozenBatchNormalization()
    x = np.random.default_rng(1).normal(3.0, 2.0, (2, 4, 4, 3)).astype("float32")
    layer.build(x.shape)
    layer.gamma.assign([1.0, 2.0, 0.5])
    layer.beta.assign([0.0, 1.0, -1.0])
    layer.moving_mean.assign([0.5, -1.0, 2.0])
    layer.moving_variance.assign([4.0, 1.0, 0.25])
    expected = (x - [0.5, -1.0, 2.0]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-5) * [1.0, 2.0, 0.5] + [
        0.0,
        1.0,
        -1.0,
    ]
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), expected, rtol=1e-5)
    model = keras.Sequential([keras.Input((4, 4, 3)), layer, keras.layers.Conv2D(1, 1)])
    model.trainable = True  # as UnfreezeBackbone does: must not thaw the statistics or the affine map
    assert layer.trainable_weights == [] and len(model.trainable_weights) == 2
    before = [np.asarray(w) for w in layer.weights]
    model.compile("sgd", "mse")
    model.fit(x, np.zeros((2, 4, 4, 1)), epochs=2, verbose=0)
    for old, new in zip(before, layer.weights):
        np.testing.assert_array_equal(old, np.asarray(new))


def test_trainable_layers_freezes_stages_from_the_bottom():
    model = build_torchvision_resnet(50, trainable_layers=3)
    assert not model.get_layer("conv1").trainable and not model.get_layer("layer1_2_conv3").trainable
    assert model.get_layer("layer2_0_conv1").trainable and model.get_layer("layer4_2_conv3").trainable
    trainable_bn = build_torchvision_resnet(50, frozen_batchnorm=False)
    norms = [layer for layer in trainable_bn.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 53 and {(n.epsilon, n.momentum) for n in norms} == {(1e-5, 0.9)}


def test_torch_image_normalization_by_hand():
    pixels = np.array([[[[0.0, 255.0, 124.0]]]], "float32")
    expected = [(0 - 0.485) / 0.229, (1 - 0.456) / 0.224, (124 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(np.asarray(ImageNormalization("torch")(pixels))[0, 0, 0], expected, rtol=1e-6)


def test_imagenet_weights_come_from_torch_cache(tmp_path, monkeypatch):
    # A torchvision backbone never downloads: "imagenet" (the default) is torchvision's file in torch's cache,
    # and without it the error says where to put it and how to do without it.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(BackboneWeightsError, match=r"resnet50-0676ba61\.pth.*--weights none") as error:
        resolve_torchvision_weights("torchvision_resnet50", "imagenet")
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in str(error.value)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet101-63fe2227.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert resolve_torchvision_weights("torchvision_resnet101", "imagenet") == str(cached)
    assert resolve_torchvision_weights("torchvision_resnet50", None) is None


def test_backbone_weights_file_errors(tmp_path, resnet_weights):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        build_backbone("torchvision_resnet50", weights=str(tmp_path / "missing.npz"))
    from keras_retinanet.backbones.torchvision.state_dict import CheckpointError, save_state_dict

    # A ResNet-101 state dict (23 blocks in layer3) does not fit a ResNet-50.
    deeper = dict(resnet_weights)
    for block in range(6, 23):
        for conv in (1, 2, 3):
            deeper[f"layer3.{block}.conv{conv}.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    save_state_dict(deeper, tmp_path / "r101.npz")
    with pytest.raises(
        CheckpointError, match="ResNet-101 checkpoint .* does not fit the backbone 'torchvision_resnet50'"
    ):
        build_backbone("torchvision_resnet50", weights=str(tmp_path / "r101.npz"))


def test_backbone_weights_from_a_file_and_from_a_detection_checkpoint(tmp_path, resnet_weights, backbone):
    """--weights FILE: an ImageNet classifier's .npz, or the body of a torchvision detection checkpoint."""
    from keras_retinanet.backbones.torchvision.state_dict import save_state_dict

    image = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    expected = [np.asarray(o) for o in backbone(image)]
    save_state_dict(resnet_weights, tmp_path / "resnet50.npz")
    from_file = build_backbone("torchvision_resnet50", weights=str(tmp_path / "resnet50.npz"))
    detection = {f"backbone.body.{k}": v for k, v in resnet_weights.items() if not k.startswith("fc.")}
    detection["head.regression_head.bbox_reg.bias"] = np.zeros(36, np.float32)
    save_state_dict(detection, tmp_path / "retinanet.npz")
    from_detection = build_backbone("torchvision_resnet50", weights=str(tmp_path / "retinanet.npz"))
    for model in (from_file, from_detection):
        for output, wanted in zip(model(image), expected):
            np.testing.assert_array_equal(np.asarray(output), wanted)
