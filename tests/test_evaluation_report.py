"""The evaluation report: TIDE error buckets, confusion matrix, per-class thresholds, and the rendered report.

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
from pathlib import Path

import cv2
import numpy as np
import pytest

from keras_retinanet import cli, detectors, evaluation
from keras_retinanet.detectors.class_thresholds import (
    ClassThresholdsError,
    class_threshold_array,
    read_class_thresholds,
    write_class_thresholds,
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


def test_thresholds_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "t.json"
    write_class_thresholds(path, {"dog": 0.25, "cat": 0.5}, chosen_by="hand")
    assert read_class_thresholds(path) == {"dog": 0.25, "cat": 0.5}
    np.testing.assert_allclose(class_threshold_array(path, ["cat", "bird", "dog"]), [0.5, 0.0, 0.25])
    (tmp_path / "bare.yaml").write_text("cat: 0.4\n")
    assert read_class_thresholds(tmp_path / "bare.yaml") == {"cat": 0.4}
    with pytest.raises(ClassThresholdsError, match=r"t.json: class 'cat' is not one of the model's classes"):
        class_threshold_array(path, ["dog", "horse"])
    (tmp_path / "bad.json").write_text('{"thresholds": {"cat": 1.5}}')
    with pytest.raises(ClassThresholdsError, match=r"bad.json: class 'cat': threshold 1.5 is not a number"):
        read_class_thresholds(tmp_path / "bad.json")
    # `evaluate --report` on a model without a true positive writes no class: no extra filtering, not an error.
    write_class_thresholds(tmp_path / "none.json", {}, without_threshold=["cat", "dog"])
    assert read_class_thresholds(tmp_path / "none.json") == {}
    np.testing.assert_array_equal(class_threshold_array(tmp_path / "none.json", ["cat", "dog"]), [0.0, 0.0])
    (tmp_path / "empty.yaml").write_text("{}\n")  # a bare empty mapping is a mistake
    with pytest.raises(ClassThresholdsError, match=r"empty.yaml: expected a mapping of class name to score"):
        read_class_thresholds(tmp_path / "empty.yaml")


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


def _cut(scores):
    """A threshold half-way between two neighbouring scores near the median (no score sits on it)."""
    unique = np.unique(scores)
    i = max(0, len(unique) // 2 - 1)
    return float((unique[i] + unique[i + 1]) / 2)


def _filtered(dets, thresholds):
    keep = dets.scores >= thresholds[dets.classes]
    return dets.boxes[keep], dets.scores[keep], dets.classes[keep]


def test_class_thresholds_change_what_predict_returns(detector_like, tmp_path):
    """The Python API and `retinanet predict --class-thresholds` (its default --score-threshold 0.3 and the file
    both apply) keep exactly the rows of the plain output that pass their class's threshold."""
    model = detectors.load_retinanet(detector_like["keras"])
    plain = detectors.predict(model, detector_like["images"], score_threshold=0.3)
    classes = np.concatenate([d.classes for d in plain])
    scores = np.concatenate([d.scores for d in plain])
    names = detector_like["class_names"]
    # One class cut near the median of its scores, another at 1.0 (nothing left), the third untouched.
    busiest = int(np.bincount(classes, minlength=len(names)).argmax())
    other = (busiest + 1) % len(names)
    thresholds = np.full(len(names), 0.3, np.float32)
    thresholds[busiest] = _cut(scores[classes == busiest])
    thresholds[other] = 1.0
    path = tmp_path / "thresholds.json"
    write_class_thresholds(path, {names[busiest]: thresholds[busiest], names[other]: 1.0})
    expected = [_filtered(d, thresholds) for d in plain]

    cut = detectors.predict(model, detector_like["images"], score_threshold=0.3, class_thresholds=path)
    assert sum(len(d) for d in cut) < sum(len(d) for d in plain)
    for after, (boxes, kept_scores, kept_classes) in zip(cut, expected, strict=True):
        np.testing.assert_array_equal(after.classes, kept_classes)
        np.testing.assert_allclose(after.scores, kept_scores, rtol=1e-6)
        np.testing.assert_allclose(after.boxes, boxes, rtol=1e-5, atol=1e-3)
    with pytest.raises(ClassThresholdsError, match="'zebra' is not one of the model's classes"):
        detectors.load_detector(model, class_thresholds={"zebra": 0.5})

    out = tmp_path / "out"
    argv = ["predict", detector_like["keras"], *detector_like["images"], "--out", str(out), "--no-draw"]
    assert cli.main([*argv, "--class-thresholds", str(path), "--no-progress"]) == 0
    written = json.loads((out / "detections.json").read_text())
    assert [item["score"] for item in written] == pytest.approx(
        np.concatenate([e[1] for e in expected]), abs=1e-5
    )
    assert [item["category_id"] for item in written] == np.concatenate([e[2] for e in expected]).tolist()
    assert other not in [item["category_id"] for item in written]
    (tmp_path / "unknown.json").write_text('{"zebra": 0.5}')
    assert cli.main([*argv, "--class-thresholds", str(tmp_path / "unknown.json")]) == 2


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


