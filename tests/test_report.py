"""The evaluation report (keras_retinanet/evaluation/report.py) and its parts: TIDE error buckets, the confusion
matrix, per-class operating points, the rendered report and `retinanet evaluate --report` (per-class thresholds
files: tests/test_class_thresholds.py).

The hand-built set has two classes and seven 200 x 200 images, one error of each TIDE type (foreground IoU 0.5,
background IoU 0.1):

    image  ground truth           detections (box, score, class)         what COCOeval / TIDE see
    A      cat [0,0,50,50]        cat [0,0,50,50] .9; cat [0,0,50,48] .8  TP; Dupe (IoU .96 with the matched box)
    B      dog [0,0,50,50]        cat [0,0,50,50] .7                      Cls (IoU 1 with a dog box)
    C      cat [0,0,40,40]        cat [20,0,60,40] .6                     Loc (IoU 1/3 with its own class's box)
    D      dog [0,0,40,40]        dog [0,0,40,40] .95; cat [20,0,60,40] .5  TP; Both (IoU 1/3 with a dog box)
    E      cat [0,0,40,40]        dog [100,100,140,140] .4                Bkg (IoU 0); the cat box: Miss
    F      cat [0,0,40,40]        cat [0,0,40,40] .3                      TP
    G      dog [0,0,40,40]        dog [0,0,40,40] .2                      TP
"""

import json
import re

import cv2
import numpy as np
import pytest

from keras_retinanet import cli, detectors, evaluation
from keras_retinanet.detectors.class_thresholds import (
    class_threshold_array,
    read_class_thresholds,
)

CAT, DOG = 0, 1


NAMES = ["cat", "dog"]


def _example(box, cls, path=None):
    example = {
        "boxes": np.array([box], np.float32),
        "classes": np.array([cls], np.int32),
        "height": 200,
        "width": 200,
    }
    if path is not None:
        example["image_path"] = str(path)
    return example


def _detections(*rows):
    return {
        "boxes": np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
        "scores": np.array([r[1] for r in rows], np.float32),
        "classes": np.array([r[2] for r in rows], np.int32),
    }


def hand_built(folder=None):
    """(examples, detections) of the module docstring; with ``folder``, each image is a file there."""
    truths = [
        ([0, 0, 50, 50], CAT),
        ([0, 0, 50, 50], DOG),
        ([0, 0, 40, 40], CAT),
        ([0, 0, 40, 40], DOG),
        ([0, 0, 40, 40], CAT),
        ([0, 0, 40, 40], CAT),
        ([0, 0, 40, 40], DOG),
    ]
    paths = [None] * len(truths)
    if folder is not None:
        paths = []
        for name in "ABCDEFG":
            path = folder / f"{name}.png"
            cv2.imwrite(str(path), np.full((200, 200, 3), 90, np.uint8))
            paths.append(path)
    examples = [_example(box, cls, path) for (box, cls), path in zip(truths, paths, strict=True)]
    detections = [
        _detections(([0, 0, 50, 50], 0.9, CAT), ([0, 0, 50, 48], 0.8, CAT)),
        _detections(([0, 0, 50, 50], 0.7, CAT)),
        _detections(([20, 0, 60, 40], 0.6, CAT)),
        _detections(([0, 0, 40, 40], 0.95, DOG), ([20, 0, 60, 40], 0.5, CAT)),
        _detections(([100, 100, 140, 140], 0.4, DOG)),
        _detections(([0, 0, 40, 40], 0.3, CAT)),
        _detections(([0, 0, 40, 40], 0.2, DOG)),
    ]
    return examples, detections


def coco_ap(outcomes, positives):
    """COCO's 101-point interpolated AP of [(score, is_true_positive), ...] (independent of pycocotools)."""
    outcomes = sorted(outcomes, key=lambda o: -o[0])
    tp = np.cumsum([o[1] for o in outcomes])
    precision = tp / np.arange(1, len(outcomes) + 1)
    recall = tp / positives
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    total = 0.0
    for r in np.linspace(0, 1, 101):
        reached = np.flatnonzero(recall >= r - 1e-12)
        total += envelope[reached[0]] if len(reached) else 0.0
    return total / 101


# Each class's detections as (score, true positive) and its number of boxes, before and after each fix (by hand).


BASE = {
    "cat": ([(0.9, 1), (0.8, 0), (0.7, 0), (0.6, 0), (0.5, 0), (0.3, 1)], 4),
    "dog": ([(0.95, 1), (0.4, 0), (0.2, 1)], 3),
}


