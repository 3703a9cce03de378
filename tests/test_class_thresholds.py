"""keras_retinanet/detectors/class_thresholds.py: the per-class score thresholds file (written by `retinanet
evaluate --report`), applied by the detectors, `retinanet predict --class-thresholds`, the SavedModel export and
the TFLite metadata (MediaPipe score calibration)."""

import json
from pathlib import Path

import numpy as np
import pytest

from keras_retinanet import cli, detectors
from keras_retinanet.detectors.class_thresholds import (
    ClassThresholdsError,
    class_threshold_array,
    read_class_thresholds,
    write_class_thresholds,
)


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
