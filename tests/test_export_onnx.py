"""``retinanet export --format onnx,openvino,openvino_int8``: the files, their detectors and their parity.

One export (through the command) serves the whole module: a tiny 3-class model made detector-like on BCCD
photos, with a decoder whose threshold (0.3) no anchor of a black image reaches and whose ``max_detections``
(8) every photo exceeds, so the exported NMS is tested with no object and with more objects than it keeps.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from retinanet_testing import (
    BCCD_FIXTURES,
    assert_rows_match_one_to_one,
    copy_bccd_subset,
    keras_detections_by_hand,
    make_detector_like,
    tiny_retinanet,
)

SIZE = 160
PHOTOS = ["BloodImage_00007", "BloodImage_00012", "BloodImage_00020"]
CLASS_NAMES = ["Platelets", "RBC", "WBC"]
DECODER = {"score_threshold": 0.3, "max_detections": 8}
FILES = {"onnx": "model_float32.onnx", "openvino": "model_openvino_float32.xml"}


def _require(module: str):
    """Import an optional runtime; skip without it, but fail in CI, which installs the test extra."""
    try:
        return __import__(module)
    except ImportError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {module} (pip install -e '.[test]'): {err}")
        pytest.skip(f"{module} not installed: {err}")


@pytest.fixture(scope="module")
def photos():
    from keras_retinanet.imaging import read_image

    return [read_image(str(BCCD_FIXTURES / "JPEGImages" / f"{name}.jpg")) for name in PHOTOS]


@pytest.fixture(scope="module")
def model(photos):
    import keras

    from keras_retinanet.imaging import letterbox
    from keras_retinanet.model.decode import DetectionDecoder

    keras.utils.set_random_seed(3)
    model = tiny_retinanet(3, class_names=CLASS_NAMES, image_size=SIZE)
    make_detector_like(model, np.stack([letterbox(p, SIZE)[0] for p in photos]).astype(np.float32))
    model.decoder = DetectionDecoder(**{**model.decoder.get_config(), **DECODER})
    return model


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """(export folder, report) of ``retinanet export`` with the three new formats and the SavedModel."""
    for module in ("tf2onnx", "onnxruntime", "openvino", "nncf"):
        _require(module)
    from keras_retinanet.cli.retinanet import main

    tmp = tmp_path_factory.mktemp("onnx_export")
    model.save(tmp / "model.keras")
    data = copy_bccd_subset(tmp, PHOTOS, "test")
    out = tmp / "export"
    argv = ["export", str(tmp / "model.keras"), "-o", str(out), "--format"]
    argv += ["saved_model,onnx,openvino,openvino_int8", "--calibration-data", f"voc:{data}:test"]
    assert main([*argv, "--calibration-steps", "3", "--parity-images", "3", "--benchmark"]) == 0
    return out, json.loads((out / "export_report.json").read_text())


def test_export_writes_the_files_and_their_parity(exported):
    out, report = exported
    for name in ("model_float32.onnx", "labels.txt", "model_openvino_float32.xml", "model_openvino_int8.xml"):
        assert (out / name).is_file(), name
    assert (out / "model_openvino_float32.bin").is_file() and (out / "model_openvino_int8.bin").is_file()
    assert (out / "labels.txt").read_text().split() == CLASS_NAMES
    parity = report["parity"]
    assert parity["keras_detections"] == 8 * len(PHOTOS)
    for key in ("onnx_float32", "xml_openvino_float32"):
        entry = parity[f"{key}_vs_keras"]
        assert entry["checked"] == entry["found"] > 0 and entry["missing"] == 0, (key, entry)
    # int8 is compared loosely (as TFLite int8 is); its entries exist and found most detections.
    loose = parity["xml_openvino_int8_vs_keras_loose"]
    assert loose["checked"] > 0 and loose["found"] >= loose["checked"] // 2, loose
    assert report["files"]["model_openvino_int8.xml"]["precision"] == "int8"
    latency = report["latency"]
    assert sorted(latency) == ["onnx_float32", "xml_openvino_float32", "xml_openvino_int8"], latency
    assert all(row["median_ms"] > 0 and row["images"] == 1 for row in latency.values()), latency


def test_openvino_int8_detects_photos_of_any_size_as_float32_does(exported, photos):
    """Calibrated on 640x480 photos, the int8 file finds the float32 file's detections on those photos halved,
    doubled and tripled: only the network is quantised, not the letterbox or the boxes in the photo's pixels
    (quantised, they were clipped to the calibrated range and the doubled photos lost most of their boxes)."""
    import cv2

    from keras_retinanet.boxes import iou
    from keras_retinanet.detectors import load_detector

    out, _ = exported
    float32, int8 = (load_detector(out / name) for name in (FILES["openvino"], "model_openvino_int8.xml"))
    found_fraction = {}
    for scale in (0.5, 1.0, 2.0, 3.0):
        scaled = [cv2.resize(photo, None, fx=scale, fy=scale) for photo in photos]
        found = checked = 0
        for wanted, got in zip(float32.detect(scaled), int8.detect(scaled)):
            checked += len(wanted.scores)
            if len(wanted.scores) and len(got.scores):
                same_class = wanted.classes[:, None] == got.classes[None, :]
                found += int(((iou(wanted.boxes, got.boxes) >= 0.5) & same_class).any(axis=1).sum())
        assert checked > 0, scale
        found_fraction[scale] = found / checked
    # Measured: 0.79 to 0.91 at every scale; with the boxes quantised, 0.04 at 2x and 3x.
    assert min(found_fraction.values()) >= 0.6, found_fraction


def _op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_nms_is_one_op_and_no_loop(exported):
    """OpenVINO cannot read the ONNX Loop that tf.map_fn becomes; NMS must be the runtimes' own op."""
    import openvino as ov

    out, _ = exported
    ops = _op_types(out / FILES["onnx"])
    assert "NonMaxSuppression" in ops and not {"Loop", "If"} & ops, sorted(ops)
    ir = ov.Core().read_model(str(out / FILES["openvino"]))
    assert [op.get_type_name() for op in ir.get_ops()].count("NonMaxSuppression") == 1