@pytest.mark.slow
def test_saved_model_export_applies_class_thresholds(detector_like, tmp_path):
    from keras_retinanet.detectors.tflite_file import read_detection_metadata
    from keras_retinanet.export import build_saved_model, export_model

    names = detector_like["class_names"]
    plain_path = tmp_path / "plain"
    build_saved_model(detectors.load_retinanet(detector_like["keras"]), plain_path)
    plain = detectors.predict(str(plain_path), detector_like["images"])
    classes = np.concatenate([d.classes for d in plain])
    scores = np.concatenate([d.scores for d in plain])
    busiest = int(np.bincount(classes, minlength=len(names)).argmax())
    thresholds = np.zeros(len(names), np.float32)
    thresholds[busiest] = _cut(scores[classes == busiest])
    path = tmp_path / "thresholds.json"
    write_class_thresholds(path, {names[busiest]: thresholds[busiest]})
    out = tmp_path / "export"
    export_model(
        detector_like["keras"], out, tflite_variants=["float32"], class_thresholds=str(path), parity_images=0
    )
    assert read_class_thresholds(out / "class_thresholds.json") == pytest.approx(
        {names[busiest]: thresholds[busiest]}
    )
    # The TFLite file carries them as MediaPipe score calibration.
    tflite_thresholds = read_detection_metadata(out / "model_float32.tflite")["class_thresholds"]
    np.testing.assert_allclose(tflite_thresholds, thresholds, atol=1e-6)  # the file keeps 6 decimals
    # The same graph with the filter inside: the rows kept, in the same order.
    exported = detectors.predict(str(out), detector_like["images"])
    assert sum(len(d) for d in exported) < sum(len(d) for d in plain)
    for before, after in zip(plain, exported, strict=True):
        boxes, kept_scores, kept_classes = _filtered(before, thresholds)
        np.testing.assert_array_equal(after.classes, kept_classes)
        np.testing.assert_allclose(after.scores, kept_scores, rtol=1e-6)
        np.testing.assert_allclose(after.boxes, boxes, atol=1e-3)


def test_tflite_metadata_carries_class_thresholds_as_mediapipe_score_calibration(detector_like, tmp_path):
    pytest.importorskip("mediapipe")
    from keras_retinanet.detectors.mediapipe import MediaPipeDetector
    from keras_retinanet.detectors.tflite import TFLiteDetector
    from keras_retinanet.detectors.tflite_file import read_detection_metadata
    from keras_retinanet.export.metadata import add_detection_metadata
    from keras_retinanet.imaging import read_image

    names = detector_like["class_names"]
    data = Path(detector_like["tflite"]).read_bytes()
    images = [read_image(p) for p in detector_like["images"]]
    plain_path, calibrated_path = tmp_path / "plain.tflite", tmp_path / "calibrated.tflite"
    plain_path.write_bytes(add_detection_metadata(data, labels=names, name="t", description="t", version="1"))
    with MediaPipeDetector(plain_path) as detector:
        plain = detector.detect(images)
    classes = np.concatenate([d.classes for d in plain])
    scores = np.concatenate([d.scores for d in plain])
    thresholds = np.zeros(len(names), np.float32)
    thresholds[0] = _cut(scores[classes == 0])
    thresholds[1] = 1.0
    calibrated_path.write_bytes(
        add_detection_metadata(
            data, labels=names, name="t", description="t", version="1", class_thresholds=thresholds
        )
    )
    assert read_detection_metadata(calibrated_path)["class_thresholds"] == pytest.approx(thresholds.tolist())
    assert read_detection_metadata(plain_path)["class_thresholds"] is None

    with MediaPipeDetector(calibrated_path) as detector:
        np.testing.assert_allclose(detector.class_thresholds, thresholds)
        calibrated = detector.detect(images)
        # MediaPipe itself applies the calibration: without the Python filter, the rows under their class's
        # threshold come back with score 0 (the default score), the others unchanged.
        detector.class_thresholds = None
        raw = detector.detect(images)
    for before, after, unfiltered in zip(plain, calibrated, raw, strict=True):
        boxes, kept_scores, kept_classes = _filtered(before, thresholds)
        assert len(kept_scores) < len(before)
        np.testing.assert_array_equal(after.classes, kept_classes)
        np.testing.assert_allclose(after.scores, kept_scores, atol=1e-5)
        np.testing.assert_allclose(after.boxes, boxes, atol=1e-3)
        assert int(np.sum(unfiltered.scores == 0)) == len(before) - len(kept_scores)

    # LiteRT ignores metadata; TFLiteDetector reads the thresholds back and applies them.
    litert_plain = TFLiteDetector(plain_path).detect(images)
    litert_calibrated = TFLiteDetector(calibrated_path).detect(images)
    for before, after in zip(litert_plain, litert_calibrated, strict=True):
        _, kept_scores, kept_classes = _filtered(before, thresholds)
        np.testing.assert_array_equal(after.classes, kept_classes)
        np.testing.assert_allclose(after.scores, kept_scores)
