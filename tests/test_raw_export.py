"""``retinanet export --profile raw`` (issue 29): 2-output files without NMS, with MediaPipe's detector metadata,
give what the 4-output files give, through MediaPipe Tasks and through ``TFLiteDetector``, on real photos.

MediaPipe decodes a raw file with its own post-processing: one class per anchor, class-agnostic NMS at IoU 0.3.
The 4-output files run exactly that when the model's decoder does (class-agnostic NMS: the op's fast NMS, also
one class per anchor) at IoU 0.3, so the MediaPipe comparisons use such a model. ``TFLiteDetector`` decodes a
raw file with the Keras decoder and the file's stored settings, so it is compared on the default model
(per-class NMS at 0.5).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from retinanet_testing import require_mediapipe

BCCD_IDS = ["BloodImage_00000", "BloodImage_00001"]  # 640 x 480 photos
RAW_VARIANTS = ("float32", "float16")


@pytest.fixture(scope="module")
def raw_exports(detector_like, tmp_path_factory) -> dict:
    """Exports of the tiny detector-like model (3 classes, 128 px).

    - "default": the model as saved (per-class NMS at 0.5), raw float32;
    - "agnostic": its decoder set to class-agnostic NMS at IoU 0.3 (MediaPipe's post-processing for raw files)
      and box-coder weights (wx, wy, ww, wh) = (10, 5, 2, 4); 4-output and raw files, float32 and float16.
    """
    require_mediapipe("mediapipe")
    from keras_retinanet.detectors import load_retinanet
    from keras_retinanet.export import export_model
    from keras_retinanet.model.box_coder import BoxCoder
    from keras_retinanet.model.decode import DetectionDecoder

    folder = tmp_path_factory.mktemp("raw_export")
    common = {"saved_model": False, "parity_images": 0}
    model = load_retinanet(detector_like["keras"])
    export_model(model, folder / "default_raw", profile="raw", tflite_variants=["float32"], **common)
    settings = model.decoder.get_config() | {"class_agnostic": True, "nms_iou_threshold": 0.3}
    model.decoder = DetectionDecoder(**settings)
    # Weights of four different values, so that a scale given to the wrong coordinate moves the boxes.
    model.box_coder = BoxCoder(weights=(10.0, 5.0, 2.0, 4.0), clamp=model.box_coder.clamp)
    export_model(model, folder / "agnostic_nms", tflite_variants=RAW_VARIANTS, **common)
    export_model(model, folder / "agnostic_raw", profile="raw", **common)
    return {
        "folder": folder,
        "model": model,
        "default_nms": detector_like["tflite"],
        "default_raw": folder / "default_raw" / "model_float32_raw.tflite",
        "agnostic_nms": {v: folder / "agnostic_nms" / f"model_{v}.tflite" for v in RAW_VARIANTS},
        "agnostic_raw": {v: folder / "agnostic_raw" / f"model_{v}_raw.tflite" for v in RAW_VARIANTS},
        "names": list(detector_like["class_names"]),
    }


@pytest.fixture
def photos(bccd_subset) -> list[np.ndarray]:
    """Two whole BCCD photos (480 x 640), read as the tools read files."""
    from keras_retinanet.imaging import read_image

    root = bccd_subset(BCCD_IDS)
    return [read_image(root / "JPEGImages" / f"{image_id}.jpg") for image_id in BCCD_IDS]


def _assert_same_detections(got, want, where: str, score_tol: float = 1e-3, box_tol: float = 1.0) -> None:
    """One to one: same class, score within ``score_tol``, every box coordinate within ``box_tol`` pixels.

    Rows within ``score_tol`` of the lowest score of a full output are left out on both sides: which of two
    near-equal boxes fills the last row can change with a 1e-4 score change.
    """
    floor = min(float(got.scores.min()), float(want.scores.min())) + score_tol if len(want.scores) else 0.0
    got_rows = [(c, s, b) for c, s, b in zip(got.classes, got.scores, got.boxes) if s > floor]
    want_rows = [(c, s, b) for c, s, b in zip(want.classes, want.scores, want.boxes) if s > floor]
    assert len(got_rows) == len(want_rows) > 0, (
        f"{where}: {len(got_rows)} detections, expected {len(want_rows)}"
    )
    unmatched = list(want_rows)
    for cls, score, box in sorted(got_rows, key=lambda r: -r[1]):
        near = [
            row
            for row in unmatched
            if row[0] == cls and abs(row[1] - score) <= score_tol and np.abs(row[2] - box).max() <= box_tol
        ]
        assert near, f"{where}: {cls, score, box} has no match among the expected detections"
        unmatched.remove(min(near, key=lambda row: np.abs(row[2] - box).max()))


def test_raw_file_carries_mediapipe_detector_metadata(raw_exports):
    """The raw file's contract: float32 input, box encodings and scores as outputs, and metadata whose anchors,
    scales, labels and decoder settings are the model's (worked out here from the model, not from the file)."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_retinanet.detectors.tflite_file import read_detection_metadata, tflite_ops
    from keras_retinanet.export import tflite_anchors

    model = raw_exports["model"]
    path = raw_exports["agnostic_raw"]["float32"]
    interpreter = Interpreter(model_path=str(path))
    (image,) = interpreter.get_input_details()
    assert image["dtype"] == np.float32 and list(image["shape"]) == [1, 128, 128, 3]
    num_anchors = int(model.anchor_generator.num_anchors((128, 128)))
    assert [list(d["shape"]) for d in interpreter.get_output_details()] == [
        [1, num_anchors, 4],
        [1, num_anchors, 3],
    ]
    assert "TFLite_Detection_PostProcess" not in tflite_ops(path)

    metadata = read_detection_metadata(path)
    decoding = metadata["raw_decoding"]
    np.testing.assert_allclose(decoding["anchors"], tflite_anchors(model, (128, 128)), atol=1e-7)
    wx, wy, ww, wh = model.box_coder.weights
    assert decoding["scales"] == (wy, wx, wh, ww)
    assert (decoding["num_boxes"], decoding["num_classes"]) == (num_anchors, 3)
    assert decoding["apply_exponential_on_box_size"] and not decoding["sigmoid_score"]
    assert metadata["labels"] == raw_exports["names"]
    assert metadata["input"]["normalization"] == (0.0, 1.0)
    assert metadata["score_threshold"] == pytest.approx(model.decoder.score_threshold)
    assert metadata["decoder"] == {
        "score_threshold": pytest.approx(model.decoder.score_threshold),
        "nms_iou_threshold": pytest.approx(0.3),
        "max_detections": model.decoder.max_detections,
        "class_agnostic": True,
    }


def test_raw_outputs_decode_by_mediapipe_formula_to_the_nms_files_boxes(raw_exports, photos):
    """MediaPipe's decoding written out in numpy (TensorsToDetectionsCalculator, YXHW: yc = ty / y_scale * ha +
    ya, h = exp(th / h_scale) * ha) on the raw file's outputs gives the 4-output file's best box and score."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_retinanet.detectors.tflite_file import read_detection_metadata
    from keras_retinanet.imaging import stretch

    raw_path = raw_exports["agnostic_raw"]["float32"]
    decoding = read_detection_metadata(raw_path)["raw_decoding"]
    interpreter = Interpreter(model_path=str(raw_path))
    interpreter.allocate_tensors()
    nms = Interpreter(model_path=str(raw_exports["agnostic_nms"]["float32"]))
    nms.allocate_tensors()
    canvas, _ = stretch(photos[0], (128, 128))
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], canvas[None].astype(np.float32))
    interpreter.invoke()
    encodings, scores = (interpreter.get_tensor(d["index"])[0] for d in interpreter.get_output_details())
    nms.set_tensor(nms.get_input_details()[0]["index"], canvas[None])
    nms.invoke()
    boxes_out, classes_out, scores_out, _ = (nms.get_tensor(d["index"])[0] for d in nms.get_output_details())

    best = int(np.argmax(scores.max(axis=1)))
    ya, xa, ha, wa = decoding["anchors"][best]
    y_scale, x_scale, h_scale, w_scale = decoding["scales"]
    ty, tx, th, tw = encodings[best]
    yc, xc = ty / y_scale * ha + ya, tx / x_scale * wa + xa
    h, w = np.exp(th / h_scale) * ha, np.exp(tw / w_scale) * wa
    assert scores[best].max() == pytest.approx(scores_out[0], abs=1e-5)
    assert int(np.argmax(scores[best])) == int(classes_out[0])
    np.testing.assert_allclose([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], boxes_out[0], atol=1e-5)


@pytest.mark.parametrize("variant", RAW_VARIANTS)
def test_mediapipe_runs_raw_file_with_the_nms_files_detections(raw_exports, photos, variant):
    """MediaPipe (as `--runtime mediapipe` runs it) on the raw file gives its detections on the 4-output file of
    the same variant: same classes, scores within 1e-3, boxes within 1 px, on real photos."""
    from keras_retinanet.detectors import MediaPipeDetector

    with (
        contextlib.closing(MediaPipeDetector(raw_exports["agnostic_raw"][variant])) as raw,
        contextlib.closing(MediaPipeDetector(raw_exports["agnostic_nms"][variant])) as nms,
    ):
        assert raw.class_names == nms.class_names == raw_exports["names"]
        for index, photo in enumerate(photos):
            (got,), (want,) = raw.detect([photo]), nms.detect([photo])
            assert len(set(want.classes.tolist())) >= 2
            _assert_same_detections(got, want, f"{variant}, photo {index}")


def test_tflite_detector_decodes_raw_file_as_the_nms_file(raw_exports, photos):
    """TFLiteDetector decodes the raw file outside the model with the Keras decoder and the stored settings
    (per-class NMS at 0.5 here): the 4-output file's detections above 0.3, the parity tests' floor (the op has
    no per-level top-k and ranks near-equal low scores its own way)."""
    from keras_retinanet.detectors import TFLiteDetector

    raw = TFLiteDetector(raw_exports["default_raw"], score_threshold=0.3)
    nms = TFLiteDetector(raw_exports["default_nms"], score_threshold=0.3)
    assert raw.class_names == nms.class_names
    for index, photo in enumerate(photos):
        (got,), (want,) = raw.detect([photo]), nms.detect([photo])
        _assert_same_detections(got, want, f"photo {index}", box_tol=0.05)


def test_raw_files_pass_the_gpu_op_check(raw_exports):
    """Each raw file's ops against the GPU delegate's documented list and its own op checks
    (``helpers.gpu_ops``): no op of the decoding or NMS, nothing the delegate refuses."""
    from helpers.gpu_ops import GPU_DOCUMENTED_OPS, gpu_op_report

    from keras_retinanet.detectors.tflite_file import tflite_ops

    folder = raw_exports["folder"] / "agnostic_raw"
    report = json.loads((folder / "export_report.json").read_text())
    assert report["profile"] == "raw" and report["formats"] == ["tflite_raw"]
    assert sorted(report["files"]) == ["model_float16_raw.tflite", "model_float32_raw.tflite"]
    for name, info in report["files"].items():
        gpu = gpu_op_report((folder / name).read_bytes(), info["ops"])
        assert gpu["ops"] == info["ops"]
        assert set(gpu["in_documented_list"]) | set(gpu["not_in_documented_list"]) == set(info["ops"])
        assert set(gpu["in_documented_list"]) <= set(GPU_DOCUMENTED_OPS)
        assert {"CONV_2D", "LOGISTIC", "EXP"} <= set(gpu["in_documented_list"]), name
        # Integer and NMS ops of the 4-output files are gone; what remains outside the list is float math
        # that the delegate's own checks accept.
        assert not {"TFLite_Detection_PostProcess", "TOPK_V2", "BITCAST", "GATHER", "CAST"} & set(info["ops"])
        assert gpu["unsupported"] == [] and "LOG" in gpu["in_delegate_checks"], name
        assert gpu["documentation"].startswith("https://") and "Analyzer" in gpu["analyzer"]["source"]
    assert "DEQUANTIZE" in report["files"]["model_float16_raw.tflite"]["ops"]  # float16 weights
    # The same check finds the 4-output files' NMS op, uint8 input cast and the integer ops of per-class NMS.
    nms_file = raw_exports["agnostic_nms"]["float32"]
    unsupported = gpu_op_report(nms_file.read_bytes(), tflite_ops(nms_file))["unsupported"]
    assert unsupported == ["CAST", "TFLite_Detection_PostProcess"]
    per_class = Path(raw_exports["default_nms"])
    unsupported = gpu_op_report(per_class.read_bytes(), tflite_ops(per_class))["unsupported"]
    assert {"TFLite_Detection_PostProcess", "BITCAST", "TOPK_V2", "GATHER", "CAST"} <= set(unsupported)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tflite", "int8"], "format tflite_raw does not take --tflite int8 (it takes float32, float16"),
        (["--class-thresholds", "THRESHOLDS"], "format tflite_raw does not take --class-thresholds"),
    ],
)
def test_raw_profile_refuses_what_it_cannot_write(detector_like, tmp_path, capsys, extra, message):
    from keras_retinanet import cli
    from keras_retinanet.detectors.class_thresholds import write_class_thresholds

    thresholds = tmp_path / "class_thresholds.json"
    write_class_thresholds(thresholds, {detector_like["class_names"][0]: 0.5})
    extra = [str(thresholds) if arg == "THRESHOLDS" else arg for arg in extra]
    args = ["export", detector_like["keras"], "-o", str(tmp_path / "out"), "--profile", "raw", *extra]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