def _assert_same_detections(got, wanted, where: str, count: int | None = None) -> None:
    """One to one (near-equal scores may come out in either order): same class, score within 1e-4, box within a
    pixel."""
    rows = [
        [(int(c), float(s), *map(float, b)) for c, s, b in zip(d.classes, d.scores, d.boxes)]
        for d in (got, wanted)
    ]
    assert count is None or len(rows[0]) == count, where
    assert_rows_match_one_to_one(*rows, box_tolerance=1.0, where=where)


@pytest.mark.parametrize("kind", sorted(FILES))
def test_runtime_gives_the_keras_detections_on_photos(exported, model, photos, kind):
    """On the photos letterboxed to the model's size (the pixels every model then sees, as in the parity report),
    the file's detections are the Keras model's; on the full 640x480 photos, letterboxed inside the graph, they are
    the SavedModel's (the Keras detector resizes with OpenCV, the graphs with TensorFlow's bilinear)."""
    from keras_retinanet.detectors import KerasDetector, SavedModelDetector, load_detector
    from keras_retinanet.imaging import letterbox

    out, _ = exported
    detector = load_detector(out / FILES[kind])
    assert detector.format == kind and detector.class_names == CLASS_NAMES
    canvases = [letterbox(photo, SIZE)[0] for photo in photos]
    cap = DECODER["max_detections"]
    for photo, canvas, wanted, got in zip(
        PHOTOS, canvases, KerasDetector(model).detect(canvases), detector.detect(canvases)
    ):
        # More objects than max_detections: the model finds more when allowed.
        assert len(keras_detections_by_hand(model, canvas, SIZE, max_detections=100)["scores"]) > cap, photo
        _assert_same_detections(got, wanted, f"{kind} vs keras {photo}", cap)
    saved = SavedModelDetector(out / "saved_model").detect(photos)
    for photo, wanted, got in zip(PHOTOS, saved, detector.detect(photos)):
        _assert_same_detections(got, wanted, f"{kind} vs saved_model {photo}", cap)


