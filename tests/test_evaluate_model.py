"""End-to-end evaluation with a model: ``retinanet evaluate``, ``evaluate_model``, EvaluationCallback, and the
exported files (SavedModel, TFLite) against answers computed without the code under test."""

import json
import os
import shutil

import cv2
import keras
import numpy as np
import pytest
from retinanet_testing import (
    keras_detections_by_hand,
    make_detector_like,
    tflite_detections_by_hand,
    tiny_retinanet,
)

from keras_retinanet import cli, detectors, evaluation
from keras_retinanet.imaging import letterbox, read_image
from keras_retinanet.training.callbacks import EvaluationCallback

CLASS_NAMES = ["Platelets", "RBC", "WBC"]
IDS = ["BloodImage_00000", "BloodImage_00001"]


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    model = tiny_retinanet(3, class_names=CLASS_NAMES)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return str(path)


def test_evaluate_command_writes_json_and_pr_curves(
    tiny_model_path, detector_like, bccd_subset, tmp_path, capsys
):
    # A .keras model with decoder settings on the command line: the JSON holds the metrics of the model's
    # detections computed by hand with the same settings (letterbox, model.detect, divide by the scale).
    model = detectors.load_retinanet(detector_like["keras"])
    names, paths = detector_like["class_names"], detector_like["images"]
    reference = [
        keras_detections_by_hand(model, read_image(p), score_threshold=0.1, max_detections=50) for p in paths
    ]
    examples = _examples_from(reference, paths, (120, 160))
    expected = evaluation.evaluate_detections(examples, reference, names)
    assert 0.2 < expected["AP"] < 0.9, expected
    spec = _coco_spec(examples, names, paths, tmp_path)
    out = tmp_path / "metrics.json"
    code = cli.main(
        [
            "evaluate", detector_like["keras"], "--data", spec, "--json", str(out), "--pr-curves",
            str(tmp_path / "pr"), "--score-threshold", "0.1", "--max-detections", "50", "--no-progress",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "per_class"}
    for key in evaluation.METRIC_KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    for name in names:
        assert metrics["per_class"][name] == pytest.approx(expected["per_class"][name], abs=1e-6), name
    assert f"AP50     {expected['AP50']:6.3f}" in captured.out.splitlines()  # a fraction, as everywhere
    assert sorted(p.name for p in (tmp_path / "pr").iterdir()) == sorted(f"pr_{n}.png" for n in names)
    # BCCD, whose two images have no platelet: its AP is undefined (-1, "n/a") and it gets no PR curve.
    root = bccd_subset(IDS, split="test")
    out = tmp_path / "bccd.json"
    code = cli.main(
        [
            "evaluate", tiny_model_path, "--data", f"voc:{root}:test", "--json", str(out), "--pr-curves",
            str(tmp_path / "pr_bccd"), "--image-size", "128", "--score-threshold", "0", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads(out.read_text())
    assert metrics["per_class"]["Platelets"] == {"AP": -1.0, "AP50": -1.0}
    assert sorted(p.name for p in (tmp_path / "pr_bccd").iterdir()) == ["pr_RBC.png", "pr_WBC.png"]
    # The curves' folder, as the report's, is written whole beside it; one that holds files needs --overwrite.
    again = [
        "evaluate",
        tiny_model_path,
        "--data",
        f"voc:{root}:test",
        "--pr-curves",
        str(tmp_path / "pr_bccd"),
    ]
    assert cli.main([*again, "--image-size", "128", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--pr-curves {tmp_path / 'pr_bccd'} already holds 2 file(s)" in err and "--overwrite" in err
    assert cli.main([*again, "--image-size", "128", "--no-progress", "--overwrite"]) == 0
    assert not list(tmp_path.glob(".pr_bccd*"))


def _coco_spec(examples, names, paths, folder) -> str:
    """A COCO file of ``examples`` in ``folder`` and its dataset spec (images where ``paths`` are)."""
    coco = evaluation.examples_to_coco(examples, names)
    for image in coco["images"]:
        image["file_name"] = os.path.basename(image["file_name"])
    (folder / "gt.json").write_text(json.dumps(coco))
    return f"coco:{folder / 'gt.json'}:{os.path.dirname(paths[0])}"


def test_evaluate_command_bad_model_and_bad_data(tiny_model_path, tmp_path, capsys):
    bad = tmp_path / "m.tflite"
    bad.write_text("hello")
    assert cli.main(["evaluate", str(bad), "--data", "voc:/nonexistent"]) == 2
    assert "not a TFLite flatbuffer" in capsys.readouterr().err
    assert cli.main(["evaluate", tiny_model_path, "--data", f"voc:{tmp_path}/nothing:test"]) == 2
    err = capsys.readouterr().err
    assert "nothing/Annotations" in err and "not found" in err


class _KnownBoxes(detectors.Detector):
    """Returns fixed detections, chosen by the grey value of the image it is given; records the image shapes.

    Its classes are ordered ["dot", "cell", "other"]: evaluate_model must map them to the data's ["cell", "dot"]
    by name and drop "other".
    """

    format = "stub"

    def __init__(self, by_grey_value):
        super().__init__(["dot", "cell", "other"], None, None)
        self.by_grey_value = by_grey_value
        self.shapes = []

    def detect(self, images):
        results = []
        for image in images:
            self.shapes.append(image.shape)
            boxes, scores, classes = self.by_grey_value[int(image[0, 0, 0])]
            results.append(self.make_detections(boxes, scores, classes, image.shape))
        return results


def test_evaluate_model_scores_what_the_detector_returns(tmp_path):
    """paths -> read with the example's orientation -> detector -> classes remapped by name -> pycocotools,
    against AP worked out by hand."""
    cv2.imwrite(str(tmp_path / "a.png"), np.full((480, 640, 3), 10, np.uint8))
    # Stored 480 x 640; the example's EXIF orientation 6 (rotate 90 degrees clockwise) shows it 640 x 480.
    cv2.imwrite(str(tmp_path / "b.png"), np.full((480, 640, 3), 20, np.uint8))
    examples = [
        {
            "image_path": str(tmp_path / "a.png"),
            "image_id": 1,
            "boxes": np.array([[200, 200, 300, 300], [0, 0, 100, 100]], np.float32),
            "classes": np.array([0, 0]),
            "height": 480,
            "width": 640,
        },
        {
            "image_path": str(tmp_path / "b.png"),
            "image_id": 2,
            "boxes": np.array([[10, 500, 110, 600]], np.float32),  # below row 480: only in the rotated image
            "classes": np.array([1]),
            "height": 640,
            "width": 480,
            "orientation": 6,
        },
    ]
    cell, dot, other = 1, 0, 2  # the detector's class ids
    detector = _KnownBoxes(
        {
            # "cell": the exact first box (0.9), a false positive (0.8), the second box cut to 62 rows
            # (IoU 0.62, 0.7); "other" exactly on a cell box (dropped: not a class of the data).
            10: (
                [[200, 200, 300, 300], [400, 400, 450, 450], [0, 0, 100, 62], [200, 200, 300, 300]],
                [0.9, 0.8, 0.7, 0.95],
                [cell, cell, cell, other],
            ),
            # "dot": exactly its box.
            20: ([[10, 500, 110, 600]], [0.6], [dot]),
        }
    )
    metrics = evaluation.evaluate_model(detector, examples, class_names=["cell", "dot"], progress=False)
    assert sorted(detector.shapes) == [(480, 640, 3), (640, 480, 3)]
    # "cell", by hand (COCO: 10 IoU thresholds, 101 recall points, precision made monotone):
    #   IoU .50-.60 (3 thresholds): TP, FP, TP -> precision 1 up to recall .5, then 2/3:
    #     AP_t = (51 + 50 * 2/3) / 101;  IoU .65-.95 (7): only d1 -> AP_t = 51 / 101.
    #   AP = (3 * (51 + 100/3) + 7 * 51) / 1010 = 610 / 1010; AP50 = (51 + 100/3) / 101; recall (3 + 3.5) / 10.
    # "dot": one exact detection -> 1 everywhere. The metrics are means over the two classes.
    cell_ap, cell_ap50 = 610 / 1010, (51 + 100 / 3) / 101
    assert metrics["per_class"]["cell"]["AP"] == pytest.approx(cell_ap, abs=1e-6)
    assert metrics["per_class"]["cell"]["AP50"] == pytest.approx(cell_ap50, abs=1e-6)
    assert metrics["per_class"]["dot"] == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}
    assert metrics["AP"] == pytest.approx((cell_ap + 1) / 2, abs=1e-6)
    assert metrics["AP50"] == pytest.approx((cell_ap50 + 1) / 2, abs=1e-6)
    assert metrics["AR100"] == pytest.approx((0.65 + 1) / 2, abs=1e-6)
    assert metrics["APs"] == -1.0 and metrics["APm"] == -1.0  # every ground-truth box is large (100 x 100)


def test_callback_logs_val_ap_during_fit(bccd_subset, tmp_path):
    from keras_retinanet.data import load_dataset
    from keras_retinanet.data.pipeline import make_training_dataset

    root = bccd_subset(IDS, split="train")
    data = load_dataset(f"voc:{root}:train", class_names=CLASS_NAMES)
    keras.utils.set_random_seed(0)
    model = tiny_retinanet(3, class_names=data.class_names)
    canvases = np.stack([letterbox(read_image(e["image_path"]), (128, 128))[0] for e in data.examples])
    make_detector_like(model, canvases.astype("float32"))
    # A fit that leaves the model as it is (rate 0, BatchNorm statistics frozen), evaluated on ground truth made
    # of half the model's own detections: a known, non-trivial AP that the logged val_AP must equal.
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    paths = [e["image_path"] for e in data.examples]
    reference = [keras_detections_by_hand(model, read_image(p), 128, score_threshold=0.0) for p in paths]
    examples = _examples_from(reference, paths, read_image(paths[0]).shape[:2])
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    train = make_training_dataset(data, model.label_encoder(), image_size=128, batch_size=2, seed=0)
    callback = EvaluationCallback(
        examples, class_names=CLASS_NAMES, every_n_epochs=1, image_size=128, score_threshold=0.0, verbose=0
    )
    best = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(str(best), monitor="val_AP", mode="max", save_best_only=True)
    history = model.fit(train, epochs=1, callbacks=[callback, checkpoint], verbose=0)
    # The model's detections after the epoch computed by hand (letterbox, eager model.detect, unscale), scored
    # by pycocotools.
    by_hand = [keras_detections_by_hand(model, read_image(p), 128, score_threshold=0.0) for p in paths]
    expected = evaluation.evaluate_detections(examples, by_hand, CLASS_NAMES)
    assert 0.1 < expected["AP"] < 1.0, expected  # half the detections are false positives: non-trivial
    for key in ("AP", "AP50", "AR100"):
        assert history.history[f"val_{key}"] == [pytest.approx(expected[key], abs=1e-4)], key
    assert best.exists()  # ModelCheckpoint could read val_AP
    assert len(callback.history) == 1 and "per_class" in callback.history[0][1]


def test_callback_every_n_epochs():
    callback = EvaluationCallback(
        [{"image_path": "x.jpg", "boxes": np.zeros((0, 4)), "classes": np.zeros(0)}],
        every_n_epochs=3,
        class_names=["a"],
    )
    callback.set_params({"epochs": 7})
    callback.on_train_begin()
    assert [e for e in range(7) if callback._due(e)] == [2, 5, 6]
    with pytest.raises(ValueError):
        EvaluationCallback([], class_names=["a"])


def _examples_from(reference, paths, image_shape):
    """Ground truth made of every other of the 12 best reference detections of each image.

    The reference (computed without the detector classes) then scores a known, non-trivial AP: the other
    detections are false positives, some overlapping the ground truth. A detector whose boxes, scores or classes
    differ from the reference gets another AP.
    """
    return [
        {
            "image_path": path,
            "image_id": k,
            "boxes": ref["boxes"][:12:2],
            "classes": ref["classes"][:12:2],
            "height": image_shape[0],
            "width": image_shape[1],
        }
        for k, (path, ref) in enumerate(zip(paths, reference, strict=True))
    ]


def test_saved_model_gives_the_ap_of_the_keras_model(detector_like, tmp_path):
    # Issue 5: the same model as .keras and as SavedModel evaluates to the same AP. Both are checked against the
    # AP of the Keras model's detections computed by hand (letterbox, model.detect, divide by the scale).
    from keras_retinanet.export import build_saved_model

    model = detectors.load_retinanet(detector_like["keras"])
    build_saved_model(model, tmp_path / "export" / "saved_model")
    paths = detector_like["images"]
    reference = [keras_detections_by_hand(model, read_image(p)) for p in paths]
    examples = _examples_from(reference, paths, (120, 160))
    names = detector_like["class_names"]
    expected = evaluation.evaluate_detections(examples, reference, names)
    assert 0.2 < expected["AP"] < 0.9, expected
    saved = detectors.load_detector(str(tmp_path / "export"))
    assert saved.format == "saved_model" and saved.class_names == names
    for model_or_path in (model, saved):
        metrics = evaluation.evaluate_model(model_or_path, examples, class_names=names, progress=False)
        for key in evaluation.METRIC_KEYS:
            assert metrics[key] == pytest.approx(expected[key], abs=0.005), (model_or_path, key)


def test_tflite_detector_is_the_file_run_by_hand(detector_like):
    path = detector_like["tflite"]
    detector = detectors.load_detector(path)
    assert detector.format == "tflite" and detector.class_names == detector_like["class_names"]
    assert detector.image_size == (128, 128) and detector.resize == "stretch"
    images = [read_image(p) for p in detector_like["images"]]
    letterboxed = detectors.TFLiteDetector(path, resize="letterbox").detect(images)
    for image, found, found_letterboxed in zip(images, detector.detect(images), letterboxed, strict=True):
        for dets, resize in ((found, "stretch"), (found_letterboxed, "letterbox")):
            expected = tflite_detections_by_hand(path, image, resize)
            assert len(dets) == len(expected["scores"]) > 20, resize
            np.testing.assert_allclose(dets.boxes, expected["boxes"], atol=1e-3)
            np.testing.assert_array_equal(dets.scores, expected["scores"])
            np.testing.assert_array_equal(dets.classes, expected["classes"])
            assert dets.image_size == (120, 160)
    # A threshold on the detector keeps the rows at or above it, in the same order; max_detections the best.
    expected = tflite_detections_by_hand(path, images[0])
    [high] = detectors.load_detector(path, score_threshold=0.5).detect(images[:1])
    np.testing.assert_array_equal(high.scores, expected["scores"][expected["scores"] >= 0.5])
    [top] = detectors.load_detector(path, max_detections=5).detect(images[:1])
    assert 0 < len(top) <= 5
    np.testing.assert_array_equal(top.scores, expected["scores"][: len(top)])


def test_tflite_detector_threads(detector_like, monkeypatch):
    """Every core by default (the exported NMS is thread-safe; tests/test_tflite_threads.py compares 1, 2 and 4
    threads), the count asked for otherwise, through every way of loading a file."""
    from ai_edge_litert import interpreter as litert

    threads = []

    class Recording(litert.Interpreter):
        def __init__(self, *args, **kwargs):
            threads.append(kwargs.get("num_threads"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(litert, "Interpreter", Recording)
    path = detector_like["tflite"]
    default = detectors.TFLiteDetector(path)
    loaded = detectors.load_detector(path, score_threshold=0.1)
    single = detectors.load_detector(path, num_threads=1)
    cores = os.cpu_count() or 1
    assert threads == [cores, cores, 1]
    assert (default.num_threads, loaded.num_threads, single.num_threads) == (cores, cores, 1)
    images = [read_image(p) for p in detector_like["images"]]
    for a, b in zip(default.detect(images), single.detect(images), strict=True):
        assert len(a) > 20 and len(set(a.classes.tolist())) == 3
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.classes, b.classes)


def test_tflite_file_evaluates_and_predicts(detector_like, tmp_path, capsys):
    # `retinanet evaluate` on a .tflite and a COCO file: the metrics of the file's detections computed by hand.
    path = detector_like["tflite"]
    names = detector_like["class_names"]
    paths = detector_like["images"]
    reference = [tflite_detections_by_hand(path, read_image(p)) for p in paths]
    examples = _examples_from(reference, paths, (120, 160))
    expected = evaluation.evaluate_detections(examples, reference, names)
    assert 0.2 < expected["AP"] < 0.9, expected
    spec = _coco_spec(examples, names, paths, tmp_path)
    out = tmp_path / "m.json"
    code = cli.main(["evaluate", path, "--data", spec, "--json", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads(out.read_text())
    for key in evaluation.METRIC_KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    # `retinanet predict` on the .tflite draws every image and writes the file's detections above 0.3.
    folder = tmp_path / "images"
    folder.mkdir()
    for p in paths:
        shutil.copy(p, folder)
    code = cli.main(["predict", path, str(folder), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(results) == sum(int((ref["scores"] >= 0.3).sum()) for ref in reference)
    for p in paths:
        assert (tmp_path / "out" / os.path.basename(p)).exists()