FIXED = {
    # Cls: B's cat detection becomes a dog true positive.
    "Cls": {
        "cat": ([(0.9, 1), (0.8, 0), (0.6, 0), (0.5, 0), (0.3, 1)], 4),
        "dog": ([(0.95, 1), (0.7, 1), (0.4, 0), (0.2, 1)], 3),
    },
    # Loc: C's detection moves onto C's box.
    "Loc": {"cat": ([(0.9, 1), (0.8, 0), (0.7, 0), (0.6, 1), (0.5, 0), (0.3, 1)], 4), "dog": BASE["dog"]},
    # Both, Dupe: the detection is removed.
    "Both": {"cat": ([(0.9, 1), (0.8, 0), (0.7, 0), (0.6, 0), (0.3, 1)], 4), "dog": BASE["dog"]},
    "Dupe": {"cat": ([(0.9, 1), (0.7, 0), (0.6, 0), (0.5, 0), (0.3, 1)], 4), "dog": BASE["dog"]},
    # Bkg: E's dog detection is removed.
    "Bkg": {"cat": BASE["cat"], "dog": ([(0.95, 1), (0.2, 1)], 3)},
    # Miss: E's cat box is removed.
    "Miss": {"cat": (BASE["cat"][0], 3), "dog": BASE["dog"]},
}


def test_tide_puts_one_error_in_each_bucket_and_costs_what_fixing_it_gains():
    examples, detections = hand_built()
    breakdown = evaluation.error_breakdown(examples, detections, NAMES)
    assert breakdown.counts == dict.fromkeys(evaluation.ERROR_TYPES, 1)
    assert breakdown.per_class_counts == {
        "cat": {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 0, "Miss": 1},
        "dog": {"Cls": 0, "Loc": 0, "Both": 0, "Dupe": 0, "Bkg": 1, "Miss": 0},
    }
    base = {name: coco_ap(*BASE[name]) for name in NAMES}
    assert base["cat"] == pytest.approx((26 + 25 / 3) / 101)  # by hand: P 1 up to recall .25, 1/3 up to .5
    assert breakdown.per_class_ap50 == pytest.approx(base)
    assert breakdown.ap50 == pytest.approx(np.mean(list(base.values())))
    for kind, fixed in FIXED.items():
        after = {name: coco_ap(*fixed[name]) for name in NAMES}
        for name in NAMES:
            assert breakdown.per_class_delta[name][kind] == pytest.approx(
                after[name] - base[name], abs=1e-9
            ), (
                kind,
                name,
            )
        assert breakdown.delta[kind] == pytest.approx(
            np.mean(list(after.values())) - breakdown.ap50, abs=1e-9
        )
    # Every type costs something here, so a bucket that lost its error would show.
    assert all(breakdown.delta[kind] > 0.005 for kind in evaluation.ERROR_TYPES)


def test_tide_only_the_best_scored_error_aimed_at_a_box_becomes_a_true_positive():
    # Two Loc errors aimed at one cat box: fixing makes the .8 one a true positive and removes the .6 one.
    examples = [_example([0, 0, 40, 40], CAT), _example([0, 0, 40, 40], CAT)]
    detections = [
        _detections(([20, 0, 60, 40], 0.8, CAT), ([0, 20, 40, 60], 0.6, CAT)),
        _detections(([0, 0, 40, 40], 0.7, CAT)),
    ]
    breakdown = evaluation.error_breakdown(examples, detections, NAMES)
    assert breakdown.counts["Loc"] == 2 and breakdown.counts["Miss"] == 0
    fixed = coco_ap([(0.8, 1), (0.7, 1)], 2)
    base = coco_ap([(0.8, 0), (0.7, 1), (0.6, 0)], 2)
    assert breakdown.per_class_delta["cat"]["Loc"] == pytest.approx(fixed - base)


def test_an_image_without_boxes_and_a_model_without_detections():
    empty = _detections()
    examples = [
        {
            "boxes": np.zeros((0, 4), np.float32),
            "classes": np.zeros(0, np.int32),
            "height": 200,
            "width": 200,
        },
        _example([0, 0, 40, 40], CAT),
    ]
    for detections, bkg in (([empty, empty], 0), ([_detections(([0, 0, 40, 40], 0.9, DOG)), empty], 1)):
        breakdown = evaluation.error_breakdown(examples, detections, NAMES)
        assert breakdown.counts == {"Cls": 0, "Loc": 0, "Both": 0, "Dupe": 0, "Bkg": bkg, "Miss": 1}
        assert breakdown.ap50 == 0.0  # cat has a box and no detection; dog has no box (undefined)
        matrix = evaluation.confusion_matrix(examples, detections, 2).matrix
        np.testing.assert_array_equal(matrix, [[0, 0, 1], [0, 0, 0], [0, bkg, 0]])


