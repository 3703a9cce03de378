"""Export tests: SavedModel and builtin-op TFLite, parity with Keras, bad input.

One tiny model (MobileNetV2 x0.35, 32-channel pyramid) is exported once per session at 128 x 128.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from retinanet_testing import keras_detections_by_hand, make_detector_like, tiny_retinanet

IMAGE_SIZE = 128


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(model, export directory, report, calibration canvases)."""
    import keras

    from keras_retinanet import DetectionDecoder
    from keras_retinanet import export as ex
    from keras_retinanet.data.synthetic import make_synthetic_coco

    keras.utils.set_random_seed(1)
    root = tmp_path_factory.mktemp("export")
    # Rectangular images, so that letterboxing and mapping boxes back are part of every comparison.
    spec = make_synthetic_coco(root / "data", 4, (IMAGE_SIZE, 3 * IMAGE_SIZE // 2), seed=0)
    # A score threshold of 0.1 keeps every level of this dense synthetic detector under the decoder's per-level
    # cap (1000), which the TFLite op does not have (at 0.05, 1,434 P3 candidates on one canvas).
    model = tiny_retinanet(
        3,
        class_names=["Platelets", "RBC", "WBC"],
        image_size=IMAGE_SIZE,
        decoder=DetectionDecoder(score_threshold=0.1),
    )
    paths = ex.calibration_paths(spec, 8)
    canvases = ex.load_canvases(paths, (IMAGE_SIZE, IMAGE_SIZE))
    make_detector_like(model, np.stack(canvases).astype(np.float32))
    report = ex.export_model(
        model,
        root / "out",
        calibration_data=spec,
        calibration_steps=4,
        parity_images=4,
    )
    return model, root / "out", report, canvases


def _operator_names(path) -> list[str]:
    """Sorted names of the operators a .tflite file uses: builtin names from the schema's enum, custom codes."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(Path(path).read_bytes(), 0))
    codes = [model.operatorCodes[op.opcodeIndex] for graph in model.subgraphs for op in graph.operators]
    return sorted(
        {
            code.customCode.decode()
            if code.customCode
            else names[max(code.builtinCode, code.deprecatedBuiltinCode)]
            for code in codes
        }
    )


def test_layout_and_report(exported):
    _, out, report, _ = exported
    for name in (
        "saved_model",
        "labels.txt",
        "model_float32.tflite",
        "model_float16.tflite",
        "model_int8.tflite",
    ):
        assert (out / name).exists(), name
    assert (out / "saved_model" / "assets" / "labels.txt").read_text().split() == ["Platelets", "RBC", "WBC"]
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
    for name in ("model_float32.tflite", "model_float16.tflite", "model_int8.tflite"):
        info = on_disk["files"][name]
        # The report lists the file's operators as read from the flatbuffer, here without this module's help.
        assert info["ops"] == _operator_names(out / name)
        assert info["flex_ops"] == []
        assert "TFLite_Detection_PostProcess" in info["ops"]
        assert "VAR_HANDLE" not in info["ops"]
        assert info["size_bytes"] == (out / name).stat().st_size
    # float16 halves the weights; int8 quarters them (roughly).
    sizes = {v: on_disk["files"][f"model_{v}.tflite"]["size_bytes"] for v in ("float32", "float16", "int8")}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


def test_int8_leaves_box_decoding_to_the_float_op(exported):
    # Float files decode, clip and re-encode boxes in the graph (EXP, LOG); the int8 file must not, or every
    # box coordinate would pass through int8 (8 AP points lost on the main job's model).
    _, _, report, _ = exported
    float_ops = set(report["files"]["model_float32.tflite"]["ops"])
    int8_ops = set(report["files"]["model_int8.tflite"]["ops"])
    assert {"EXP", "LOG"} <= float_ops
    assert not {"EXP", "LOG"} & int8_ops


def test_the_keras_decoders_per_level_cap_does_not_bind_on_the_parity_canvases(exported):
    # The TFLite op keeps the best candidates over all levels, the Keras decoder the best topk_per_level of each;
    # the parity below compares the two as they are only because no level of these canvases holds more
    # candidates above the score threshold than the cap (the model's own decoder, nothing lifted).
    model, _, _, canvases = exported
    scores = 1.0 / (1.0 + np.exp(-np.asarray(model(np.stack(canvases).astype(np.float32))["classification"])))
    sizes = model.anchor_generator.level_sizes((IMAGE_SIZE, IMAGE_SIZE))
    levels = np.split(scores, np.cumsum(sizes)[:-1], axis=1)  # each (B, N_l, K)
    above = [int((level > model.decoder.score_threshold).sum(axis=(1, 2)).max()) for level in levels]
    assert model.decoder.topk_per_level == 1000 and 100 < max(above) < 1000, above


def test_saved_model_matches_keras(exported):
    model, _, report, canvases = exported
    # The parity figures count the Keras model's detections on the 4 calibration canvases: the counts of its
    # detections worked out by hand (model.detect, boxes under a pixel dropped), in all and above 0.3.
    reference = [keras_detections_by_hand(model, canvas, size=IMAGE_SIZE) for canvas in canvases]
    assert report["parity"]["images"] == len(canvases) == 4
    assert report["parity"]["keras_detections"] == sum(len(r["scores"]) for r in reference)
    above = sum(int((r["scores"] > 0.3).sum()) for r in reference)
    assert report["parity"]["keras_detections_above_min_score"] == above
    strict = report["parity"]["saved_model_vs_keras_above_min_score"]
    assert strict["checked"] > 0 and strict["missing"] == 0, str(strict)
    assert strict["min_iou"] >= 0.99 and strict["max_score_diff"] <= 1e-4
    # Down to the score threshold this synthetic detector packs many overlapping low-score boxes per image; an
    # NMS decision at IoU ~= 0.5 may flip on float noise between eager and graph execution.
    everything = report["parity"]["saved_model_vs_keras"]
    assert everything["found"] >= 0.98 * everything["checked"], str(everything)


def test_tflite_float32_matches_keras(exported):
    _, _, report, _ = exported
    parity = report["parity"]["tflite_float32_vs_keras"]
    assert report["parity"]["keras_detections_above_min_score"] > 0
    # This synthetic detector packs many overlapping boxes per image, so a few NMS decisions sit at IoU ~= 0.5,
    # where the op's float arithmetic (boxes re-encoded for it) may flip one. A box coding or
    # anchor order error loses most detections.
    assert parity["checked"] > 100 and parity["found"] >= 0.98 * parity["checked"], parity


@pytest.mark.parametrize("variant", ["float32", "float16", "int8"])
def test_tflite_runs_on_standard_litert(exported, variant):
    from ai_edge_litert.interpreter import Interpreter

    _, out, _, canvases = exported
    interpreter = Interpreter(model_path=str(out / f"model_{variant}.tflite"))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    assert inp["dtype"] == np.uint8 and list(inp["shape"]) == [1, IMAGE_SIZE, IMAGE_SIZE, 3]
    interpreter.set_tensor(inp["index"], canvases[0][None])
    interpreter.invoke()
    boxes, classes, scores, num = (
        interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()
    )
    assert boxes.shape == (1, 100, 4) and classes.shape == (1, 100) and scores.shape == (1, 100)
    assert num.shape == (1,) and 0 <= num[0] <= 100
    n = int(num[0])
    assert np.all(np.diff(scores[0, :n]) <= 1e-6), "scores must be sorted"
    assert set(np.unique(classes[0, :n])) <= {0.0, 1.0, 2.0}


def test_export_size_defaults_to_the_training_size_and_parity_catches_another(exported, tmp_path):
    """A model trained at 128 px is exported at 128 px unless told otherwise; exported at 96 px, the parity
    report must show the lost detections instead of comparing at the export size only."""
    from keras_retinanet import export as ex

    model, _, report, _ = exported
    assert report["image_size"] == [IMAGE_SIZE, IMAGE_SIZE] == report["model_image_size"]
    spec = report["parity_data"]
    other = ex.export_model(
        model,
        tmp_path / "small",
        image_size=96,
        tflite_variants=["float32"],
        calibration_data=spec,
        parity_images=4,
    )
    assert other["image_size"] == [96, 96]
    assert other["parity"]["saved_model_vs_keras_above_min_score"]["missing"] > 0
    assert other["parity"]["tflite_float32_vs_keras"]["missing"] > 0


def test_saved_model_loads_with_tensorflow_only(exported, tmp_path):
    """A fresh process that never imports keras_retinanet runs serving_default on PNGs of different sizes."""
    import cv2

    _, out, _, _ = exported
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(100, 160), (240, 120)]):
        path = tmp_path / f"image{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        paths.append(str(path))
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        loaded = tf.saved_model.load({str(out / "saved_model")!r})
        images = tf.constant([open(p, "rb").read() for p in {paths!r}])
        result = loaded.signatures["serving_default"](images=images)
        floats = loaded.signatures["detect_float32"](images=tf.zeros([1, 64, 96, 3]))
        names = [n.decode() for n in loaded.class_names.numpy()]
        print(json.dumps({{
            "imported": any(m.startswith("keras_retinanet") for m in sys.modules),
            "shapes": {{k: v.shape.as_list() for k, v in result.items()}},
            "boxes": result["boxes"].numpy().tolist(),
            "num": result["num_detections"].numpy().tolist(),
            "classes": result["classes"].numpy().tolist(),
            "float_shapes": {{k: v.shape.as_list() for k, v in floats.items()}},
            "names": names,
            "signatures": sorted(loaded.signatures),
        }}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not data["imported"]
    assert data["signatures"] == ["detect_float32", "detect_uint8", "serving_default"]
    assert data["shapes"] == {
        "boxes": [2, 100, 4],
        "scores": [2, 100],
        "classes": [2, 100],
        "num_detections": [2],
    }
    assert data["float_shapes"]["boxes"] == [1, 100, 4]
    assert data["names"] == ["Platelets", "RBC", "WBC"]
    boxes = np.asarray(data["boxes"])
    for i, (h, w) in enumerate([(100, 160), (240, 120)]):
        n = data["num"][i]
        assert np.all(boxes[i, :n, [0, 2]] <= w + 1e-3) and np.all(boxes[i, :n, [1, 3]] <= h + 1e-3)
        assert np.all(boxes[i, :n] >= 0)
        assert all(c == -1 for c in data["classes"][i][n:])


def _postprocess_options(path) -> list[dict]:
    """The custom options of every TFLite_Detection_PostProcess op in a .tflite file, in graph order."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    data = Path(path).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    return [
        dict(flexbuffers.Loads(bytes(bytearray(op.customOptions))))
        for op in model.subgraphs[0].operators
        if model.operatorCodes[op.opcodeIndex].customCode == b"TFLite_Detection_PostProcess"
    ]


def test_detection_postprocess_attributes(exported):
    from keras_retinanet.export.tflite import _implements_signature
    from keras_retinanet.model.decode import DetectionDecoder

    # The signature text carries each setting of the model's decoder to its own key (distinct values, so a
    # swap shows).
    decoder = DetectionDecoder(score_threshold=0.07, nms_iou_threshold=0.45, max_detections=37)
    text = _implements_signature(decoder, 3, (11.0, 12.0, 13.0, 14.0))
    assert text == (
        'name: "TFLite_Detection_PostProcess" '
        'attr { key: "max_detections" value { i: 37 } } '
        'attr { key: "max_classes_per_detection" value { i: 1 } } '
        'attr { key: "num_classes" value { i: 3 } } '
        'attr { key: "nms_score_threshold" value { f: 0.07 } } '
        'attr { key: "nms_iou_threshold" value { f: 0.45 } } '
        'attr { key: "y_scale" value { f: 11.0 } } '
        'attr { key: "x_scale" value { f: 12.0 } } '
        'attr { key: "h_scale" value { f: 13.0 } } '
        'attr { key: "w_scale" value { f: 14.0 } } '
        'attr { key: "use_regular_nms" value { b: true } }'
    )
    # In the exported files: the 3 classes split over ops of 2 and 1 classes (CLASSES_PER_OP), each with the
    # model's thresholds, min(M, classes x 100) slots; the float files clip boxes before the op and re-encode
    # them with unit scales, the int8 file hands the op the raw deltas with the box coder's (wy, wx, wh, ww).
    model, out, _, _ = exported
    decoder = model.decoder
    wx, wy, ww, wh = (float(w) for w in model.box_coder.weights)
    for variant in ("float32", "float16", "int8"):
        scales = (wy, wx, wh, ww) if variant == "int8" else (1.0, 1.0, 1.0, 1.0)
        expected = [
            {
                "max_detections": min(decoder.max_detections, classes * 100),
                "max_classes_per_detection": 1,
                "num_classes": classes,
                "nms_score_threshold": pytest.approx(decoder.score_threshold),
                "nms_iou_threshold": pytest.approx(decoder.nms_iou_threshold),
                "y_scale": scales[0],
                "x_scale": scales[1],
                "h_scale": scales[2],
                "w_scale": scales[3],
                "use_regular_nms": True,
            }
            for classes in (2, 1)
        ]
        got = _postprocess_options(out / f"model_{variant}.tflite")
        assert [{k: o[k] for k in expected[0]} for o in got] == expected, variant


def test_tflite_anchor_convention():
    """Anchors (yc, xc, h, w) normalised, and the op's decode equals BoxCoder.decode."""
    from keras_retinanet import export as ex

    model = tiny_retinanet(2)
    anchors_xyxy = np.asarray(model.anchor_generator(image_shape=(128, 128)))
    yxhw = ex.tflite_anchors(model, (128, 128))
    deltas = np.random.default_rng(0).normal(0, 0.5, (len(yxhw), 4)).astype(np.float32)
    expected = np.asarray(model.box_coder.decode(anchors_xyxy, deltas)) / 128.0
    wx, wy, ww, wh = model.box_coder.weights
    # detection_postprocess.cc: yc = ty / y_scale * ha + ya; h = exp(th / h_scale) * ha, with y_scale = wy ...
    yc = deltas[:, 1] / wy * yxhw[:, 2] + yxhw[:, 0]
    xc = deltas[:, 0] / wx * yxhw[:, 3] + yxhw[:, 1]
    h = np.exp(deltas[:, 3] / wh) * yxhw[:, 2]
    w = np.exp(deltas[:, 2] / ww) * yxhw[:, 3]
    got = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bad_inputs(tmp_path, exported):
    import keras

    from keras_retinanet import export as ex
    from keras_retinanet.detectors import ModelFileError

    model, out, _, _ = exported
    not_retinanet = tmp_path / "dense.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(not_retinanet)
    with pytest.raises(ModelFileError, match="not a keras_retinanet RetinaNet"):
        ex.export_model(not_retinanet, tmp_path / "a", tflite_variants=["float32"])
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ModelFileError, match="truncated or not a model"):
        ex.export_model(garbage, tmp_path / "b", tflite_variants=["float32"])
    with pytest.raises(ex.ExportError, match="exists"):
        ex.export_model(model, out, tflite_variants=["float32"])
    with pytest.raises(ex.ExportError, match="cannot read calibration data"):
        ex.export_model(model, tmp_path / "c", calibration_data=f"voc:{tmp_path}/missing")
    with pytest.raises(ex.ExportError, match="calibration"):
        ex.export_model(model, tmp_path / "d")  # int8 without calibration data
    assert not any(p.name in ("a", "b", "c", "d") or ".partial-" in p.name for p in tmp_path.iterdir())


