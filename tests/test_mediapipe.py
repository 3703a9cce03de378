"""The files ``retinanet export`` writes run in MediaPipe Tasks' ObjectDetector as they are, and give what
``TFLiteDetector`` gives (issue 12): what a phone app sees is what our tools measure.

MediaPipe is a test dependency (``make install`` puts it in the environment). Without it these tests skip,
except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from retinanet_testing import assert_rows_match_one_to_one, require_mediapipe

VARIANTS = ("float32", "float16", "int8")
BCCD_IDS = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"]  # 640 x 480 photos


@pytest.fixture(scope="module")
def mediapipe():
    """(mediapipe, mediapipe.tasks.python.vision, BaseOptions)."""
    return (
        require_mediapipe("mediapipe"),
        require_mediapipe("mediapipe.tasks.python.vision"),
        require_mediapipe("mediapipe.tasks.python.core.base_options").BaseOptions,
    )


@pytest.fixture(scope="module")
def exported(detector_like, tmp_path_factory, mediapipe) -> dict:
    """``retinanet export`` of the tiny detector-like model (3 classes, 128 px): float32, float16 and int8
    (calibrated on its 4 synthetic images), with metadata; and a float32 file written with --no-metadata."""
    from keras_retinanet import cli

    folder = tmp_path_factory.mktemp("mediapipe_export")
    common = ["--no-saved-model", "--parity-images", "0"]
    calibration = ["--calibration-data", detector_like["spec"], "--calibration-steps", "4"]
    assert (
        cli.main(["export", detector_like["keras"], "-o", str(folder / "export"), *common, *calibration]) == 0
    )
    plain = ["--tflite", "float32", "--no-metadata"]
    assert cli.main(["export", detector_like["keras"], "-o", str(folder / "plain"), *common, *plain]) == 0
    return {
        "files": {v: folder / "export" / f"model_{v}.tflite" for v in VARIANTS},
        "no_metadata": folder / "plain" / "model_float32.tflite",
        "names": list(detector_like["class_names"]),
    }


@pytest.fixture
def photos(bccd_subset) -> dict:
    """Real images: a 480 x 480 crop and a whole 480 x 640 BCCD photo (read as the tools read files)."""
    from keras_retinanet.imaging import read_image

    root = bccd_subset(BCCD_IDS[:1])
    photo = read_image(root / "JPEGImages" / f"{BCCD_IDS[0]}.jpg")
    assert photo.shape == (480, 640, 3)
    return {"square": np.ascontiguousarray(photo[:, 80:560]), "landscape": photo}


def _closing(detector):
    """Close a MediaPipeDetector however the test ends.

    An ObjectDetector left open is closed by its ``__del__``, which waits for its own executor thread to run the
    close call (mediapipe 1.2.3, tasks/python/core/mediapipe_c_utils.py). Run from a garbage-collection pass
    after failed tests (their tracebacks kept the detectors), that wait once hung this file for 15 minutes.
    """
    return contextlib.closing(detector)


def _mediapipe_rows(mediapipe, path, image: np.ndarray, names: list[str]) -> list[tuple]:
    """(class id, score, x, y, width, height) of MediaPipe's ObjectDetector with its DEFAULT options, one row
    per (box, category): MediaPipe merges detections whose integer boxes coincide into one with several
    categories (DetectionsDeduplicateCalculator), and names categories by the file's label map."""
    mp, vision, base_options = mediapipe
    options = vision.ObjectDetectorOptions(base_options=base_options(model_asset_path=str(path)))
    with vision.ObjectDetector.create_from_options(options) as detector:
        result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
    rows = []
    for detection in result.detections:
        box = detection.bounding_box
        for category in detection.categories:
            rows.append(
                (
                    names.index(category.category_name),
                    category.score,
                    box.origin_x,
                    box.origin_y,
                    box.width,
                    box.height,
                )
            )
    return rows


