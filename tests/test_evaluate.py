"""Tests for keras_retinanet.evaluation (pycocotools box metrics)."""

import json

import numpy as np
import pytest
from retinanet_testing import CHESS_FIXTURES

from keras_retinanet import evaluation


def _example(image_id, boxes, classes, ignore=None, height=480, width=640):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    example = {
        "image_path": f"img{image_id}.jpg",
        "image_id": image_id,
        "boxes": boxes,
        "classes": np.asarray(classes, np.int32).reshape(-1),
        "height": height,
        "width": width,
    }
    if ignore is not None:
        example["ignore"] = np.asarray(ignore, bool)
    return example


def _det(boxes, scores, classes):
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32),
        "classes": np.asarray(classes, np.int32),
    }


def _gt_as_detections(examples):
    return [_det(e["boxes"], np.ones(len(e["boxes"])), e["classes"]) for e in examples]


def test_ground_truth_as_detections_gives_ap_one():
    # Three classes over three images, objects of all three COCO sizes (small < 32^2 < medium < 96^2 < large).
    examples = [
        _example(7, [[10, 10, 30, 30], [100, 100, 160, 160], [200, 50, 400, 300]], [0, 1, 2]),
        _example(0, [[5, 5, 25, 35], [300, 300, 500, 470]], [2, 0]),
        _example(3, np.zeros((0, 4)), []),  # an image without boxes
    ]
    metrics = evaluation.evaluate_detections(examples, _gt_as_detections(examples), ["a", "b", "c"])
    assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "per_class"}
    for key in evaluation.METRIC_KEYS:
        assert metrics[key] == pytest.approx(1.0), key
    assert set(metrics["per_class"]) == {"a", "b", "c"}
    for values in metrics["per_class"].values():
        assert values == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}


def _chess_examples():
    # The vendored 2 images of chess640's valid split (tests/fixtures), with all 13 categories.
    with open(CHESS_FIXTURES / "valid" / "_annotations.coco.json") as f:
        coco = json.load(f)
    # Contiguous ids for the categories, in the file's order.
    cat_ids = [c["id"] for c in coco["categories"]]
    names = [c["name"] for c in coco["categories"]]
    by_image = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    examples = []
    for img in coco["images"]:
        anns = by_image[img["id"]]
        boxes = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in anns
        ]
        examples.append(
            _example(
                img["id"],
                boxes,
                [cat_ids.index(a["category_id"]) for a in anns],
                ignore=[bool(a["iscrowd"]) for a in anns],
                height=img["height"],
                width=img["width"],
            )
        )
    return examples, names


def test_real_ground_truth_as_detections_gives_ap_one():
    examples, names = _chess_examples()
    metrics = evaluation.evaluate_detections(examples, _gt_as_detections(examples), names)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)
    # The data set has a category without boxes ("pieces"): pycocotools reports -1 (undefined) for it.
    assert metrics["per_class"]["pieces"]["AP"] == -1.0
    defined = [v["AP"] for v in metrics["per_class"].values() if v["AP"] >= 0]
    assert defined and all(v == pytest.approx(1.0) for v in defined)


def test_hand_made_detections_give_known_partial_ap():
    # One class, one image, two large ground-truth boxes A and B (area 100*100 = 10000 > 96^2).
    #   d1 score 0.9 = A exactly (IoU 1), d2 score 0.8 overlaps nothing (FP),
    #   d3 score 0.7 = B cut to height 62: IoU = 6200 / 10000 = 0.62.
    # pycocotools: 10 IoU thresholds 0.50:0.05:0.95, 101 recall points 0:0.01:1, precision made monotone
    # (max over higher recall), p(r) read at the first detection whose recall >= r, 0 if none.
    # - thresholds 0.50, 0.55, 0.60 (3 of 10): TP, FP, TP -> recall .5, .5, 1; precision 1, .5, 2/3
    #   -> monotone 1, 2/3, 2/3. Recall points 0..0.50 (51) get 1, 0.51..1.00 (50) get 2/3.
    #   AP_t = (51 + 50 * 2/3) / 101 = 84.333 / 101 = 0.834983
    # - thresholds 0.65 .. 0.95 (7 of 10): TP, FP, FP -> recall .5, .5, .5; precision 1, .5, 1/3.
    #   Recall points 0..0.50 (51) get 1, the others 0.  AP_t = 51 / 101 = 0.504950
    # AP = (3 * 84.333 + 7 * 51) / 1010 = 610 / 1010 = 0.603960; AP50 = 0.834983; AP75 = 0.504950.
    # AR100 = mean recall over thresholds = (3 * 1 + 7 * 0.5) / 10 = 0.65.
    # Only large ground truth: APs and APm are undefined (-1). APl differs from AP by COCO's area rule: an
    # unmatched detection outside the area range is ignored, and d2 (50*50 = 2500) and d3 (100*62 = 6200) are
    # medium. So for APl: thresholds .50-.60: TP, TP -> AP_t = 1; .65-.95: TP (d3 ignored) -> 51/101.
    # APl = (3 * 101 + 7 * 51) / 1010 = 660 / 1010 = 0.653465.
    examples = [_example(1, [[200, 200, 300, 300], [0, 0, 100, 100]], [0, 0])]
    detections = [
        _det([[200, 200, 300, 300], [400, 400, 450, 450], [0, 0, 100, 62]], [0.9, 0.8, 0.7], [0, 0, 0])
    ]
    metrics = evaluation.evaluate_detections(examples, detections, ["cell"])
    assert metrics["AP"] == pytest.approx(610 / 1010, abs=1e-6)
    assert metrics["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-6)
    assert metrics["AP75"] == pytest.approx(51 / 101, abs=1e-6)
    assert metrics["APl"] == pytest.approx(660 / 1010, abs=1e-6)
    assert metrics["APs"] == -1.0 and metrics["APm"] == -1.0
    assert metrics["AR100"] == pytest.approx(0.65)
    assert metrics["per_class"]["cell"]["AP"] == pytest.approx(metrics["AP"])
    assert metrics["per_class"]["cell"]["AP50"] == pytest.approx(metrics["AP50"])


def test_difficult_boxes_are_ignored_like_coco_crowd():
    # Ground truth: A normal, B and C difficult. Detections: B (score 0.95, higher than A's) and A (0.9).
    # As COCO treats crowd regions: the detection on B is ignored (neither TP nor FP) and the missed C
    # does not count, so AP = 1. Treated as normal boxes instead: 3 boxes, 2 TPs at precision 1 -> recall
    # 2/3; recall points 0..0.66 (67 of 101) get precision 1 -> AP = 67/101 at every threshold.
    boxes = [[100, 100, 200, 200], [300, 100, 400, 200], [100, 300, 200, 400]]
    detections = [_det(boxes[:2][::-1], [0.95, 0.9], [0, 0])]
    with_difficult = [_example(1, boxes, [0, 0, 0], ignore=[False, True, True])]
    metrics = evaluation.evaluate_detections(with_difficult, detections, ["cell"])
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)

    all_normal = [_example(1, boxes, [0, 0, 0], ignore=[False, False, False])]
    metrics = evaluation.evaluate_detections(all_normal, detections, ["cell"])
    assert metrics["AP"] == pytest.approx(67 / 101, abs=1e-6)

    coco = evaluation.examples_to_coco(with_difficult, ["cell"])
    assert [a["iscrowd"] for a in coco["annotations"]] == [0, 1, 1]