def test_tools_main(tmp_path, exported):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tools"))
    import export as tools_export

    model, _, _, _ = exported
    model_path = tmp_path / "tiny.keras"
    model.save(model_path)
    out = tmp_path / "cli"
    args = [
        str(model_path),
        "--output",
        str(out),
        "--image-size",
        "96",
        "--tflite",
        "float32",
        "--no-saved-model",
    ]
    assert tools_export.main(args) == 0
    assert (out / "model_float32.tflite").exists() and (out / "export_report.json").exists()
    assert tools_export.main(args) == 2  # exists, no --overwrite
    assert tools_export.main([*args, "--overwrite"]) == 0


def test_tflite_latency_times_the_requested_invokes(exported, monkeypatch):
    from keras_retinanet.detectors import TFLiteDetector, latency

    _, out, _, _ = exported
    calls = []
    original = TFLiteDetector.run_canvas
    monkeypatch.setattr(
        TFLiteDetector, "run_canvas", lambda self, c: calls.append(c.shape) or original(self, c)
    )
    result = latency.tflite_latency(out / "model_int8.tflite", num_threads=1, runs=3, warmup=2)
    assert calls == [(IMAGE_SIZE, IMAGE_SIZE, 3)] * 5
    assert len(result["runs_ms"]) == 3 and result["median_ms"] == sorted(result["runs_ms"])[1]
    assert result["size_bytes"] == (out / "model_int8.tflite").stat().st_size


