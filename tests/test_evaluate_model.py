"""End-to-end evaluation with a model: ``retinanet evaluate``, EvaluationCallback, model-kind parity."""

import json

import keras
import numpy as np
import pytest
from retinanet_testing import tiny_retinanet

from keras_retinanet import cli, evaluate, inference
from keras_retinanet.callbacks import EvaluationCallback

CLASS_NAMES = ["Platelets", "RBC", "WBC"]
IDS = ["BloodImage_00000", "BloodImage_00001"]


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    model = tiny_retinanet(3, class_names=CLASS_NAMES)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return str(path)


def test_evaluate_command_writes_json_and_pr_curves(tiny_model_path, bccd_subset, tmp_path, capsys):
    root = bccd_subset(IDS, split="test")
    out = tmp_path / "metrics.json"
    code = cli.main(
        [
            "evaluate",
            tiny_model_path,
            "--data",
            f"voc:{root}:test",
            "--json",
            str(out),
            "--pr-curves",
            str(tmp_path / "pr"),
            "--image-size",
            "128",
            "--score-threshold",
            "0",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "per_class"}
    assert set(metrics["per_class"]) == set(CLASS_NAMES)
    assert all(-1 <= metrics[k] <= 1 for k in evaluate.METRIC_KEYS)
    assert "AP50" in captured.out and "RBC" in captured.out
    # These two images have no platelet: its AP is undefined (-1, "n/a") and it gets no PR curve.
    assert metrics["per_class"]["Platelets"] == {"AP": -1.0, "AP50": -1.0}
    assert sorted(p.name for p in (tmp_path / "pr").iterdir()) == ["pr_RBC.png", "pr_WBC.png"]


def test_evaluate_command_bad_model_and_bad_data(tiny_model_path, tmp_path, capsys):
    bad = tmp_path / "m.tflite"
    bad.write_text("hello")
    assert cli.main(["evaluate", str(bad), "--data", "voc:/nonexistent"]) == 2
    assert "not a TFLite flatbuffer" in capsys.readouterr().err
    assert cli.main(["evaluate", tiny_model_path, "--data", f"voc:{tmp_path}/nothing:test"]) == 2
    assert "cannot load dataset" in capsys.readouterr().err


def test_model_detections_as_ground_truth_give_ap_one(tiny_model_path, shared_datasets):
    # The model's own detections (all of them) used as ground truth: evaluate_model must find AP = 1,
    # which checks the whole chain image -> letterbox -> model -> boxes in original pixels -> pycocotools.
    paths = [str(shared_datasets / "bccd" / "BCCD" / "JPEGImages" / f"{i}.jpg") for i in IDS]
    detector = inference.load_detector(
        tiny_model_path, image_size=128, score_threshold=0.0, max_detections=100
    )
    detections = inference.predict(detector, paths)
    examples = []
    for k, (path, det) in enumerate(zip(paths, detections, strict=True)):
        examples.append(
            {
                "image_path": path,
                "image_id": k,
                "boxes": det.boxes,
                "classes": det.classes,
                "ignore": np.zeros(len(det), bool),
                "height": 480,
                "width": 640,
            }
        )
    metrics = evaluate.evaluate_model(detector, examples, class_names=CLASS_NAMES, progress=False)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)


def test_callback_logs_val_ap_during_fit(bccd_subset, tmp_path):
    from keras_retinanet.data import load_dataset
    from keras_retinanet.data.pipeline import make_training_dataset

    root = bccd_subset(IDS, split="train")
    data = load_dataset(f"voc:{root}:train", class_names=CLASS_NAMES)
    model = tiny_retinanet(3, class_names=data.class_names)
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    train = make_training_dataset(data, model.label_encoder(), image_size=128, batch_size=2, seed=0)
    callback = EvaluationCallback(data, every_n_epochs=1, image_size=128, score_threshold=0.0, verbose=0)
    best = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(str(best), monitor="val_AP", mode="max", save_best_only=True)
    history = model.fit(train, epochs=1, callbacks=[callback, checkpoint], verbose=0)
    for key in ("val_AP", "val_AP50", "val_AR100"):
        assert key in history.history and len(history.history[key]) == 1
        assert 0.0 <= history.history[key][0] <= 1.0
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