def test_confusion_matrix_of_the_hand_built_set():
    examples, detections = hand_built()
    result = evaluation.confusion_matrix(examples, detections, 2, iou_threshold=0.5, score_threshold=0.25)
    # Rows true cat, dog, background; columns predicted cat, dog, background. By hand: A: cat-cat, the duplicate
    # on background; B: dog predicted cat; C: IoU 1/3 < .5, so a missed cat and a cat on background; D: dog-dog,
    # the cat on background; E: missed cat, dog on background; F: cat-cat; G: its dog (.2) is under .25: missed.
    expected = np.array([[2, 0, 2], [1, 1, 1], [3, 1, 0]])
    np.testing.assert_array_equal(result.matrix, expected)
    np.testing.assert_array_equal(result.false_positives, [1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(result.missed, [0, 1, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(result.normalised()[1], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(result.normalised()[2], [0.75, 0.25, 0.0])


def test_confusion_matrix_does_not_count_ignore_boxes_or_what_matches_them():
    example = _example([0, 0, 40, 40], CAT)
    example["ignore"] = np.array([True])
    result = evaluation.confusion_matrix([example], [_detections(([0, 0, 40, 40], 0.9, DOG))], 2)
    np.testing.assert_array_equal(result.matrix, np.zeros((3, 3)))


def test_per_class_precision_recall_and_f1_optimal_thresholds():
    examples, detections = hand_built()
    cocoeval = evaluation.coco_evaluation(examples, detections, NAMES)
    points = evaluation.operating_points(cocoeval, NAMES, score_threshold=0.3)
    # cat at .3: 6 detections, 2 true positives, 4 boxes. F1 peaks at .4 both after .9 (P 1, R .25) and after .3
    # (P 1/3, R .5): the higher threshold wins.
    assert points["cat"] == pytest.approx(
        {
            "positives": 4,
            "detections": 6,
            "precision": 2 / 6,
            "recall": 0.5,
            "f1_threshold": 0.9,
            "f1_precision": 1.0,
            "f1_recall": 0.25,
            "f1": 0.4,
        }
    )
    # dog: F1 .5 after .95, .4 after .4, 2/3 after .2 (P 2/3, R 2/3).
    assert points["dog"]["f1_threshold"] == pytest.approx(0.2)
    assert points["dog"]["f1"] == pytest.approx(2 / 3)
    assert (points["dog"]["precision"], points["dog"]["recall"]) == pytest.approx((0.5, 1 / 3))


IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def broken_image_links(report_path):
    """The image links of a Markdown page whose file is missing or does not decode."""
    text = report_path.read_text()
    links = IMAGE_LINK.findall(text)
    assert links, "no image in the report"
    return [link for link in links if cv2.imread(str(report_path.parent / link)) is None]


def test_report_renders_with_every_picture(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    examples, detections = hand_built(images)
    out = tmp_path / "report"
    summary = evaluation.write_report(out, examples, detections, NAMES, score_threshold=0.25, worst_count=2)
    report = out / "report.md"
    assert broken_image_links(report) == []
    text = report.read_text()
    for picture in (
        "confusion_matrix.png",
        "tide_errors.png",
        "pr_curves/pr_cat.png",
        "pr_curves/pr_dog.png",
    ):
        assert f"]({picture})" in text
    # Worst images: five images have one false positive (A..E), ties in data set order; missed: B, C, E, G.
    assert [w["image"] for w in summary["worst"]["false_positives"]] == [
        str(images / "A.png"),
        str(images / "B.png"),
    ]
    assert [w["image"] for w in summary["worst"]["missed"]] == [str(images / "B.png"), str(images / "C.png")]
    worst = cv2.imread(str(out / summary["worst"]["missed"][0]["picture"]))
    assert worst.shape[:2] == (28 + 400, 2 * 400 + 8)  # caption over ground truth | gap | predictions, 2x
    # The TIDE table row of the report, from the numbers, and the thresholds file the detectors read.
    delta = summary["tide"]["delta_ap50"]
    assert "| dAP50 overall | " + " | ".join(f"{delta[k]:+.4f}" for k in evaluation.ERROR_TYPES) in text
    assert read_class_thresholds(out / "class_thresholds.json") == pytest.approx({"cat": 0.9, "dog": 0.2})
    assert json.loads((out / "class_thresholds.json").read_text())["without_threshold"] == []
    json.loads((out / "report.json").read_text())
    # A broken link is caught.
    (out / "tide_errors.png").unlink()
    assert broken_image_links(report) == ["tide_errors.png"]


def test_evaluate_report_command_on_a_model(detector_like, tmp_path, capsys):
    out = tmp_path / "report"
    code = cli.main(
        [
            "evaluate",
            detector_like["keras"],
            "--data",
            detector_like["spec"],
            "--report",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert broken_image_links(out / "report.md") == []
    summary = json.loads((out / "report.json").read_text())
    metrics = evaluation.evaluate_model(detector_like["keras"], detector_like["spec"], progress=False)
    assert summary["metrics"]["AP"] == pytest.approx(metrics["AP"])
    # The thresholds file it writes is accepted by the detectors.
    with detectors.load_detector(
        detector_like["keras"], class_thresholds=out / "class_thresholds.json"
    ) as det:
        expected = class_threshold_array(out / "class_thresholds.json", detector_like["class_names"])
        np.testing.assert_allclose(det.class_thresholds, expected)
    assert (
        cli.main(["evaluate", detector_like["keras"], "--data", detector_like["spec"], "--report-iou", "0"])
        == 2
    )