def test_export_cleans_what_a_killed_export_left_and_follows_the_umask(exported, tmp_path):
    """A kill leaves ``.NAME.partial-PID-*``; the next export removes it (not a live process's), and the
    finished folder has the umask's permissions, not mkdtemp's 0700."""
    import os

    from keras_retinanet import export as ex

    model, _, _, _ = exported
    dead_pid = 2**22 - 1  # above the default pid_max, never a live process
    stale = tmp_path / f".out.partial-{dead_pid}-abc"
    (stale / "saved_model").mkdir(parents=True)
    live = tmp_path / f".out.partial-{os.getpid()}-xyz"
    live.mkdir()
    old_umask = os.umask(0o022)
    try:
        ex.export_model(model, tmp_path / "out", saved_model=False, tflite_variants=["float32"])
    finally:
        os.umask(old_umask)
    assert not stale.exists() and live.exists()
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "out" / "model_float32.tflite").stat().st_mode & 0o777 == 0o644


def _write_json_dump(job) -> dict:
    """A toy format's writer: the model's class names and decoder settings as JSON."""
    path = job.folder / "model.json"
    path.write_text(
        json.dumps({"class_names": job.model.class_names, "decoder": job.model.decoder.get_config()})
    )
    return {path.name: {"size_bytes": path.stat().st_size}}