def _run_raw(kind: str, path, batch: np.ndarray) -> dict[str, np.ndarray]:
    if kind == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {session.get_inputs()[0].name: batch})))
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(batch)
    return {key: result[compiled.output(key)] for key in ("boxes", "scores", "classes", "num_detections")}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_a_batch_with_no_object_and_one_full_image(exported, photos, kind):
    """One call, two images: a photo (more objects than max_detections) and a black image (none)."""
    out, _ = exported
    photo = photos[0].astype(np.float32)
    both = _run_raw(kind, out / FILES[kind], np.stack([photo, np.zeros_like(photo)]))
    alone = _run_raw(kind, out / FILES[kind], photo[None])
    assert both["num_detections"].tolist() == [DECODER["max_detections"], 0]
    assert (
        (both["scores"][1] == 0).all() and (both["classes"][1] == -1).all() and (both["boxes"][1] == 0).all()
    )
    np.testing.assert_array_equal(both["classes"][0], alone["classes"][0])
    np.testing.assert_allclose(both["scores"][0], alone["scores"][0], atol=1e-5)
    np.testing.assert_allclose(both["boxes"][0], alone["boxes"][0], atol=1e-2)


def test_onnx_file_alone_carries_its_class_names(exported, tmp_path):
    from keras_retinanet.detectors import load_detector

    out, _ = exported
    lone = tmp_path / "model.onnx"
    lone.write_bytes((out / FILES["onnx"]).read_bytes())
    assert load_detector(lone).class_names == CLASS_NAMES


@pytest.mark.parametrize("kind", sorted(FILES))
def test_a_damaged_file_gives_one_line_naming_it(exported, tmp_path, kind):
    from keras_retinanet.detectors import ModelFileError, load_detector

    out, _ = exported
    source = out / FILES[kind]
    damaged = tmp_path / source.name
    damaged.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    if kind == "openvino":
        (tmp_path / source.with_suffix(".bin").name).write_bytes(source.with_suffix(".bin").read_bytes())
    with pytest.raises(ModelFileError) as error:
        load_detector(damaged)
    message = str(error.value)
    assert str(damaged) in message and "\n" not in message, message


@pytest.mark.parametrize(("kind", "module"), [("onnx", "onnxruntime"), ("openvino", "openvino")])
def test_a_missing_runtime_names_the_extra(exported, monkeypatch, kind, module):
    import sys

    from keras_retinanet.detectors import ModelFileError, load_detector

    out, _ = exported
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ModelFileError, match=rf"needs {module}: pip install 'keras-retinanet\[{kind}\]'"):
        load_detector(out / FILES[kind])


def test_an_xml_that_is_no_openvino_ir_is_refused(tmp_path):
    from keras_retinanet.detectors import ModelFileError, load_detector

    path = tmp_path / "annotations.xml"
    path.write_text("<annotation><object/></annotation>\n")
    with pytest.raises(ModelFileError, match="not an OpenVINO IR"):
        load_detector(path)


def test_a_missing_converter_names_the_extra(model, tmp_path, monkeypatch):
    import sys

    from keras_retinanet.export import ExportError, export_model

    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ExportError, match=r"keras-retinanet\[onnx\]"):
        export_model(model, tmp_path / "out", formats=["onnx"])
    assert not (tmp_path / "out").exists()


