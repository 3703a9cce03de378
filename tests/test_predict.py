"""Tests for keras_retinanet.detectors, keras_retinanet.visualize and ``retinanet predict``."""

import json
import shutil

import cv2
import numpy as np
import pytest
from retinanet_testing import bccd_source, keras_detections_by_hand, tiny_retinanet

from keras_retinanet import cli, detectors
from keras_retinanet.imaging import read_image
from keras_retinanet.visualize import draw_detections

CLASS_NAMES = ["Platelets", "RBC", "WBC"]
BCCD_IMAGES = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"]


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    """A tiny untrained RetinaNet saved as .keras (3 BCCD classes)."""
    import keras

    # Seeded: an untrained model's few kept detections (the video test wants one per frame) depend on its
    # random weights, which would otherwise depend on what earlier tests drew.
    keras.utils.set_random_seed(0)
    model = tiny_retinanet(3, class_names=CLASS_NAMES)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return str(path)


@pytest.fixture
def image_folder(tmp_path):
    """Three real BCCD images (640x480) and one corrupt file in a tmp folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in BCCD_IMAGES:
        shutil.copy(bccd_source(BCCD_IMAGES) / "JPEGImages" / f"{name}.jpg", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return folder


class _StubModel:
    """Stands in for a RetinaNet: returns fixed detections in network-input pixels and records its input."""

    class_names = ["a", "b"]
    decoder = None

    def __init__(self):
        self.shapes = []

    def detect(self, images):
        self.shapes.append(tuple(images.shape))
        batch = images.shape[0]
        boxes = np.zeros((batch, 3, 4), np.float32)
        boxes[:, 0] = [20, 10, 60, 50]  # inside the resized content
        boxes[:, 1] = [0, 100, 50, 120]  # entirely in the bottom padding (content is 96 rows high)
        return {
            "boxes": boxes,
            "scores": np.tile(np.array([[0.9, 0.8, 0.0]], np.float32), (batch, 1)),
            "classes": np.tile(np.array([[1, 0, -1]], np.int32), (batch, 1)),
            "num_detections": np.full((batch,), 2, np.int32),
        }


def test_boxes_map_back_to_original_pixels_hand_calculation():
    # 640x480 image letterboxed into 128x128: scale = min(128/480, 128/640) = 0.2, content 96 x 128 at the
    # top-left. A network box (20, 10, 60, 50) is (20/0.2, 10/0.2, 60/0.2, 50/0.2) = (100, 50, 300, 250) in
    # the original. The second box lies in the padding (y >= 96 -> y >= 480 after scaling): clipped to the
    # image it has zero height and is dropped.
    stub = _StubModel()
    detector = detectors.load_detector(stub, image_size=128)
    image = np.zeros((480, 640, 3), np.uint8)
    [dets] = detector.detect([image])
    assert stub.shapes == [(1, 128, 128, 3)]
    np.testing.assert_allclose(dets.boxes, [[100, 50, 300, 250]], atol=1e-4)
    np.testing.assert_allclose(dets.scores, [0.9])
    assert dets.classes.tolist() == [1] and dets.names == ["b"] and dets.image_size == (480, 640)
    # A portrait image (h=200, w=100) in (128, 128): scale 0.64, content 128 x 64; (20, 10, 60, 50) ->
    # (31.25, 15.625, 93.75, 78.125).
    [dets] = detector.detect([np.zeros((200, 100, 3), np.uint8)])
    np.testing.assert_allclose(dets.boxes[0], [31.25, 15.625, 93.75, 78.125], atol=1e-4)


def test_keras_detector_matches_model_on_letterboxed_image(detector_like):
    from keras_retinanet.detectors import load_retinanet

    model = load_retinanet(detector_like["keras"])
    assert model.image_size == (128, 128)
    image = read_image(detector_like["images"][0])
    assert image.shape == (120, 160, 3)  # letterboxed with scale 0.8 into 96 x 128, padding below
    # Default settings: the model's input size and its own decoder (threshold 0.05, 100 detections).
    [dets] = detectors.load_detector(detector_like["keras"]).detect([image])
    expected = keras_detections_by_hand(model, image)
    assert len(dets) == len(expected["scores"]) > 20
    np.testing.assert_allclose(dets.boxes, expected["boxes"], atol=1e-3)
    np.testing.assert_allclose(dets.scores, expected["scores"], atol=1e-5)  # graph vs eager: ~2e-6 apart
    np.testing.assert_array_equal(dets.classes, expected["classes"])
    assert dets.names == [detector_like["class_names"][c] for c in expected["classes"]]
    assert dets.image_size == (120, 160)
    # Settings given to the detector replace the decoder's for its predictions only.
    [custom] = detectors.load_detector(model, score_threshold=0.5, max_detections=7).detect([image])
    expected = keras_detections_by_hand(model, image, score_threshold=0.5, max_detections=7)
    assert 0 < len(custom) == len(expected["scores"]) <= 7 and custom.scores.min() >= 0.5
    np.testing.assert_allclose(custom.boxes, expected["boxes"], atol=1e-3)
    np.testing.assert_array_equal(custom.classes, expected["classes"])
    assert (model.decoder.score_threshold, model.decoder.max_detections) == (0.05, 100)


def test_predict_name_is_the_one_call_function():
    # keras_retinanet.detectors.predict must stay the function whatever was imported before: a submodule of
    # the same name replaces the package attribute as soon as anything imports it.
    from keras_retinanet.detectors import predict_paths  # noqa: F401 - imports the module defining it

    assert callable(detectors.predict), detectors.predict
    from keras_retinanet.detectors import predict

    assert callable(predict) and predict.__name__ == "predict"


def test_predict_command_on_folder_reports_corrupt_image(tiny_model_path, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(
        [
            "predict",
            tiny_model_path,
            str(image_folder),
            "--out",
            str(out),
            "--image-size",
            "128",
            "--score-threshold",
            "0",
            "--max-detections",
            "5",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.jpg" in err and "1 input(s) failed" in err
    for name in BCCD_IMAGES:
        drawn = cv2.imread(str(out / f"{name}.jpg"))
        assert drawn is not None and drawn.shape == (480, 640, 3)
    assert not (out / "broken.jpg").exists()
    results = json.loads((out / "detections.json").read_text())
    assert {r["file_name"].rsplit("/", 1)[-1] for r in results} == {f"{n}.jpg" for n in BCCD_IMAGES}
    # Each image's rows are the model's detections at --image-size 128, score threshold 0 and at most 5 (fewer
    # when untrained boxes fall into the letterbox padding), worked out without the detector classes.
    model = detectors.load_retinanet(tiny_model_path)
    for name in BCCD_IMAGES:
        rows = [r for r in results if r["file_name"].endswith(f"/{name}.jpg")]
        _assert_rows_by_hand(rows, model, read_image(image_folder / f"{name}.jpg"), 5, name)


def _assert_rows_by_hand(rows: list[dict], model, image: np.ndarray, max_detections: int, where: str) -> None:
    """``rows`` (detections.json entries of one image or frame) are the model's detections at --image-size 128
    and score threshold 0, worked out without the detector classes (fewer than ``max_detections`` when untrained
    boxes fall into the letterbox padding)."""
    want = keras_detections_by_hand(
        model, image, size=128, score_threshold=0.0, max_detections=max_detections
    )
    assert len(rows) == len(want["scores"]) > 0, where
    assert len({r["image_id"] for r in rows}) == 1
    np.testing.assert_allclose([r["score"] for r in rows], want["scores"], atol=6e-6)
    assert [r["category_id"] for r in rows] == want["classes"].tolist()
    assert [r["category_name"] for r in rows] == [CLASS_NAMES[c] for c in want["classes"]]
    xywh = np.column_stack([want["boxes"][:, :2], want["boxes"][:, 2:] - want["boxes"][:, :2]])
    np.testing.assert_allclose([r["bbox"] for r in rows], xywh, atol=2e-3)


def test_predict_command_writes_what_the_model_detects(detector_like, tmp_path):
    # Default settings (the model's 128 px input, score threshold 0.3): every image read -> exit code 0, and
    # detections.json holds exactly the detections of the Python API, as COCO [x, y, w, h] boxes.
    folder = tmp_path / "images"
    folder.mkdir()
    for path in detector_like["images"]:
        shutil.copy(path, folder)
    out = tmp_path / "o"
    assert (
        cli.main(
            ["predict", detector_like["keras"], str(folder / "*.jpg"), "--out", str(out), "--no-progress"]
        )
        == 0
    )
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    expected = detectors.predict_paths(
        detectors.load_detector(detector_like["keras"], score_threshold=0.3), paths
    )
    results = json.loads((out / "detections.json").read_text())
    assert len(results) == sum(len(d) for d in expected) > 20
    for image_id, (path, dets) in enumerate(zip(paths, expected, strict=True)):
        rows = [r for r in results if r["image_id"] == image_id]
        assert len(rows) == len(dets) > 0 and all(r["file_name"] == path for r in rows)
        np.testing.assert_allclose([r["score"] for r in rows], dets.scores, atol=6e-6)  # 5 decimals
        assert [r["category_id"] for r in rows] == dets.classes.tolist()
        assert [r["category_name"] for r in rows] == dets.names
        xywh = np.column_stack([dets.boxes[:, :2], dets.boxes[:, 2:] - dets.boxes[:, :2]])
        np.testing.assert_allclose([r["bbox"] for r in rows], xywh, atol=2e-3)  # 3 decimals
        assert min(r["score"] for r in rows) >= 0.3
        drawn = cv2.imread(str(out / path.rsplit("/", 1)[-1]))
        assert drawn.shape == (120, 160, 3) and not np.array_equal(drawn, cv2.imread(path))


def _write_video(path, frames=5, size=(160, 120)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    assert writer.isOpened()
    for k in range(frames):
        frame = np.full((size[1], size[0], 3), 40 * k, np.uint8)
        cv2.rectangle(frame, (20 + 5 * k, 30), (80 + 5 * k, 90), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()


def test_predict_command_on_video(tiny_model_path, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    _write_video(video)
    out = tmp_path / "out"
    code = cli.main(
        [
            "predict",
            tiny_model_path,
            str(video),
            "--out",
            str(out),
            "--image-size",
            "128",
            "--score-threshold",
            "0",
            "--max-detections",
            "2",
            "--batch-size",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    capture = cv2.VideoCapture(str(out / "clip_detections.mp4"))
    assert capture.isOpened()
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (120, 160, 3)
        count += 1
    assert count == 5
    results = json.loads((out / "detections.json").read_text())
    assert all(r["file_name"] == str(video) for r in results)
    # Each frame's rows are the model's detections on that frame of the input, decoded here by OpenCV.
    model, frames = detectors.load_retinanet(tiny_model_path), cv2.VideoCapture(str(video))
    for k in range(5):
        ok, frame = frames.read()
        assert ok
        rows = [r for r in results if r["frame"] == k]
        _assert_rows_by_hand(rows, model, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), 2, f"frame {k}")
    assert sorted({r["frame"] for r in results}) == [0, 1, 2, 3, 4]


def test_video_that_cannot_be_opened(tiny_model_path, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    code = cli.main(["predict", tiny_model_path, str(bad), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "bad.mp4" in err and "cannot open video" in err


def test_missing_input_is_reported(tiny_model_path, tmp_path, capsys):
    code = cli.main(
        [
            "predict",
            tiny_model_path,
            str(tmp_path / "nope.jpg"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert code == 1
    assert "nope.jpg" in capsys.readouterr().err


def test_wrong_model_file_kind(tmp_path, capsys):
    text = tmp_path / "model.keras"
    text.write_text("not a zip")
    with pytest.raises(detectors.ModelFileError, match="not a Keras archive"):
        detectors.load_detector(str(text))
    fake_tflite = tmp_path / "model.tflite"
    fake_tflite.write_bytes(b"\x00" * 64)
    with pytest.raises(detectors.ModelFileError, match="not a TFLite flatbuffer"):
        detectors.load_detector(str(fake_tflite))
    with pytest.raises(detectors.ModelFileError, match="without saved_model.pb"):
        detectors.load_detector(str(tmp_path))
    other = tmp_path / "weights.h5"
    other.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(detectors.ModelFileError, match="HDF5"):
        detectors.load_detector(str(other))
    with pytest.raises(detectors.ModelFileError, match="model not found"):
        detectors.load_detector(str(tmp_path / "missing.keras"))
    # A valid .keras file that is not a RetinaNet.
    import keras

    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(detectors.ModelFileError, match="not a keras_retinanet RetinaNet"):
        detectors.load_detector(str(tmp_path / "plain.keras"))
    # The command turns it into a clear message and exit code 2.
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert cli.main(["predict", str(text), str(image), "--out", str(tmp_path / "o")]) == 2
    assert "not a Keras archive" in capsys.readouterr().err


def test_draw_detections_colours_and_labels():
    image = np.full((200, 300, 3), 255, np.uint8)
    drawn = draw_detections(
        image,
        np.array([[10, 40, 110, 140], [150, 50, 250, 150]]),
        np.array([0.9, 0.2]),
        np.array([0, 1]),
        ["cat", "dog"],
        score_threshold=0.5,
    )
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == 255).all()  # the input is not modified
    # The box edge of class 0 has the class colour; the low-score box is not drawn.
    from keras_retinanet.visualize import class_colour

    assert tuple(drawn[90, 10]) == class_colour(0)
    assert (drawn[60:150, 240:260] == 255).all()
    # The label background sits above the box.
    assert (drawn[20:38, 12:40] != 255).any()


def test_collect_inputs(tmp_path):
    from keras_retinanet.cli.predict import collect_inputs

    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "v.mp4").write_bytes(b"x")
    kinds = [(s.kind, s.path.rsplit("/", 1)[-1]) for s in collect_inputs([str(tmp_path)])]
    assert kinds == [("image", "a.jpg"), ("image", "b.png")]
    kinds = [
        (s.kind, s.path.rsplit("/", 1)[-1])
        for s in collect_inputs([str(tmp_path / "*.mp4"), str(tmp_path / "notes.txt"), "0", "nope*"])
    ]
    assert kinds == [("video", "v.mp4"), ("image", "notes.txt"), ("camera", "0"), ("missing", "nope*")]


def test_a_second_run_into_the_same_folder_keeps_the_first_runs_results(detector_like, tmp_path, capsys):
    from keras_retinanet.atomic import locked_folder
    from keras_retinanet.cli.predict import LOCK
    from keras_retinanet.cli.retinanet import main

    out = tmp_path / "out"
    image = detector_like["images"][0]
    assert main(["predict", detector_like["keras"], image, "--out", str(out), "--no-progress"]) == 0
    first = (out / "detections.json").read_bytes()
    code = main(["predict", detector_like["keras"], image, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"--out {out} already holds 2 file(s) (e.g. " in err and "--overwrite" in err
    assert (out / "detections.json").read_bytes() == first
    assert (
        main(["predict", detector_like["keras"], image, "--out", str(out), "--no-progress", "--overwrite"])
        == 0
    )
    # Concurrent runs: the second is refused while the first holds the folder.
    with locked_folder(out, LOCK, "another retinanet predict"):
        code = main(
            ["predict", detector_like["keras"], image, "--out", str(out), "--overwrite", "--no-progress"]
        )
    assert code == 2 and "is in use by another retinanet predict" in capsys.readouterr().err


def test_a_killed_run_leaves_the_folder_as_it_was_and_a_rerun_finishes(
    tiny_model_path, image_folder, tmp_path
):
    """Everything is written beside --out and renamed into place: a kill before the rename leaves --out without a
    single annotated image, and the rerun (no --overwrite needed) cleans the leftovers and writes it all."""
    import subprocess
    import sys

    from helpers.train_runs import KILLED
    from helpers.train_runs import env as kill_env

    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "keras_retinanet.cli.retinanet",
        "predict",
        str(tiny_model_path),
        str(image_folder),
    ]
    command += ["--out", str(out), "--no-progress"]
    killed = subprocess.run(command, env=kill_env("out:staged"), capture_output=True, text=True)
    assert killed.returncode == KILLED, killed.stderr
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], [".predict.lock"])
    (leftover,) = tmp_path.glob(".out.partial-*")
    assert (leftover / "detections.json").is_file()  # the killed run had written everything there

    finished = subprocess.run(command, env=kill_env(), capture_output=True, text=True)
    assert finished.returncode == 1, (
        finished.stderr
    )  # the folder's corrupt image is reported, the rest written
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([image_folder.name, "out"])
    written = sorted(p.name for p in out.iterdir() if p.name != ".predict.lock")
    assert written == sorted(["detections.json", *(f"{name}.jpg" for name in BCCD_IMAGES)])
    assert {entry["file_name"] for entry in json.loads((out / "detections.json").read_text())} <= {
        f"{name}.jpg" for name in BCCD_IMAGES
    }