def _read_json_dump(path):
    """The toy format's detector: it reads the file back, and finds nothing in any image."""
    from keras_retinanet.detectors import Detections

    class JsonDumpDetector:
        class_names = json.loads(Path(path).read_text())["class_names"]

        def detect(self, images):
            nothing = np.zeros((0,), np.float32)
            return [
                Detections(
                    np.zeros((0, 4), np.float32), nothing, nothing.astype(np.int32), [], image.shape[:2]
                )
                for image in images
            ]

    return JsonDumpDetector()


@pytest.fixture
def json_dump_format():
    """A format registered from this test (no package file edited): a row, a writer and a detector."""
    from keras_retinanet.export import ExportFormat, formats

    formats.register_format(
        ExportFormat(
            name="json_dump",
            files="model.json",
            write=_write_json_dump,
            options={"class_thresholds": ((), "a JSON dump has no score filter")},
            detector=_read_json_dump,
            parity="tflite",
        )
    )
    yield
    del formats.FORMATS["json_dump"]


def test_a_format_registered_from_outside_exports_through_the_command(
    exported, tmp_path, json_dump_format, capsys
):
    from keras_retinanet import cli

    model, _, report, _ = exported
    model_path = tmp_path / "tiny.keras"
    model.save(model_path)
    out = tmp_path / "out"
    spec = report["parity_data"]
    args = [
        "export",
        str(model_path),
        "-o",
        str(out),
        "--format",
        "json_dump",
        "--parity-images",
        "2",
    ]
    assert cli.main([*args, "--calibration-data", spec]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "export_report.json",
        "labels.txt",
        "model.json",
    ]
    dumped = json.loads((out / "model.json").read_text())
    assert dumped["class_names"] == ["Platelets", "RBC", "WBC"]
    assert dumped["decoder"]["topk_per_level"] == model.decoder.topk_per_level
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["formats"] == ["json_dump"]
    assert on_disk["files"]["model.json"] == {"size_bytes": (out / "model.json").stat().st_size}
    # Its detector read the file back for the parity figures, with no other format beside it: it finds none of
    # the Keras detections.
    parity = on_disk["parity"]["json_model_vs_keras"]
    assert parity["checked"] == on_disk["parity"]["keras_detections_above_min_score"] > 0
    assert parity["found"] == 0 and "json_model_vs_keras_loose" in on_disk["parity"]
    # The table's options are checked for it too: one line naming the format and the option.
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"RBC": 0.5}))
    args = ["export", str(model_path), "-o", str(tmp_path / "refused"), "--format", "json_dump"]
    assert cli.main([*args, "--class-thresholds", str(thresholds)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "format json_dump does not take --class-thresholds" in err and "no score filter" in err
    assert cli.main([*args, "--precision", "bf16"]) == 2
    assert "--precision bf16: none of the formats written (json_dump) takes it" in capsys.readouterr().err
    assert cli.main([*args[:-1], "json_dumq"]) == 2
    assert "unknown export format 'json_dumq'" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
