"""keras_retinanet/boxes.py: the NumPy IoU agrees with pycocotools and the Keras one; the greedy matcher."""

import numpy as np
from pycocotools import mask as mask_utils

from keras_retinanet.boxes import iou, match_greedy, pairwise_iou


def test_numpy_iou_equals_pycocotools_and_keras_on_random_boxes():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (2, 30, 4))
    a, b = (
        np.concatenate([np.minimum(c[:, :2], c[:, 2:]), np.maximum(c[:, :2], c[:, 2:])], 1) for c in corners
    )
    a[0] = b[0] = [5, 5, 5, 20]  # no area: IoU 0, not NaN
    ours = iou(a, b)
    xywh = [np.concatenate([x[:, :2], x[:, 2:] - x[:, :2]], 1) for x in (a, b)]
    np.testing.assert_allclose(ours, np.asarray(mask_utils.iou(*xywh, [0] * len(b))), atol=1e-12)
    np.testing.assert_allclose(ours, np.asarray(pairwise_iou(a, b)), atol=1e-5)
    assert ours[0, 0] == 0.0 and iou(a, np.zeros((0, 4))).shape == (30, 0)


def test_greedy_matching_takes_the_highest_iou_first_and_each_box_once():
    matrix = np.array([[0.9, 0.8, 0.0], [0.85, 0.6, 0.0], [0.0, 0.0, 0.4]])
    # Row 1 loses column 0 to row 0 (0.9 first) and takes column 1; row 2 is below the threshold.
    assert match_greedy(matrix, 0.5) == [(0, 0), (1, 1)]
    assert match_greedy(matrix, 0.3) == [(0, 0), (1, 1), (2, 2)]
    assert match_greedy(np.zeros((0, 2)), 0.5) == []
