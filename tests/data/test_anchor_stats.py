"""Anchor coverage: the fast nearest-cell computation equals brute force; the optimiser raises coverage."""

from __future__ import annotations

import numpy as np
import pytest

from keras_retinanet.data import anchor_stats as st
from keras_retinanet.model.anchors import AnchorGenerator


def _random_boxes(n, low, high, size=512, seed=0):
    rng = np.random.default_rng(seed)
    wh = rng.uniform(low, high, (n, 2))
    xy = rng.uniform(-0.1 * size, size, (n, 2))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


@pytest.mark.parametrize("kwargs", [{}, {"offset": 0.0, "round_sizes": True}, {"aspect_ratios": (0.25, 3.0)}])
def test_fast_best_iou_equals_brute_force(kwargs):
    generator = AnchorGenerator(**kwargs)
    boxes = _random_boxes(300, 4, 400)
    for size in ((512, 512), (384, 640)):
        np.testing.assert_allclose(
            st.best_anchor_iou_fast(boxes, generator, size),
            st.best_anchor_iou(boxes, generator, size),
            atol=1e-5,
        )


def test_optimiser_raises_coverage_of_thin_small_boxes():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 480, (400, 2))
    boxes = np.concatenate([xy, xy + [8, 28]], -1).astype(np.float32)  # 8x28: tall, thin, small
    classes = np.zeros(400, np.int32)
    generator = AnchorGenerator()
    before = st.coverage(st.best_anchor_iou(boxes, generator, (512, 512)), classes, boxes, ["pole"], 0.5)
    found = st.optimize_anchors(boxes, classes, ["pole"], generator, (512, 512), iterations=150)
    scales, ratios = found.scales, found.aspect_ratios
    after_gen = found.generator(generator)
    after = st.coverage(st.best_anchor_iou(boxes, after_gen, (512, 512)), classes, boxes, ["pole"], 0.5)
    assert before.overall < 0.5 and after.overall > before.overall + 0.3
    assert len(scales) == 3 and len(ratios) == 3 and max(ratios) > 1.5  # found a tall shape (h/w = ratio)


def test_coverage_buckets():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 50, 50], [0, 0, 200, 200]], np.float32)
    cov = st.coverage(np.array([0.2, 0.6, 0.9]), np.array([0, 1, 1]), boxes, ["a", "b", "c"], 0.5)
    assert cov.per_size == {"small": 0.0, "medium": 1.0, "large": 1.0}
    assert cov.per_class["a"] == 0.0 and cov.per_class["b"] == 1.0 and np.isnan(cov.per_class["c"])
    assert cov.overall == pytest.approx(2 / 3)