def test_saved_model_gives_the_same_ap_as_keras(tiny_model_path, shared_datasets, tmp_path):
    # Issue 5: the same model as .keras and as SavedModel evaluates to the same AP (within 0.005).
    # Images are pre-resized to the export size, so both paths see identical pixels (no resampling).
    import cv2

    from keras_retinanet import export

    model = keras.saving.load_model(tiny_model_path, compile=False)
    model.decoder.score_threshold = 0.0  # the untrained model scores about 0.01
    saved = tmp_path / "export" / "saved_model"
    export.build_saved_model(model, saved, image_size=(128, 128))
    paths = []
    for i in IDS:
        image = cv2.imread(str(shared_datasets / "bccd" / "BCCD" / "JPEGImages" / f"{i}.jpg"))
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA))
    keras_detector = inference.load_detector(model, image_size=128, score_threshold=0.0)
    saved_detector = inference.load_detector(str(tmp_path / "export"), score_threshold=0.0)
    assert saved_detector.kind == "saved_model" and saved_detector.class_names == CLASS_NAMES
    reference = inference.predict(keras_detector, paths)
    examples = [
        {"image_path": p, "image_id": k, "boxes": d.boxes, "classes": d.classes, "height": 128, "width": 128}
        for k, (p, d) in enumerate(zip(paths, reference, strict=True))
    ]
    keras_metrics = evaluate.evaluate_model(keras_detector, examples, class_names=CLASS_NAMES, progress=False)
    saved_metrics = evaluate.evaluate_model(saved_detector, examples, class_names=CLASS_NAMES, progress=False)
    assert keras_metrics["AP"] == pytest.approx(1.0)
    assert abs(saved_metrics["AP"] - keras_metrics["AP"]) <= 0.005
    other = inference.predict(saved_detector, paths)
    np.testing.assert_allclose(other[0].scores[:5], reference[0].scores[:5], atol=1e-4)


@pytest.mark.slow
def test_tflite_file_evaluates_and_predicts(tiny_model_path, bccd_subset, tmp_path, capsys):
    # A builtin-op .tflite (TFLite_Detection_PostProcess outputs) runs through the same interface; its
    # detections equal those of export.TFLiteRunner, the export's own reference runner.
    from keras_retinanet import export

    model = keras.saving.load_model(tiny_model_path, compile=False)
    model.decoder.score_threshold = 0.0
    # Spread the untrained scores (all about the 0.01 prior otherwise): with ties to ~1e-8, which boxes win
    # depends on float rounding (e.g. XNNPACK's thread count), and the comparison below would be arbitrary.
    head = model.get_layer("classification_head")
    rng = np.random.default_rng(0)
    head.set_weights([rng.normal(0.0, 0.3, w.shape).astype("float32") for w in head.get_weights()])
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model_float32.tflite").write_bytes(
        export.convert_tflite(model, "float32", image_size=(128, 128))
    )
    (folder / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    path = str(folder / "model_float32.tflite")
    detector = inference.load_detector(path, score_threshold=0.0)
    assert (
        detector.kind == "tflite"
        and detector.class_names == CLASS_NAMES
        and detector.image_size == (128, 128)
    )
    root = bccd_subset(IDS, split="test")
    image = inference.read_image(root / "JPEGImages" / f"{IDS[0]}.jpg")
    # Both runners share one interpreter: two LiteRT interpreters in one process can differ in the last
    # float bits, and the untrained boxes sit on the anchor grid where IoUs hit the NMS threshold exactly.
    runner = export.TFLiteRunner(path, num_threads=1)
    detector.interpreter = runner.interpreter
    [ours] = detector.detect([image])
    reference = runner.detect(image)
    ref_rows = np.column_stack([reference["boxes"], reference["scores"]])
    our_rows = np.column_stack([ours.boxes, ours.scores])

    def solid(rows):
        # Boxes (nearly) collapsed by clipping survive or not depending on float rounding: leave them out.
        return rows[(rows[:, 2] - rows[:, 0] > 0.01) & (rows[:, 3] - rows[:, 1] > 0.01)]

    ours_solid, ref_solid = solid(our_rows), solid(ref_rows)
    assert len(ours_solid) == len(ref_solid) > 0
    # Same set of (box, score) rows: every row has a partner within 1e-3 (order among tied scores may differ).
    distance = np.abs(ours_solid[:, None, :] - ref_solid[None, :, :]).max(axis=-1)
    assert (distance.min(axis=1) < 1e-3).all() and (distance.min(axis=0) < 1e-3).all()
    assert (
        cli.main(
            [
                "evaluate",
                path,
                "--data",
                f"voc:{root}:test",
                "--score-threshold",
                "0",
                "--json",
                str(tmp_path / "m.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert set(json.loads((tmp_path / "m.json").read_text())) >= {"AP", "per_class"}
    assert (
        cli.main(
            [
                "predict",
                path,
                str(root / "JPEGImages"),
                "--out",
                str(tmp_path / "out"),
                "--score-threshold",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "out" / f"{IDS[1]}.jpg").exists()
    capsys.readouterr()
