import numpy as np

from keras_retinanet import Matcher
from keras_retinanet.matching import IGNORED, NEGATIVE, POSITIVE


def test_thresholds_on_hand_made_iou():
    # 5 anchors x 2 boxes.
    iou = np.array(
        [
            [0.70, 0.10],  # positive, box 0
            [0.45, 0.20],  # between 0.4 and 0.5: ignored
            [0.10, 0.50],  # exactly 0.5: positive, box 1
            [0.39, 0.05],  # negative
            [0.30, 0.35],  # negative
        ],
        dtype="float32",
    )
    index, state = Matcher()(iou, np.array([True, True]))
    np.testing.assert_array_equal(np.asarray(state), [POSITIVE, IGNORED, POSITIVE, NEGATIVE, NEGATIVE])
    np.testing.assert_array_equal(np.asarray(index)[[0, 2]], [0, 1])


def test_low_quality_matches_give_every_box_an_anchor():
    iou = np.array([[0.30, 0.0], [0.20, 0.0], [0.0, 0.45]], dtype="float32")
    _, state = Matcher()(iou, np.array([True, True]))
    np.testing.assert_array_equal(np.asarray(state), [NEGATIVE, NEGATIVE, IGNORED])
    index, state = Matcher(allow_low_quality_matches=True)(iou, np.array([True, True]))
    np.testing.assert_array_equal(np.asarray(state), [POSITIVE, NEGATIVE, POSITIVE])
    np.testing.assert_array_equal(np.asarray(index)[[0, 2]], [0, 1])


def test_padding_boxes_never_match():
    iou = np.array([[0.9, 0.2], [0.1, 0.3]], dtype="float32")
    index, state = Matcher(allow_low_quality_matches=True)(iou, np.array([False, True]))
    # The 0.9 belongs to a padding box: anchor 0 is negative; anchor 1 becomes box 1's low-quality match.
    np.testing.assert_array_equal(np.asarray(state), [NEGATIVE, POSITIVE])
    assert int(np.asarray(index)[1]) == 1


def test_batched_matching():
    iou = np.array([[[0.6], [0.1]], [[0.1], [0.6]]], dtype="float32")
    _, state = Matcher()(iou, np.array([[True], [True]]))
    np.testing.assert_array_equal(np.asarray(state), [[POSITIVE, NEGATIVE], [NEGATIVE, POSITIVE]])
