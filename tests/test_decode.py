import numpy as np
import pytest

from keras_retinanet import BoxCoder, DetectionDecoder
from keras_retinanet.boxes import iou


def _brute_force_nms(boxes, scores, classes, iou_threshold, score_threshold, max_detections, class_agnostic):
    order = np.argsort(-scores, kind="stable")
    kept = []
    for i in order:
        if scores[i] <= score_threshold:
            continue
        if all(
            iou(boxes[i], boxes[j])[0, 0] <= iou_threshold
            or (not class_agnostic and classes[i] != classes[j])
            for j in kept
        ):
            kept.append(i)
    return kept[:max_detections]


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_nms_matches_brute_force(class_agnostic):
    rng = np.random.default_rng(3 + class_agnostic)
    num_anchors, num_classes = 300, 3
    xy = rng.uniform(0, 100, (num_anchors, 2))
    anchors = np.concatenate([xy, xy + rng.uniform(10, 40, (num_anchors, 2))], axis=1).astype("float32")
    # Zero deltas: the decoded boxes are the anchors. One (anchor, class) pair per anchor is scored.
    logits = np.full((1, num_anchors, num_classes), -20.0, "float32")
    classes = rng.integers(0, num_classes, num_anchors)
    scores = rng.uniform(0.0, 1.0, num_anchors).astype("float32")
    logits[0, np.arange(num_anchors), classes] = np.log(scores / (1 - scores))
    decoder = DetectionDecoder(
        score_threshold=0.05, nms_iou_threshold=0.5, max_detections=40, class_agnostic=class_agnostic
    )
    result = decoder(logits, np.zeros((1, num_anchors, 4), "float32"), anchors, [num_anchors], BoxCoder())

    kept = _brute_force_nms(anchors, scores, classes, 0.5, 0.05, 40, class_agnostic)
    num = int(result["num_detections"][0])
    assert num == len(kept)
    np.testing.assert_allclose(np.asarray(result["scores"][0, :num]), scores[kept], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(result["boxes"][0, :num]), anchors[kept], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(result["classes"][0, :num]), classes[kept])
    # Padding rows.
    assert np.all(np.asarray(result["classes"][0, num:]) == -1)
    assert np.all(np.asarray(result["scores"][0, num:]) == 0)


def test_top_k_per_level_and_score_threshold():
    # Two levels of 4 anchors, 1 class: keep top 2 per level, so the level-1 score 0.9 survives even though
    # level 0 has three higher-scoring anchors; scores below 0.05 are dropped.
    anchors = np.array([[i * 50, 0, i * 50 + 40, 40] for i in range(8)], "float32")
    scores = np.array([0.99, 0.98, 0.97, 0.01, 0.9, 0.02, 0.03, 0.04], "float32")
    logits = np.log(scores / (1 - scores))[None, :, None]
    decoder = DetectionDecoder(topk_per_level=2)
    result = decoder(logits, np.zeros((1, 8, 4), "float32"), anchors, [4, 4], BoxCoder())
    num = int(result["num_detections"][0])
    np.testing.assert_allclose(np.asarray(result["scores"][0, :num]), [0.99, 0.98, 0.9], rtol=1e-5)


def test_two_stage_top_k_equals_the_full_top_k():
    # Levels with more anchors than k take the two-stage path; the (anchor, class) pairs and their deltas must be
    # exactly those of a top-k over all N_l * K flattened logits, for every image of the batch.
    rng = np.random.default_rng(7)
    level_sizes, num_classes, k = [600, 40], 5, 50
    num_anchors = sum(level_sizes)
    logits = rng.normal(0.0, 2.0, (2, num_anchors, num_classes)).astype("float32")
    deltas = rng.normal(0.0, 1.0, (2, num_anchors, 4)).astype("float32")
    anchors = rng.uniform(0, 100, (num_anchors, 4)).astype("float32")
    decoder = DetectionDecoder(topk_per_level=k, score_threshold=0.0)
    scores, classes, cand_deltas, cand_anchors = (
        np.asarray(x) for x in decoder.select_candidates(logits, deltas, anchors, level_sizes)
    )
    for image in range(2):
        expected, start = set(), 0
        for size in level_sizes:
            flat = logits[image, start : start + size].reshape(-1)
            for index in np.argsort(-flat)[: min(k, flat.size)]:
                expected.add((start + index // num_classes, index % num_classes))
            start += size
        got = set()
        for j in range(scores.shape[1]):
            anchor = int(np.flatnonzero(np.all(anchors == cand_anchors[image, j], axis=1))[0])
            got.add((anchor, int(classes[image, j])))
            np.testing.assert_allclose(
                scores[image, j], 1 / (1 + np.exp(-logits[image, anchor, classes[image, j]])), rtol=1e-5
            )
            np.testing.assert_array_equal(cand_deltas[image, j], deltas[image, anchor])
        assert got == expected