def test_no_detections_and_padding_rows():
    examples = [_example(1, [[10, 10, 110, 110]], [0])]
    metrics = evaluation.evaluate_detections(examples, [_det(np.zeros((0, 4)), [], [])], ["x"])
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0
    # Padded decoder output: rows with class -1 and the num_detections count are honoured.
    padded = {
        "boxes": np.array([[10, 10, 110, 110], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32),
        "scores": np.array([0.8, 0.0, 0.0], np.float32),
        "classes": np.array([0, -1, -1], np.int32),
        "num_detections": np.array(1, np.int32),
    }
    assert evaluation.evaluate_detections(examples, [padded], ["x"])["AP"] == pytest.approx(1.0)


def test_degenerate_ground_truth_box_is_ignored():
    # A zero-area box (BCCD has two) can never be matched; it must not make recall < 1.
    examples = [_example(1, [[10, 10, 110, 110], [50, 50, 50, 80]], [0, 0])]
    metrics = evaluation.evaluate_detections(examples, [_det([[10, 10, 110, 110]], [0.9], [0])], ["x"])
    assert metrics["AP"] == pytest.approx(1.0)


def test_bad_inputs_raise():
    examples = [_example(1, [[10, 10, 110, 110]], [0])]
    with pytest.raises(ValueError, match="1 examples but 2"):
        evaluation.evaluate_detections(examples, [_det([], [], []), _det([], [], [])], ["x"])
    with pytest.raises(ValueError, match="class id"):
        evaluation.evaluate_detections(examples, [_det([[0, 0, 5, 5]], [0.5], [3])], ["x"])
    with pytest.raises(ValueError, match="class id 2"):
        evaluation.evaluate_detections([_example(1, [[0, 0, 5, 5]], [2])], [_det([], [], [])], ["x"])


def test_format_metrics_and_pr_curves(tmp_path):
    import cv2

    examples = [_example(1, [[200, 200, 300, 300], [0, 0, 100, 100]], [0, 1])]
    detections = [_det([[200, 200, 300, 300], [0, 0, 100, 62]], [0.9, 0.7], [0, 1])]
    metrics = evaluation.evaluate_detections(examples, detections, ["red cell", "wbc"], pr_curve_dir=tmp_path)
    table = evaluation.format_metrics(metrics)
    assert "AP50" in table and "red cell" in table and "n/a" in table  # APs undefined -> n/a
    # AP as a fraction, as everywhere in the project: red cell is found exactly (1.000), not "100.00".
    assert f"{'red cell':<12}  1.000  1.000" in table.splitlines() and "100.0" not in table
    json.dumps(metrics)  # plain Python types only
    for name in ("pr_red_cell.png", "pr_wbc.png"):
        image = cv2.imread(str(tmp_path / name))
        assert image is not None and image.shape == (480, 640, 3)


def test_class_remapping():
    assert evaluation.class_remapping(["a", "b"], ["a", "b"]) is None
    assert evaluation.class_remapping(None, ["a", "b"]) is None
    np.testing.assert_array_equal(evaluation.class_remapping(["b", "a", "z"], ["a", "b"]), [1, 0, -1])


def test_results_json_format():
    results = evaluation.detections_to_coco_results(
        [_det([[10, 20, 50, 80]], [0.5], [1])], [42], class_names=["a", "b"], file_names=["x.jpg"]
    )
    assert results == [
        {
            "image_id": 42,
            "category_id": 1,
            "bbox": [10.0, 20.0, 40.0, 60.0],
            "score": 0.5,
            "category_name": "b",
            "file_name": "x.jpg",
        }
    ]