def test_openvino_int8_without_calibration_images_is_refused(model, tmp_path):
    from keras_retinanet.export import ExportError, export_model

    with pytest.raises(ExportError, match="openvino_int8 needs real calibration images"):
        export_model(model, tmp_path / "out", formats=["openvino_int8"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("format_name", ["onnx", "openvino", "openvino_int8"])
def test_class_thresholds_are_refused_not_left_out(model, tmp_path, format_name):
    """The files do not apply per-class thresholds: beside the SavedModel, which does, the export refuses the
    option before any work instead of writing a file that ignores it."""
    from keras_retinanet.export import ExportError, export_model

    with pytest.raises(
        ExportError, match=f"format {format_name} does not take --class-thresholds .*set_class_thresholds"
    ):
        export_model(model, tmp_path / "out", formats=["saved_model", format_name], class_thresholds="t.json")
    assert not (tmp_path / "out").exists()


def test_batched_letterbox_equals_the_per_image_letterbox(model):
    """``detect_float32`` letterboxes the whole batch at once; its outputs are bit for bit those of each image
    letterboxed alone (``imaging.letterbox_tensor``, as the graph did before) and run through the same network,
    decoding and NMS: a downscaled size, an upscaled one and the canvas size itself (no resize)."""
    import tensorflow as tf

    from keras_retinanet.export.saved_model import serving_module
    from keras_retinanet.imaging import letterbox_tensor

    module = serving_module(model, None, "labels.txt")

    # Traced for any batch and size, as detect_float32 is: a trace for one shape folds the box decoding into
    # other float operations (1 ulp apart).
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def per_image(images):
        def letterbox(image):
            return letterbox_tensor(image, (SIZE, SIZE))

        specs = (tf.TensorSpec((SIZE, SIZE, 3), tf.float32), tf.TensorSpec((2,), tf.float32))
        canvases, scales = tf.map_fn(letterbox, images, fn_output_signature=specs)
        sizes = tf.tile(tf.cast(tf.shape(images)[1:3], tf.float32)[None], [tf.shape(images)[0], 1])
        return module._detect_canvases(canvases, scales, sizes)

    rng = np.random.default_rng(0)
    for shape in ((2, 120, 200), (1, 45, 70), (2, SIZE, SIZE)):
        images = tf.constant(rng.uniform(0, 255, (*shape, 3)).astype(np.float32))
        got, wanted = module.detect_float32(images), per_image(images)
        for key, value in wanted.items():
            np.testing.assert_array_equal(got[key].numpy(), value.numpy(), err_msg=f"{shape} {key}")


def _annotate(root, image_id: str, detections) -> None:
    """A VOC annotation of ``image_id`` whose objects are ``detections`` (VOC's 1-based xmin, ymin)."""
    height, width = detections.image_size
    objects = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1:.2f}</xmin>"
        f"<ymin>{y1 + 1:.2f}</ymin><xmax>{x2:.2f}</xmax><ymax>{y2:.2f}</ymax></bndbox></object>"
        for name, (x1, y1, x2, y2) in zip(detections.names, detections.boxes.tolist())
    )
    (root / "Annotations" / f"{image_id}.xml").write_text(
        f"<annotation><filename>{image_id}.jpg</filename><size><width>{width}</width><height>{height}</height>"
        f"<depth>3</depth></size>{objects}</annotation>\n"
    )


def test_evaluate_takes_the_files_with_the_saved_models_metrics(exported, photos, tmp_path):
    """``retinanet evaluate`` runs the .onnx and the .xml through load_detector. Against the SavedModel's own
    detections as ground truth (AP near 1 for the SavedModel), each file's metrics are the SavedModel's."""
    from keras_retinanet.cli.retinanet import main
    from keras_retinanet.detectors import SavedModelDetector

    out, _ = exported
    root = copy_bccd_subset(tmp_path, PHOTOS, "test")
    for image_id, detections in zip(PHOTOS, SavedModelDetector(out / "saved_model").detect(photos)):
        _annotate(root, image_id, detections)
    metrics = {}
    for name, path in (("saved_model", out), *((k, out / f) for k, f in FILES.items())):
        argv = ["evaluate", str(path), "--data", f"voc:{root}:test", "--json", str(tmp_path / f"{name}.json")]
        assert main(argv) == 0
        metrics[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert metrics["saved_model"]["AP"] > 0.9, metrics["saved_model"]
    for kind in FILES:
        for key in ("AP", "AP50", "AP75", "AR100"):
            assert metrics[kind][key] == pytest.approx(metrics["saved_model"][key], abs=1e-4), (kind, key)
