"""The mobile pyramid and heads (TF Model Garden's layout): separable convs, BatchNorm on every pyramid level,
a BatchNorm per level in the heads, ReLU6. Each output is recomputed here step by step from the layer's own
sub-layers, in the order Model Garden wires them (docs/pretrained.md), so a wrong wiring fails."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_retinanet.model.layers import BoxHead, ClassificationHead, FeaturePyramid


def _randomise_batchnorms(layers, rng) -> None:
    """Statistics and scales far from the identity, different per layer."""
    for layer in layers:
        layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
        layer.beta.assign(rng.normal(0, 0.5, layer.beta.shape))
        layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape))
        layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))


def _features(rng, channels=(6, 10, 12), size=32):
    return [
        rng.normal(0, 1, (1, size // s, size // s, c)).astype("float32") for s, c in zip((1, 2, 4), channels)
    ]


def test_mobile_pyramid_takes_p6_and_p7_before_the_batchnorm():
    rng = np.random.default_rng(0)
    pyramid = FeaturePyramid(8, p6_source="p5", separable=True, batchnorm=True, activation="relu6")
    c3, c4, c5 = _features(rng)
    pyramid([c3, c4, c5])
    _randomise_batchnorms(pyramid.norms, rng)
    assert all(
        isinstance(conv, keras.layers.SeparableConv2D) for conv in [*pyramid.lateral, *pyramid.output_convs]
    )
    got = [np.asarray(level) for level in pyramid([c3, c4, c5], training=False)]

    def up(x):
        return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)

    m5 = pyramid.lateral[2](c5)
    m4 = pyramid.lateral[1](c4) + up(m5)
    m3 = pyramid.lateral[0](c3) + up(m4)
    p3, p4, p5 = (conv(m) for conv, m in zip(pyramid.output_convs, (m3, m4, m5)))
    p6 = pyramid.p6_conv(p5)  # P5 before its BatchNorm
    p7 = pyramid.p7_conv(ops.clip(p6, 0.0, 6.0))  # ReLU6 of P6 before its BatchNorm
    for level, (norm, value) in enumerate(zip(pyramid.norms, (p3, p4, p5, p6, p7)), start=3):
        expected = np.asarray(norm(value, training=False))
        np.testing.assert_allclose(got[level - 3], expected, atol=1e-5, err_msg=f"P{level}")
    assert [g.shape[1] for g in got] == [32, 16, 8, 4, 2]


@pytest.mark.parametrize("head_class", [ClassificationHead, BoxHead])
def test_head_batchnorm_is_per_level_and_the_convs_are_shared(head_class):
    rng = np.random.default_rng(1)
    arguments = dict(
        num_anchors=2, depth=2, channels=8, batchnorm_per_level=True, separable=True, activation="relu6"
    )
    head = head_class(3, **arguments) if head_class is ClassificationHead else head_class(**arguments)
    same = rng.normal(0, 1, (1, 4, 4, 8)).astype("float32")
    levels = [same, same, rng.normal(0, 1, (1, 2, 2, 8)).astype("float32")]
    head(levels)
    assert len(head.level_norms) == 3 * 2 and len(head.convs) == 2  # no shared norm or activation layers
    _randomise_batchnorms(head.level_norms, rng)
    got = np.asarray(head(levels, training=False))
    per_anchor = head.outputs_per_anchor
    start = 0
    outputs = []
    for level, feature in enumerate(levels):
        x = feature
        for i, conv in enumerate(head.convs):
            x = ops.clip(head.level_norms[level * 2 + i](conv(x), training=False), 0.0, 6.0)
        expected = np.asarray(head.final(x)).reshape(-1, per_anchor)
        np.testing.assert_allclose(got[0, start : start + len(expected)], expected, atol=1e-5)
        outputs.append(np.asarray(x))
        start += len(expected)
    # The same input on two levels gives two towers' outputs: each level normalises with its own statistics.
    assert np.abs(outputs[0] - outputs[1]).max() > 0.1 * np.abs(outputs[0]).max() > 0


def test_a_head_takes_one_kind_of_norm():
    with pytest.raises(ValueError, match="GroupNorm .* or BatchNorm per level, not both"):
        BoxHead(use_group_norm=True, batchnorm_per_level=True)
    with pytest.raises(ValueError, match="activation must be one of relu, relu6, got 'gelu'"):
        BoxHead(activation="gelu")
