"""torchvision's model parts as options of our own: PyTorch-padded P6/P7, GroupNorm(32, 256) in the heads,
the GIoU box loss, the torchvision presets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_torchvision_resnet import torch_conv

from keras_retinanet import BoxCoder, BoxRegressionLoss, retinanet_from_preset
from keras_retinanet.model.layers import ClassificationHead, FeaturePyramid


def _pyramid_with_p6_from_p5(padding: str, channels: int = 4):
    pyramid = FeaturePyramid(channels, p6_source="p5", padding=padding)
    pyramid.build([(None, None, None, 3), (None, None, None, 5), (None, None, None, 6)])
    return pyramid


@pytest.mark.parametrize("size", [8, 7])
def test_symmetric_p6_padding_is_pytorchs(size):
    """P6 = conv3x3/2 of P5 padded by one pixel on each side (PyTorch); Keras' "same" differs on even sizes."""
    rng = np.random.default_rng(size)
    features = [rng.normal(size=(1, 4 * size, 4 * size, 3)), rng.normal(size=(1, 2 * size, 2 * size, 5))]
    features = [f.astype("float32") for f in features] + [
        rng.normal(size=(1, size, size, 6)).astype("float32")
    ]
    symmetric = _pyramid_with_p6_from_p5("symmetric")
    same = _pyramid_with_p6_from_p5("same")
    for layer_a, layer_b in zip(symmetric.weights, same.weights):
        layer_b.assign(layer_a)
    p3, p4, p5, p6, p7 = (np.asarray(p)[0] for p in symmetric(features))
    kernel = np.asarray(symmetric.p6_conv.kernel).transpose(3, 2, 0, 1)  # to PyTorch's (out, in, kh, kw)
    expected_p6 = torch_conv(p5, kernel, stride=2, padding=1) + np.asarray(symmetric.p6_conv.bias)
    assert p6.shape == expected_p6.shape == (math.ceil(size / 2), math.ceil(size / 2), 4)
    np.testing.assert_allclose(p6, expected_p6, atol=1e-5)
    p7_kernel = np.asarray(symmetric.p7_conv.kernel).transpose(3, 2, 0, 1)
    expected_p7 = torch_conv(np.maximum(p6, 0), p7_kernel, 2, 1) + np.asarray(symmetric.p7_conv.bias)
    np.testing.assert_allclose(p7, expected_p7, atol=1e-5)
    same_p6 = np.asarray(same(features)[3])[0]
    if size % 2:  # odd: "same" pads one pixel on each side too
        np.testing.assert_allclose(same_p6, p6, atol=1e-5)
    else:
        assert np.abs(same_p6 - p6).max() > 1e-2
    assert FeaturePyramid.from_config(symmetric.get_config()).padding == "symmetric"


def test_head_group_norm_is_torchs_group_norm_32():
    """use_group_norm: nn.GroupNorm(32, 256) (eps 1e-5, groups of 8 consecutive channels), by formula; a
    small-variance input shows that Keras' default epsilon 1e-3 would be another function."""
    head = ClassificationHead(2, num_anchors=1, depth=1, channels=256, use_group_norm=True)
    x = np.random.default_rng(0).normal(0.3, 0.01, (2, 3, 5, 256)).astype("float32")
    head.build([x.shape])
    norm = head.convs[1]
    gamma = np.random.default_rng(1).uniform(0.5, 1.5, 256).astype("float32")
    beta = np.random.default_rng(2).normal(0, 0.1, 256).astype("float32")
    norm.gamma.assign(gamma)
    norm.beta.assign(beta)
    grouped = x.reshape(2, 3, 5, 32, 8).astype(np.float64)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    expected = ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * gamma + beta
    np.testing.assert_allclose(np.asarray(norm(x)), expected, atol=1e-4)
    assert norm.epsilon == 1e-5 and norm.groups == 32
    with_keras_default = ((grouped - mean) / np.sqrt(var + 1e-3)).reshape(x.shape) * gamma + beta
    assert np.abs(with_keras_default - expected).max() > 0.1


def test_models_saved_before_group_norm_epsilon_keep_kerass_default():
    from keras_retinanet import RetinaNet

    config = {
        "num_classes": 2,
        "backbone": "mobilenet_v2",
        "backbone_weights": None,
        "backbone_kwargs": {"alpha": 0.35},
        "fpn_channels": 32,
    }
    config.update(head_depth=1, use_group_norm=True)
    old = RetinaNet.from_config(config)
    assert old.group_norm_epsilon == 1e-3 and old.get_layer("box_head").convs[1].epsilon == 1e-3
    assert RetinaNet(**config).group_norm_epsilon == 1e-5


def _giou_by_hand(box, other):
    """Pixel boxes (x1, y1, x2, y2): IoU - (enclosing area - union) / enclosing area."""
    iw = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    ih = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1]) - inter
    enclosing = (max(box[2], other[2]) - min(box[0], other[0])) * (
        max(box[3], other[3]) - min(box[1], other[1])
    )
    return inter / union - (enclosing - union) / enclosing


