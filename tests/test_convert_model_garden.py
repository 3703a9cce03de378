"""TF Model Garden mobile RetinaNets -> Keras, checked without Model Garden against Model Garden's own outputs.

``tests/fixtures/model_garden_reference`` holds, for MediaPipe Model Maker's ``MOBILENET_V2`` and
``MOBILENET_MULTI_AVG`` detectors (Model Garden 2.20, see its README): every checkpoint variable's name and shape,
and Model Garden's raw per-level outputs on one BCCD photo with every variable filled from a recipe (one numpy
generator per variable seeded by the crc32 of its checkpoint key). The test rebuilds the values by the recipe,
writes them as a TensorFlow checkpoint with the trainer's layout (``backbone/``, ``decoder/``, ``head/``; the same
file layout Model Maker's COCO checkpoints have), converts it and runs the Keras model on the same pixels.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from retinanet_testing import REPO

REFERENCE = REPO / "tests" / "fixtures" / "model_garden_reference"
SPECS = ("mobilenet_v2", "mobilenet_multi_avg")
TOLERANCE = 1e-4  # absolute, on raw logits and deltas (issue 35)
# Model Garden's cell anchor of our anchor k: ours run ratio-major over height/width (0.5, 1, 2), then scale;
# Model Garden's scale-major, then width/height (0.5, 1, 2): ours (ratio r, scale s) is its s * 3 + (2 - r).
ANCHOR_PERMUTATION = [s * 3 + (2 - r) for r in range(3) for s in range(3)]
# Model Garden's deltas (dy, dx, dh, dw) for our (dx, dy, dw, dh).
BOX_ORDER = [1, 0, 3, 2]


def make_values(shapes: dict) -> dict:
    """The reference's recipe: per variable, numpy's default_rng seeded by crc32(key), by its name."""
    values = {}
    for key, shape in shapes.items():
        name = key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE").rsplit("/", 1)[-1]
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        if key.startswith("global_step"):
            values[key] = np.int64(277200)
            continue
        if name == "moving_mean":
            value = rng.normal(0, 0.2, shape)
        elif name in ("moving_variance", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "bias"):
            value = rng.normal(0, 0.1, shape)
        elif name == "depthwise_kernel":
            value = rng.normal(0, 1 / np.sqrt(shape[0] * shape[1]), shape)
        elif name in ("kernel", "pointwise_kernel"):
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            raise ValueError(key)
        values[key] = value.astype(np.float32)
    return values


def write_checkpoint(values: dict, prefix) -> str:
    """A TensorFlow checkpoint whose object graph has exactly these keys: nested ``tf.train.Checkpoint`` nodes
    named by the key's parts, ``tf.Variable`` leaves (no Model Garden needed)."""
    import tensorflow as tf

    tree: dict = {}
    for key, value in values.items():
        parts = key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE").split("/")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = tf.Variable(value)

    def build(node):
        return tf.train.Checkpoint(**{k: build(v) if isinstance(v, dict) else v for k, v in node.items()})

    return build(tree).write(str(prefix))


def reference(spec: str):
    if not (REFERENCE / f"{spec}_variables.json").is_file():
        pytest.fail(f"the Model Garden reference data is missing from {REFERENCE}")
    shapes = json.loads((REFERENCE / f"{spec}_variables.json").read_text())
    return shapes, np.load(REFERENCE / f"{spec}_outputs.npz")


@pytest.fixture(scope="module", params=SPECS)
def converted(request, tmp_path_factory):
    """(spec, the 91-slot model converted from the reference checkpoint, its raw outputs, the reference)."""
    from keras_retinanet.convert.model_garden import convert_model_garden_retinanet

    spec = request.param
    shapes, outputs = reference(spec)
    prefix = write_checkpoint(make_values(shapes), tmp_path_factory.mktemp(spec) / "ckpt-277200")
    model, report = convert_model_garden_retinanet(prefix, keep_unused_slots=True)
    assert report["spec"] == spec and report["num_slots"] == 91 and report["dropped_slots"] == []
    raw = model(outputs["image_uint8_rgb"][None].astype("float32"), training=False)
    return spec, model, {key: np.asarray(value)[0] for key, value in raw.items()}, outputs


def _to_model_garden_layout(rows: np.ndarray, cells: int, per_anchor: int) -> np.ndarray:
    """Our (cells * 9, K) rows of one level (anchor order ours) -> Model Garden's (cells, 9 * K) channels."""
    ours = rows.reshape(cells, 9, per_anchor)
    theirs = np.empty_like(ours)
    theirs[:, ANCHOR_PERMUTATION] = ours
    return theirs.reshape(cells, -1)