def _detector_rows(detections) -> list[tuple]:
    """Rows of :class:`Detections` in MediaPipe's form: (class id, score, x, y, width, height), floats."""
    x1, y1, x2, y2 = detections.boxes.T.astype(np.float64)
    return [
        (int(c), float(s), *box)
        for c, s, box in zip(detections.classes, detections.scores, zip(x1, y1, x2 - x1, y2 - y1))
    ]


def _assert_same_detections(mediapipe_rows: list[tuple], litert_rows: list[tuple], where: str) -> None:
    """Same detections: one to one, same class, scores within 1e-4, box within 1 px.

    MediaPipe reports integer boxes: origin and size, each truncated from the float box
    (detection_transformation_calculator.cc), so origin and size are each within 1 px of the float box.
    """
    # MediaPipe also reports boxes whose integer width or height is 0 (boxes that the graph clipped to the
    # image edge); TFLiteDetector, like every detector here, drops boxes under 1 px (detectors.base.MIN_BOX_SIDE).
    mediapipe_rows = [row for row in mediapipe_rows if row[4] >= 1 and row[5] >= 1]
    assert_rows_match_one_to_one(mediapipe_rows, litert_rows, 1.0, where, ("MediaPipe", "LiteRT"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_mediapipe_default_options_give_tflite_detector_detections(exported, mediapipe, photos, variant):
    from keras_retinanet.detectors import MediaPipeDetector, TFLiteDetector
    from keras_retinanet.detectors.tflite_file import read_detection_metadata

    path = exported["files"][variant]
    names = exported["names"]
    assert read_detection_metadata(path)["labels"] == names
    litert = TFLiteDetector(path)  # defaults: every core, MediaPipe's stretch
    assert litert.class_names == names
    with _closing(MediaPipeDetector(path)) as wrapped:
        assert wrapped.class_names == names and wrapped.image_size == litert.image_size
        for kind, image in photos.items():
            where = f"{variant}, {kind} image {image.shape[:2]}"
            rows = _mediapipe_rows(mediapipe, path, image, names)
            (found,) = litert.detect([image])
            assert len(set(found.classes.tolist())) >= 2, where  # several classes, not one
            _assert_same_detections(rows, _detector_rows(found), where)
            # MediaPipeDetector (what `--runtime mediapipe` uses) reports MediaPipe's rows, less those under 1 px.
            (wrapped_found,) = wrapped.detect([image])
            assert sorted(_detector_rows(wrapped_found)) == sorted(
                (c, s, float(x), float(y), float(w), float(h))
                for c, s, x, y, w, h in rows
                if w >= 1 and h >= 1
            ), where
            assert wrapped_found.names == [names[c] for c in wrapped_found.classes]


def _coco_from_detections(
    folder, images: dict, detections: dict, names: list[str], min_score: float, min_side: float
) -> str:
    """A COCO data set whose ground truth is ``detections`` scoring >= ``min_score`` with both sides >=
    ``min_side`` pixels; returns its spec."""
    import cv2

    records, annotations = [], []
    for image_id, (file_name, image) in enumerate(images.items(), start=1):
        cv2.imwrite(str(folder / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        records.append(
            {"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]}
        )
        found = detections[file_name]
        for box, score, label in zip(found.boxes, found.scores, found.classes):
            x1, y1, x2, y2 = (float(v) for v in box)
            if score >= min_score and min(x2 - x1, y2 - y1) >= min_side:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": int(label) + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }
                )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": records, "annotations": annotations, "categories": categories}))
    return f"coco:{path}:{folder}"


def test_evaluate_runtime_mediapipe_gives_litert_ap(exported, mediapipe, bccd_subset, tmp_path):
    """``retinanet evaluate FILE --runtime mediapipe`` against ``--runtime litert`` on the same int8 file.

    The ground truth is LiteRT's own confident detections on three BCCD photos (PNG, lossless), so LiteRT's AP
    is high and MediaPipe's AP shows how far its detections are from LiteRT's: a different resize or box
    mapping would cost tens of points at the strict IoU thresholds. Only objects of at least 32 px a side (COCO's
    medium and large) are ground truth: MediaPipe truncates box origins and sizes to whole pixels, which alone
    moves a box of a few pixels below IoU 0.95 (its boxes are compared within 1 px in the test above).
    """
    from keras_retinanet import cli
    from keras_retinanet.detectors import TFLiteDetector
    from keras_retinanet.imaging import read_image

    root = bccd_subset(BCCD_IDS)
    images = {f"{i}.png": read_image(root / "JPEGImages" / f"{i}.jpg") for i in BCCD_IDS}
    path = exported["files"]["int8"]
    detector = TFLiteDetector(path)
    detections = dict(zip(images, detector.detect(list(images.values())), strict=True))
    data = tmp_path / "data"
    data.mkdir()
    spec = _coco_from_detections(data, images, detections, exported["names"], min_score=0.3, min_side=32)
    assert len(json.loads((data / "annotations.json").read_text())["annotations"]) >= 10

    metrics = {}
    for runtime in ("litert", "mediapipe"):
        out = tmp_path / f"{runtime}.json"
        argv = [
            "evaluate",
            str(path),
            "--data",
            spec,
            "--runtime",
            runtime,
            "--json",
            str(out),
            "--no-progress",
        ]
        assert cli.main(argv) == 0
        metrics[runtime] = json.loads(out.read_text())
    assert metrics["litert"]["AP"] > 0.9
    assert abs(metrics["mediapipe"]["AP"] - metrics["litert"]["AP"]) <= 0.005, metrics
    assert abs(metrics["mediapipe"]["AP50"] - metrics["litert"]["AP50"]) <= 0.005, metrics


def test_predict_runtime_mediapipe(exported, mediapipe, photos, tmp_path):
    """``retinanet predict --runtime mediapipe`` writes MediaPipe's detections (those >= its threshold)."""
    import cv2

    from keras_retinanet import cli
    from keras_retinanet.detectors import MediaPipeDetector

    image = photos["landscape"]
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    path = exported["files"]["float32"]
    argv = ["predict", str(path), str(tmp_path / "photo.png"), "--out", str(tmp_path / "out"), "--runtime"]
    assert cli.main([*argv, "mediapipe", "--score-threshold", "0.3", "--no-draw", "--no-progress"]) == 0
    written = json.loads((tmp_path / "out" / "detections.json").read_text())
    with _closing(MediaPipeDetector(path, score_threshold=0.3)) as detector:
        (want,) = detector.detect([image])
    assert len(written) == len(want) > 0
    assert sorted((d["category_name"], round(d["score"], 5)) for d in written) == sorted(
        (name, round(float(s), 5)) for name, s in zip(want.names, want.scores)
    )


def test_a_file_without_metadata_gets_a_clear_error_for_mediapipe(exported, mediapipe, photos, capsys):
    from keras_retinanet import cli
    from keras_retinanet.detectors import ModelFileError, TFLiteDetector, load_detector
    from keras_retinanet.detectors.tflite_file import read_detection_metadata

    path = exported["no_metadata"]
    assert read_detection_metadata(path) is None
    with pytest.raises(ModelFileError, match=f"{path} has no TFLite Model Metadata.*export it again"):
        load_detector(str(path), runtime="mediapipe")
    capsys.readouterr()
    code = cli.main(["evaluate", str(path), "--data", "coco:unused.json", "--runtime", "mediapipe"])
    assert code == 2
    error = capsys.readouterr().err
    assert "has no TFLite Model Metadata" in error and str(path) in error and "Traceback" not in error

    # LiteRT runs it: the same network as the file with metadata, class names from labels.txt beside it.
    litert = TFLiteDetector(path)
    assert litert.class_names == exported["names"]
    with_metadata = TFLiteDetector(exported["files"]["float32"])
    for image in photos.values():
        (got,), (want,) = litert.detect([image]), with_metadata.detect([image])
        assert len(got) > 0
        np.testing.assert_array_equal(got.classes, want.classes)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.boxes, want.boxes)