def test_giou_loss_by_hand():
    # Predicted deltas 0 = the anchor itself. Targets: the anchor (loss 0), twice as wide (IoU 1/2, encloses
    # exactly: loss 1/2), shifted by one width (touching: IoU 0, enclosing 2 = union: loss 1), shifted by two
    # widths (IoU 0, enclosing 3, union 2: loss 1 + 1/3).
    targets = np.array([[0, 0, 0, 0], [0, 0, math.log(2), 0], [1, 0, 0, 0], [2, 0, 0, 0]], "float32")
    y_true = np.concatenate([targets, np.zeros((4, 1), "float32")], axis=1)[:, None, :]
    losses = np.asarray(BoxRegressionLoss("giou", reduction=None)(y_true, np.zeros((4, 1, 4), "float32")))
    np.testing.assert_allclose(losses, [0.0, 0.5, 1.0, 4.0 / 3.0], atol=1e-6)


def test_giou_loss_equals_pixel_giou_with_any_anchor_and_box_weights():
    """The loss works on deltas; it must equal 1 - GIoU of the pixel boxes those deltas encode."""
    rng = np.random.default_rng(3)
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    xy = rng.uniform(0, 300, (2, 6, 2))
    anchors = np.concatenate([xy, xy + rng.uniform(10, 200, (2, 6, 2))], -1).astype("float32")
    boxes = np.concatenate([xy + 5, xy + rng.uniform(10, 200, (2, 6, 2))], -1).astype("float32")
    predicted = rng.normal(0, 1.0, (2, 6, 4)).astype("float32")
    targets = np.asarray(coder.encode(anchors, boxes))
    classes = np.array([[0, 1, -1, 2, -2, 0], [-1, -1, -1, -1, -1, -1]], "float32")
    y_true = np.concatenate([targets, classes[..., None]], -1)
    decoded = np.asarray(coder.decode(anchors, predicted))
    expected_0 = np.mean([1 - _giou_by_hand(decoded[0, i], boxes[0, i]) for i in (0, 1, 3, 5)])
    loss = np.asarray(BoxRegressionLoss("giou", box_coder=coder, reduction=None)(y_true, predicted))
    np.testing.assert_allclose(loss, [expected_0, 0.0], rtol=1e-5)
    # Huge deltas on non-positive anchors (dummy targets) give neither inf nor NaN.
    y_true[0, 2, :4] = 1e4
    assert np.all(np.isfinite(np.asarray(BoxRegressionLoss("giou", reduction=None)(y_true, predicted * 1e3))))
    restored = BoxRegressionLoss.from_config(BoxRegressionLoss("giou", box_coder=coder).get_config())
    assert restored.box_loss == "giou" and restored.box_coder.weights == [10.0, 10.0, 5.0, 5.0]


def test_torchvision_presets():
    small = dict(
        backbone="mobilenet_v2", weights=None, backbone_kwargs={"alpha": 0.35}, fpn_channels=32, head_depth=1
    )
    v1 = retinanet_from_preset("torchvision", 3, **small)
    assert (v1.p6_source, v1.fpn_padding, v1.use_group_norm) == ("p5", "symmetric", False)
    assert (
        v1.anchor_generator.offset == 0.0
        and v1.anchor_generator.round_sizes
        and v1.matcher.allow_low_quality_matches
    )
    v2 = retinanet_from_preset("torchvision_v2", 3, **small)
    assert (v2.p6_source, v2.fpn_padding, v2.use_group_norm, v2.group_norm_epsilon) == (
        "c5",
        "symmetric",
        True,
        1e-5,
    )
    # Arguments given explicitly take precedence over the preset's.
    assert retinanet_from_preset("torchvision", 3, p6_source="c5", **small).p6_source == "c5"


def test_torchvision_v2_recipe_config():
    """configs/torchvision_retinanet_v2.yaml: torchvision v2's model conventions and training recipe."""
    from retinanet_testing import REPO

    from keras_retinanet.training.config import TrainConfig

    config = TrainConfig.from_yaml(REPO / "configs" / "torchvision_retinanet_v2.yaml")
    model = config.model
    assert (model.backbone, model.p6_source, model.fpn_padding, model.use_group_norm) == (
        "torchvision_resnet50",
        "c5",
        "symmetric",
        True,
    )
    assert model.group_norm_epsilon == 1e-5 and model.box_loss == "giou" and model.max_detections == 300
    assert model.anchor_offset == 0.0 and model.anchor_round_sizes and model.allow_low_quality_matches
    assert model.backbone_kwargs == {"frozen_batchnorm": False, "trainable_layers": 3}
    assert (config.optimizer, config.learning_rate, config.weight_decay, config.batch_size) == (
        "adamw",
        1e-4,
        0.05,
        16,
    )
    assert config.epochs == 26 and config.schedule == "step" and config.clip_norm is None
    np.testing.assert_allclose(np.array(config.lr_milestones) * 26, [16, 22], atol=1e-5)
    assert (config.warmup_steps, config.warmup_factor) == (1000, 0.001)
    # torchvision's IoU matcher, its anchors unfitted and its square input, whatever this project's defaults.
    assert (model.matching, config.anchors, config.image_shape) == ("iou", "given", "square")
    # The loss it builds decodes with the model's box coding.
    assert model.losses()["box_regression"].box_loss == "giou"