def test_raw_outputs_match_model_garden(converted):
    spec, model, raw, outputs = converted
    stride = int(outputs["subsample_stride"])
    start = 0
    for level in range(3, 8):
        height, width, channels = outputs[f"cls_outputs_{level}_shape"]
        cells = height * width
        rows = slice(start, start + cells * 9)
        classes = _to_model_garden_layout(raw["classification"][rows], cells, 91)
        expected = outputs[f"cls_outputs_{level}_every11"]
        np.testing.assert_allclose(
            classes.reshape(-1)[::stride], expected, atol=TOLERANCE, err_msg=f"{spec} P{level}"
        )
        boxes = _to_model_garden_layout(raw["box_regression"][rows][:, BOX_ORDER], cells, 4)
        np.testing.assert_allclose(
            boxes.reshape(height, width, 36),
            outputs[f"box_outputs_{level}"],
            atol=TOLERANCE,
            err_msg=f"{spec} P{level}",
        )
        assert np.abs(expected).max() > 0.5  # outputs of the size the recipe gives, not zeros
        start += cells * 9
    assert start == raw["classification"].shape[0]


def test_anchor_order_and_sizes_are_model_gardens(converted):
    from keras_retinanet.convert.model_garden import anchor_permutation, model_garden_cell_anchors

    _, model, _, _ = converted
    assert anchor_permutation(model.anchor_generator).tolist() == ANCHOR_PERMUTATION
    # Level 3's first Model Garden anchor by hand: size 3 * 8 = 24, width/height 0.5 -> 16.97 x 33.94.
    np.testing.assert_allclose(
        model_garden_cell_anchors(3)[0],
        [-24 * 0.5**0.5 / 2, -24 / 0.5**0.5 / 2, 24 * 0.5**0.5 / 2, 24 / 0.5**0.5 / 2],
    )
    assert model.image_size == (256, 256)


def test_mobilenet_v2_checkpoint_names_map_to_keras_applications():
    from keras_retinanet.convert.model_garden import mobilenet_v2_weight_name

    assert mobilenet_v2_weight_name("backbone/layer_with_weights-0/_conv0/kernel") == "Conv1/kernel"
    assert mobilenet_v2_weight_name("backbone/layer_with_weights-1/_conv1/depthwise_kernel") == (
        "expanded_conv_depthwise/kernel"
    )
    assert mobilenet_v2_weight_name("backbone/layer_with_weights-6/_norm0/gamma") == "block_5_expand_BN/gamma"
    assert (
        mobilenet_v2_weight_name("backbone/layer_with_weights-17/_norm2/beta") == "block_16_project_BN/beta"
    )
    assert (
        mobilenet_v2_weight_name("backbone/layer_with_weights-18/_conv0/kernel") is None
    )  # 1280 conv: unused
    assert mobilenet_v2_weight_name("head/_classifier/bias") is None


def test_default_conversion_keeps_the_80_coco_classes_and_fine_tunes_by_name(tmp_path, capsys):
    """`retinanet convert model-garden` -> 80 named COCO classes; `finetune_model` keeps the known ones."""
    from keras_retinanet.cli.retinanet import main
    from keras_retinanet.convert.torchvision import COCO_CLASS_NAMES
    from keras_retinanet.detectors.loading import load_retinanet
    from keras_retinanet.training.finetune import finetune_model

    shapes, outputs = reference("mobilenet_v2")
    write_checkpoint(make_values(shapes), tmp_path / "ckpt" / "ckpt-277200")
    output = tmp_path / "coco.keras"
    assert main(["convert", "model-garden", str(tmp_path / "ckpt"), "--output", str(output)]) == 0
    assert "-> " + str(output) + ": 80 classes, input 256x256" in capsys.readouterr().out
    model = load_retinanet(output)
    assert list(model.class_names) == list(COCO_CLASS_NAMES)
    image = outputs["image_uint8_rgb"][None].astype("float32")
    coco = np.asarray(model(image, training=False)["classification"])[0]
    # COCO category id 1 is person, channel 1 of Model Garden's 91: class 0 here.
    cells = int(np.prod(outputs["cls_outputs_3_shape"][:2]))
    person = _to_model_garden_layout(np.repeat(coco[: cells * 9, :1], 91, axis=1), cells, 91)
    full = np.zeros(int(np.prod(outputs["cls_outputs_3_shape"])), "float32")
    full[:: int(outputs["subsample_stride"])] = outputs["cls_outputs_3_every11"]
    mask = np.zeros_like(full, bool)
    mask[:: int(outputs["subsample_stride"])] = True
    channel = np.arange(full.size) % 91 == 1
    np.testing.assert_allclose(person.reshape(-1)[mask & channel], full[mask & channel], atol=TOLERANCE)

    tuned, report = finetune_model(model, ["dog", "blood cell", "person"])
    assert report["kept"] == {"dog": "dog", "person": "person"}
    tuned_out = np.asarray(tuned(image, training=False)["classification"])[0]
    np.testing.assert_array_equal(tuned_out[:, 2], coco[:, 0])
    np.testing.assert_array_equal(tuned_out[:, 0], coco[:, list(COCO_CLASS_NAMES).index("dog")])


