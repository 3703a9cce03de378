"""TFLite files give the same detections at any interpreter thread count (issue 12, docs/tflite-threads.md).

LiteRT's regular-NMS kernel (``TFLite_Detection_PostProcess``, ``use_regular_nms=True``) never processes class T
when the interpreter runs T threads, 1 < T < K, and orders equal scores by worker. The export therefore runs
one op per pair of classes and merges their outputs on int32 bit patterns
(``keras_retinanet.export.tflite._per_class_postprocess``). These tests check:

- the op level: the paired graph gives, at 1, 2, 3 and 4 threads, bit for bit what one regular-NMS op gives
  at 1 thread (boxes clipped to [0, 1]), on tied scores and with ``max_detections`` > 100; and the one-op graph
  does lose class T at T threads, so the comparison would catch the bug;
- the model level: a 6-class detector exported by ``export_model`` (float32, float16, int8) gives identical
  ``TFLiteDetector`` detections at 1, 2 and 4 threads;
- a file with one op over > 2 classes (as exported before the fix) is not ``thread_safe`` and
  ``TFLiteDetector`` runs it on one thread, with a warning;
- the int8 file merges in int32 / float32: no quantised tensor downstream of the ops.
"""

from __future__ import annotations

import logging
import math
import tempfile

import numpy as np
import pytest

NUM_CLASSES = 6  # 2 and 4 threads each skip a class (class 2, class 4) in the one-op graph
THREADS = (1, 2, 4)


# ---------------------------------------------------------------------------------------------------------------
# Op level: the post-processing alone, on hand-made inputs


OP_ANCHORS = 2000


