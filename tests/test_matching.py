import numpy as np
import pytest

from keras_retinanet import Matcher
from keras_retinanet.model.matching import IGNORED, NEGATIVE, POSITIVE


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


# ----------------------------------------------------------------------------------------------------------
# ATSS


def _atss_reference(anchors, boxes, level_sizes, topk):
    """ATSS (Zhang et al. 2020, Algorithm 1) box by box, with numpy: (matched box or -1) per anchor. The
    candidates are every anchor at the ``topk`` nearest locations of each level, as in the authors' code."""
    from keras_retinanet.boxes import pairwise_iou

    iou = np.asarray(pairwise_iou(anchors, boxes), np.float64)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    best = np.full(len(anchors), -1.0)
    matched = np.full(len(anchors), -1)
    for j, box in enumerate(boxes):
        candidates, start = [], 0
        for size in level_sizes:
            level_centres = np.round(centres[start : start + size], 3)  # one location, one centre
            locations = np.unique(level_centres, axis=0)
            nearest = np.argsort(np.linalg.norm(locations - (box[:2] + box[2:]) / 2, axis=1), kind="stable")
            chosen = locations[nearest[:topk]]
            at_chosen = (level_centres[:, None, :] == chosen[None]).all(-1).any(-1)
            candidates += list(start + np.flatnonzero(at_chosen))
            start += size
        threshold = iou[candidates, j].mean() + iou[candidates, j].std(ddof=1)
        for i in candidates:
            inside = box[0] < centres[i, 0] < box[2] and box[1] < centres[i, 1] < box[3]
            if inside and iou[i, j] >= threshold and iou[i, j] > best[i]:
                best[i], matched[i] = iou[i, j], j
    return matched


def test_atss_hand_made_case():
    """One 10x10 box; level A: the box itself (IoU 1), a shifted copy (IoU 90/110), a copy whose centre is on the
    box's edge (IoU 50/150); level B: two far anchors (IoU 0). k = 3, so all five are candidates: threshold =
    mean + sample std of (1, 0.818, 0.333, 0, 0) = 0.430 + 0.462 = 0.893: only the box itself is positive."""
    anchors = np.array(
        [[0, 0, 10, 10], [1, 0, 11, 10], [5, 0, 15, 10], [40, 40, 50, 50], [60, 60, 70, 70]], np.float32
    )
    boxes = np.array([[0, 0, 10, 10]], np.float32)
    values = np.array([1, 90 / 110, 50 / 150, 0, 0])
    assert values.mean() + values.std(ddof=1) == pytest.approx(0.893, abs=1e-3)
    from keras_retinanet.boxes import pairwise_iou

    matcher = Matcher(matching="atss", atss_topk=3)
    iou = pairwise_iou(anchors, boxes)
    index, state = matcher(iou, np.array([True]), anchors=anchors, boxes=boxes, level_sizes=[3, 2])
    np.testing.assert_array_equal(np.asarray(state), [POSITIVE, NEGATIVE, NEGATIVE, NEGATIVE, NEGATIVE])
    # With k = 1 per level the candidates are the box itself and one far anchor: threshold 0.5 + 0.707.
    _, state = Matcher(matching="atss", atss_topk=1)(iou, np.array([True]), anchors=anchors, boxes=boxes,
                                                  level_sizes=[3, 2])  # fmt: skip
    np.testing.assert_array_equal(np.asarray(state), [NEGATIVE] * 5)


@pytest.mark.parametrize("seed", [0, 1])
def test_atss_equals_the_reference_on_random_boxes(seed):
    from keras_retinanet.boxes import pairwise_iou
    from keras_retinanet.model.anchors import AnchorGenerator

    rng = np.random.default_rng(seed)
    generator = AnchorGenerator()
    size = (128, 160)
    anchors = np.asarray(generator(image_shape=size))
    level_sizes = generator.level_sizes(size)
    batch = []
    for _ in range(2):
        xy = rng.uniform(0, 100, (6, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(6, 90, (6, 2))], -1).astype(np.float32)
        batch.append(boxes)
    boxes = np.stack(batch)  # (2, 6, 4)
    valid = np.array([[True] * 6, [True] * 4 + [False] * 2])
    iou = pairwise_iou(anchors[None], boxes)
    index, state = Matcher(matching="atss")(
        iou, valid, anchors=anchors, boxes=boxes, level_sizes=level_sizes,
        anchors_per_location=generator.num_anchors_per_location,
    )  # fmt: skip
    for b in range(2):
        expected = _atss_reference(anchors, boxes[b][valid[b]], level_sizes, 9)
        got = np.where(np.asarray(state[b]) == POSITIVE, np.asarray(index[b]), -1)
        np.testing.assert_array_equal(got, expected)
        assert (expected >= 0).sum() > 6  # every box has positives here: a real comparison
    assert set(np.unique(np.asarray(state))) <= {POSITIVE, NEGATIVE}


def test_atss_is_saved_with_the_matcher():
    matcher = Matcher.from_config(Matcher(matching="atss", atss_topk=5).get_config())
    assert (matcher.matching, matcher.atss_topk) == ("atss", 5)
    with pytest.raises(ValueError, match="matching must be 'iou' or 'atss'"):
        Matcher(matching="aTSS")


def test_kth_smallest_counts_repeats_like_a_sort():
    from keras_retinanet.model.matching import _kth_smallest

    rng = np.random.default_rng(3)
    values = rng.integers(0, 6, (2, 40, 5)).astype(np.float32)  # many repeats
    for k in (1, 3, 9, 40):
        expected = np.sort(values, axis=-2)[:, k - 1, :]
        np.testing.assert_array_equal(np.asarray(_kth_smallest(values, k)), expected)