def test_converter_errors_name_the_problem(tmp_path, capsys):
    from keras_retinanet.backbones.torchvision.state_dict import CheckpointError
    from keras_retinanet.cli.retinanet import main
    from keras_retinanet.convert.model_garden import convert_model_garden_retinanet

    shapes, _ = reference("mobilenet_v2")
    values = make_values(shapes)
    variables = {k.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"): v for k, v in values.items()}
    p3_p6 = {
        k: v
        for k, v in variables.items()
        if not k.startswith(("decoder/layer_with_weights-11", "decoder/layer_with_weights-12"))
    }
    with pytest.raises(CheckpointError, match="P3-P6 models .* not supported"):
        convert_model_garden_retinanet(p3_p6)
    with pytest.raises(
        CheckpointError,
        match="--spec mobilenet_multi_avg given, but the checkpoint's backbone is mobilenet_v2",
    ):
        convert_model_garden_retinanet(variables, spec="mobilenet_multi_avg")
    missing = dict(variables)
    del missing["head/_box_norms/2/1/gamma"]
    with pytest.raises(CheckpointError, match="no variable head/_box_norms/2/1/gamma"):
        convert_model_garden_retinanet(missing)
    extra = {**variables, "head/_cls_convs/4/bias": np.zeros(128, "float32")}
    with pytest.raises(CheckpointError, match="1 variables have no place .* head/_cls_convs/4/bias"):
        convert_model_garden_retinanet(extra)
    (tmp_path / "empty").mkdir()
    assert (
        main(["convert", "model-garden", str(tmp_path / "empty"), "--output", str(tmp_path / "m.keras")]) == 2
    )
    assert (
        "expected one TensorFlow checkpoint (NAME.index + NAME.data-*) in the folder, found 0"
        in capsys.readouterr().err
    )
    (tmp_path / "bad.index").write_bytes(b"not a checkpoint")
    assert (
        main(["convert", "model-garden", str(tmp_path / "bad"), "--output", str(tmp_path / "m.keras")]) == 2
    )
    assert "not a readable TensorFlow checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "m.keras").exists()


def test_converted_model_exports_to_int8_and_mediapipe_finds_what_litert_finds(tmp_path, bccd_subset):
    """The converted model is a model like any other: int8 export (calibrated on BCCD photos), with the metadata
    MediaPipe Tasks reads; MediaPipe's ObjectDetector with default options reports LiteRT's detections."""
    from retinanet_testing import require_mediapipe
    from test_mediapipe import _assert_same_detections, _detector_rows, _mediapipe_rows

    from keras_retinanet.cli.retinanet import main
    from keras_retinanet.convert.model_garden import convert_model_garden_retinanet
    from keras_retinanet.detectors import TFLiteDetector
    from keras_retinanet.imaging import read_image

    mediapipe = (
        require_mediapipe("mediapipe"),
        require_mediapipe("mediapipe.tasks.python.vision"),
        require_mediapipe("mediapipe.tasks.python.core.base_options").BaseOptions,
    )
    shapes, _ = reference("mobilenet_v2")
    prefix = write_checkpoint(make_values(shapes), tmp_path / "ckpt" / "ckpt-277200")
    model, _ = convert_model_garden_retinanet(prefix)
    # Random weights score every anchor near 0.5: a lower class bias leaves a few dozen detections to compare.
    head = model.get_layer("classification_head").final
    head.bias.assign(np.asarray(head.bias) - 3.0)
    model.save(tmp_path / "coco.keras")
    root = bccd_subset(["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"])
    export = ["export", str(tmp_path / "coco.keras"), "-o", str(tmp_path / "export"), "--no-saved-model"]
    calibration = ["--tflite", "int8", "--calibration-data", f"voc:{root}:train", "--calibration-steps", "3"]
    assert main([*export, *calibration, "--parity-images", "0"]) == 0
    path = tmp_path / "export" / "model_int8.tflite"
    image = read_image(root / "JPEGImages" / "BloodImage_00000.jpg")
    (found,) = TFLiteDetector(path).detect([image])
    assert len(found.classes) >= 5
    rows = _mediapipe_rows(mediapipe, path, image, list(model.class_names))
    _assert_same_detections(rows, _detector_rows(found), "int8")