def _op_file(postprocess, num_classes: int, max_detections: int, anchors: np.ndarray) -> bytes:
    """A .tflite holding only ``postprocess`` (one of keras_retinanet.export.tflite's) on (encodings, scores)
    inputs, converted through a SavedModel with builtin ops as ``convert_tflite`` does."""
    import tensorflow as tf

    from keras_retinanet.model.decode import DetectionDecoder

    decoder = DetectionDecoder(score_threshold=0.05, nms_iou_threshold=0.5, max_detections=max_detections)
    n = len(anchors)

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, n, 4], tf.float32, name="encodings"),
            tf.TensorSpec([1, n, num_classes], tf.float32, name="scores"),
        ]
    )
    def detect(encodings, scores):
        return postprocess(
            encodings, scores, tf.constant(anchors), decoder, num_classes, (1.0, 1.0, 1.0, 1.0)
        )

    with tempfile.TemporaryDirectory() as folder:
        holder = tf.Module()
        holder.detect = detect
        tf.saved_model.save(holder, folder, signatures={"serving_default": detect.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = True
        return converter.convert()


def _run_op_file(data: bytes, threads: int, encodings: np.ndarray, scores: np.ndarray) -> list[np.ndarray]:
    """(boxes (1, M, 4), classes (1, M), scores (1, M), count (1,)) at ``threads`` interpreter threads."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=data, num_threads=threads).get_signature_runner()
    outputs = runner(encodings=encodings, scores=scores)
    return [outputs[f"output_{i}"] for i in range(4)]


@pytest.fixture(scope="module")
def op_case() -> dict:
    """6 classes, 2000 anchors (some across the border, so that clipping shows), two inputs:

    - "tied": scores on 256 levels (as int8 scores are), most above the threshold: every class has more than
      max_detections / K candidates, and the cut at max_detections = 150 falls inside a run of equal scores;
    - "sparse": few scores above the threshold, so the output has padding rows.
    """
    from keras_retinanet.export.tflite import _detection_postprocess, _per_class_postprocess

    rng = np.random.default_rng(0)
    anchors = np.concatenate(
        [rng.uniform(-0.02, 1.02, (OP_ANCHORS, 2)), rng.uniform(0.02, 0.2, (OP_ANCHORS, 2))], axis=1
    ).astype(np.float32)
    encodings = rng.normal(0, 0.5, (1, OP_ANCHORS, 4)).astype(np.float32)
    tied = (rng.integers(0, 256, (1, OP_ANCHORS, NUM_CLASSES)) / 255).astype(np.float32)
    sparse = np.where(rng.random(tied.shape) < 0.004, tied, 0.01).astype(np.float32)
    return {
        "encodings": encodings,
        "scores": {"tied": tied, "sparse": sparse},
        "paired": _op_file(_per_class_postprocess, NUM_CLASSES, 150, anchors),
        "one_op": _op_file(_detection_postprocess, NUM_CLASSES, 150, anchors),
        # max_detections = 100 = the op's detections per class: several threads lose a class without the heap
        # overflow that larger values cause (which can abort the test process).
        "one_op_100": _op_file(_detection_postprocess, NUM_CLASSES, 100, anchors),
    }


@pytest.mark.parametrize("inputs", ["tied", "sparse"])
def test_paired_ops_equal_one_op_at_one_thread_for_every_thread_count(op_case, inputs):
    encodings, scores = op_case["encodings"], op_case["scores"][inputs]
    boxes, classes, det_scores, count = _run_op_file(op_case["one_op"], 1, encodings, scores)
    n = int(count[0])
    if inputs == "tied":
        # The setting that matters: all 150 rows used, every class present, the cut among equal scores, and
        # boxes outside the input (the paired graph clips them, the one-op graph does not).
        assert n == 150
        assert np.all(np.bincount(classes[0, :n].astype(int), minlength=NUM_CLASSES) > 0)
        assert np.sum(det_scores[0] == det_scores[0, n - 1]) > 1
        assert np.any(boxes[0, :n] < 0) and np.any(boxes[0, :n] > 1)
    else:
        assert 0 < n < 150  # padding rows are compared too
        assert np.all(np.bincount(classes[0, :n].astype(int), minlength=NUM_CLASSES) > 0)
    expected = [np.clip(boxes, 0.0, 1.0), classes, det_scores, count]
    for threads in (1, 2, 3, 4):
        got = _run_op_file(op_case["paired"], threads, encodings, scores)
        for name, a, b in zip(("boxes", "classes", "scores", "count"), got, expected, strict=True):
            assert a.shape == b.shape and a.dtype == np.float32, name
            np.testing.assert_array_equal(a, b, err_msg=f"{name} at {threads} threads ({inputs} scores)")


def test_one_op_graph_loses_class_t_at_t_threads(op_case):
    """The bug the paired graph works around, on the same inputs: if LiteRT fixes it, this test says so."""
    encodings, scores = op_case["encodings"], op_case["scores"]["tied"]

    def per_class(threads: int) -> np.ndarray:
        _, classes, _, count = _run_op_file(op_case["one_op_100"], threads, encodings, scores)
        return np.bincount(classes[0, : int(count[0])].astype(int), minlength=NUM_CLASSES)

    assert np.all(per_class(1) > 0)
    for threads in (2, 4):
        counts = per_class(threads)
        assert counts[threads] == 0, (
            f"one regular-NMS op over {NUM_CLASSES} classes at {threads} threads: {counts.tolist()}; LiteRT "
            "seems to have fixed the skipped class (docs/tflite-threads.md)"
        )
        assert np.all(np.delete(counts, threads) > 0)


def test_the_paired_graph_has_one_op_per_pair_of_classes(op_case):
    from keras_retinanet.detectors.tflite_file import thread_safe

    options = _postprocess_options(op_case["paired"])
    assert [o["num_classes"] for o in options] == [2, 2, 2]
    assert all(o["use_regular_nms"] and o["max_classes_per_detection"] == 1 for o in options)
    assert thread_safe(op_case["paired"])
    assert not thread_safe(op_case["one_op"])


# ---------------------------------------------------------------------------------------------------------------
# Model level: a 6-class detector-like model through export_model and TFLiteDetector


def _model_flatbuffer(data: bytes):
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))


def _postprocess_ops(data: bytes) -> list:
    """(operator index, operator) of every TFLite_Detection_PostProcess in the main subgraph, in order."""
    model = _model_flatbuffer(data)
    found = []
    for index, op in enumerate(model.subgraphs[0].operators):
        if model.operatorCodes[op.opcodeIndex].customCode == b"TFLite_Detection_PostProcess":
            found.append((index, op))
    return found


def _postprocess_options(data: bytes) -> list[dict]:
    from flatbuffers import flexbuffers

    return [dict(flexbuffers.Loads(bytes(bytearray(op.customOptions)))) for _, op in _postprocess_ops(data)]


@pytest.fixture(scope="module")
def six_classes(tmp_path_factory) -> dict:
    """A detector-like RetinaNet with 6 classes at 128 px (``make_detector_like``: many detections of every
    class), exported by ``export_model`` as float32, float16 and int8 (calibrated on 4 synthetic images), and
    as a float32 file with one regular-NMS op over all 6 classes, as exported before the fix."""
    import keras
    from retinanet_testing import make_detector_like, tiny_retinanet

    from keras_retinanet.data.synthetic import make_synthetic_coco
    from keras_retinanet.export import convert_tflite, export_model
    from keras_retinanet.export import tflite as tflite_export
    from keras_retinanet.imaging import letterbox, read_image

    folder = tmp_path_factory.mktemp("six_classes")
    keras.utils.set_random_seed(5)
    spec = make_synthetic_coco(folder / "data", 4, (120, 160), seed=2)
    images = [read_image(p) for p in sorted((folder / "data" / "images").iterdir())]
    names = ["ant", "bee", "cat", "dog", "eel", "fox"]
    model = tiny_retinanet(NUM_CLASSES, class_names=names, image_size=128)
    make_detector_like(model, np.stack([letterbox(image, 128)[0] for image in images]).astype(np.float32))
    export_model(
        model,
        folder / "export",
        saved_model=False,
        calibration_data=spec,
        calibration_steps=4,
        parity_images=0,
    )
    # The graph before the fix: the one-op post-processing in place of the paired one.
    patch = pytest.MonkeyPatch()
    patch.setattr(tflite_export, "_per_class_postprocess", tflite_export._detection_postprocess)
    try:
        one_op = convert_tflite(model, "float32")
    finally:
        patch.undo()
    (folder / "one_op.tflite").write_bytes(one_op)
    return {
        "files": {v: folder / "export" / f"model_{v}.tflite" for v in ("float32", "float16", "int8")},
        "one_op": folder / "one_op.tflite",
        "images": images,
        "names": names,
    }


def _detections(path, threads: int, images) -> list:
    from keras_retinanet.detectors import TFLiteDetector

    detector = TFLiteDetector(path, num_threads=threads)
    assert detector.num_threads == threads
    return detector.detect(images)


@pytest.mark.parametrize("variant", ["float32", "float16", "int8"])
def test_tflite_detector_gives_the_same_detections_at_1_2_and_4_threads(six_classes, variant):
    path = six_classes["files"][variant]
    images = six_classes["images"]
    reference = _detections(path, 1, images)
    per_class = np.bincount(np.concatenate([d.classes for d in reference]), minlength=NUM_CLASSES)
    # Every class is detected, classes 2 and 4 (lost at 2 and 4 threads by the one-op graph) often.
    assert np.all(per_class > 0) and per_class[2] >= 10 and per_class[4] >= 10, per_class.tolist()
    assert reference[0].names[:3] == [six_classes["names"][c] for c in reference[0].classes[:3]]
    for threads in THREADS[1:]:
        for image, want, got in zip(images, reference, _detections(path, threads, images), strict=True):
            where = f"{variant}, {threads} threads, image {image.shape}"
            np.testing.assert_array_equal(got.classes, want.classes, err_msg=where)
            np.testing.assert_array_equal(got.scores, want.scores, err_msg=where)
            np.testing.assert_array_equal(got.boxes, want.boxes, err_msg=where)


def test_a_file_with_one_op_over_six_classes_runs_on_one_thread(six_classes, caplog):
    from ai_edge_litert.interpreter import Interpreter

    from keras_retinanet.detectors import TFLiteDetector
    from keras_retinanet.detectors.tflite_file import thread_safe
    from keras_retinanet.imaging import stretch

    old = six_classes["one_op"]
    assert [o["num_classes"] for o in _postprocess_options(old.read_bytes())] == [NUM_CLASSES]
    assert not thread_safe(old)
    assert all(thread_safe(path) for path in six_classes["files"].values())

    # On this model the old file really does lose class 2 at 2 threads (the bug the warning is about).
    def classes_at(threads: int) -> np.ndarray:
        interpreter = Interpreter(model_path=str(old), num_threads=threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        canvas = stretch(six_classes["images"][0], tuple(int(s) for s in detail["shape"][1:3]))[0]
        interpreter.set_tensor(detail["index"], canvas[None])
        interpreter.invoke()
        outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
        count = int(outputs[3][0])
        return np.bincount(outputs[1][0, :count].astype(int), minlength=NUM_CLASSES)

    assert classes_at(1)[2] > 0 and classes_at(2)[2] == 0

    images = six_classes["images"]
    with caplog.at_level(logging.WARNING, logger="keras_retinanet.detectors.tflite"):
        detector = TFLiteDetector(old, num_threads=2)
    assert detector.num_threads == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(old) in record.getMessage() and "one thread" in record.getMessage()
    for want, got in zip(_detections(old, 1, images), detector.detect(images), strict=True):
        np.testing.assert_array_equal(got.classes, want.classes)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.boxes, want.boxes)
    assert 2 in np.concatenate([d.classes for d in detector.detect(images)])

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_retinanet.detectors.tflite"):
        TFLiteDetector(six_classes["files"]["float32"], num_threads=2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_int8_file_merges_the_ops_outside_int8(six_classes):
    """After the post-processing ops nothing is quantised: the merge runs on int32 bit patterns and float32.

    A float merge would be quantised by the int8 converter (CONCATENATION, TOPK_V2, GATHER in int8), rounding
    boxes and scores to 1/255 of their range.
    """
    from ai_edge_litert import schema_py_generated as schema

    data = six_classes["files"]["int8"].read_bytes()
    model = _model_flatbuffer(data)
    subgraph = model.subgraphs[0]
    ops = _postprocess_ops(data)
    options = [dict(o) for o in _postprocess_options(data)]
    assert [o["num_classes"] for o in options] == [2] * math.ceil(NUM_CLASSES / 2)
    assert all(o["use_regular_nms"] for o in options)

    quantised = {schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16}
    first = ops[0][0]
    # Every tensor that depends on an op's output (the merge), found through the graph.
    downstream = {int(t) for _, op in ops for t in op.outputs}
    for op in subgraph.operators[first:]:
        if any(int(t) in downstream for t in op.inputs):
            downstream.update(int(t) for t in op.outputs)
    assert {int(t) for t in subgraph.outputs} <= downstream
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    for index in downstream:
        tensor = subgraph.tensors[index]
        assert tensor.type not in quantised, (tensor.name, names[tensor.type])
        assert tensor.quantization is None or tensor.quantization.scale is None, tensor.name
    # And every operator after the first post-processing op writes no quantised tensor.
    for op in subgraph.operators[first:]:
        for t in op.outputs:
            assert subgraph.tensors[int(t)].type not in quantised, subgraph.tensors[int(t)].name
    assert all(subgraph.tensors[int(t)].type == schema.TensorType.FLOAT32 for t in subgraph.outputs)
    # The network itself is quantised (otherwise this test would prove nothing).
    assert sum(t.type == schema.TensorType.INT8 for t in subgraph.tensors) > 20
