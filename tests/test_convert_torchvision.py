"""torchvision RetinaNet checkpoints -> Keras, checked without torch against torchvision's own outputs.

``tests/fixtures/torchvision_reference`` (a copy of ``shared/reference``, 4.5 MB) holds torchvision 0.29.1's raw
head outputs of retinanet_resnet50_fpn (v1) and _v2 on one
BCCD image, both filled with weights that numpy rebuilds from a recipe (``make_weights`` of
``tv_converter_reference.py``: one generator per tensor seeded by the crc32 of its name). Rebuilding them here
(independently of the converter), converting them and running the Keras model must give the same numbers.
"""

from __future__ import annotations

import json
import os
import zlib

import numpy as np
import pytest
from helpers.ci_skips import skip_missing
from retinanet_testing import REPO

REFERENCE = REPO / "tests" / "fixtures" / "torchvision_reference"
VARIANTS = {"v1": "retinanet_resnet50_fpn", "v2": "retinanet_resnet50_fpn_v2"}
TOLERANCE = 1e-4  # absolute, on raw deltas and logits (issue 15)


def require_reference():
    if not (REFERENCE / "torchvision_retinanet_state_dict.json").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the torchvision reference data is missing from {REFERENCE}")
        skip_missing(f"torchvision reference data not found at {REFERENCE}")
    return REFERENCE


def make_weights(shapes: dict) -> dict:
    """The reference's recipe: per tensor, numpy's default_rng seeded by crc32(name); by the name's last part."""
    out = {}
    for name, shape in shapes.items():
        shape = tuple(shape)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[name] = np.zeros(shape, np.int64)
        elif leaf == "weight" and len(shape) == 4:  # conv kernel (out, in, kh, kw)
            out[name] = rng.normal(0, 1.0 / np.sqrt(shape[1] * shape[2] * shape[3]), shape).astype(np.float32)
        elif leaf == "weight":  # BatchNorm / GroupNorm scale
            out[name] = rng.uniform(0.5, 1.0, shape).astype(np.float32)
        elif leaf == "bias":
            out[name] = rng.normal(0, 0.05, shape).astype(np.float32)
        elif leaf == "running_mean":
            out[name] = rng.normal(0, 0.1, shape).astype(np.float32)
        elif leaf == "running_var":
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            raise ValueError(name)
    return out


def reference_weights(variant: str) -> dict:
    shapes = json.loads((require_reference() / "torchvision_retinanet_state_dict.json").read_text())
    return make_weights(shapes[VARIANTS[variant]])


def reference_outputs(variant: str):
    return np.load(require_reference() / f"{VARIANTS[variant]}_outputs.npz")


@pytest.fixture(scope="module", params=["v1", "v2"])
def converted(request):
    """(variant, 91-slot model, its raw outputs on the reference image, the reference)."""
    from keras_retinanet.convert.torchvision import convert_torchvision_retinanet

    variant = request.param
    # The reference models were built without weights, so with nn.BatchNorm2d's epsilon 1e-5 (v1's default
    # here is 0, as torchvision runs its COCO v1 weights).
    model, report = convert_torchvision_retinanet(
        reference_weights(variant), keep_unused_slots=True, image_size=512, batchnorm_epsilon=1e-5
    )
    assert report["variant"] == variant and report["num_slots"] == 91 and report["dropped_slots"] == []
    reference = reference_outputs(variant)
    outputs = model(reference["image_uint8_rgb"][None].astype("float32"), training=False)
    return variant, model, {k: np.asarray(v)[0] for k, v in outputs.items()}, reference


def test_raw_outputs_match_torchvision(converted):
    variant, model, outputs, reference = converted
    expected_shapes = [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert reference["feature_shapes"].tolist() == [list(s) for s in expected_shapes]
    assert model.anchor_generator.feature_shapes((512, 512)) == expected_shapes
    deltas, logits = outputs["box_regression"], outputs["classification"]
    assert deltas.shape == reference["bbox_regression"].shape == (49104, 4)
    assert logits.shape == (49104, 91)
    # The reference outputs vary (std ~0.13-0.5): a wrong layout, padding or epsilon moves them by > 1e-2.
    assert reference["bbox_regression"].std() > 0.1
    np.testing.assert_allclose(deltas, reference["bbox_regression"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(
        logits[::16], reference["cls_logits_every_16th_anchor"], rtol=0, atol=TOLERANCE
    )


def _numpy_torchvision_anchors(feature_shapes, image_size=512):
    """torchvision's AnchorGenerator for RetinaNet, re-derived: per level, shifts + rounded cell anchors."""
    levels = []
    for level, (height, width) in zip(range(3, 8), feature_shapes):
        base = 2 ** (level + 2)
        sizes = np.array([base, int(base * 2 ** (1 / 3)), int(base * 2 ** (2 / 3))], np.float32)
        h_ratios = np.sqrt(np.array([0.5, 1.0, 2.0], np.float32))
        ws = (1 / h_ratios[:, None] * sizes[None]).reshape(-1)
        hs = (h_ratios[:, None] * sizes[None]).reshape(-1)
        cell = np.round(np.stack([-ws, -hs, ws, hs], 1) / 2)
        stride_y, stride_x = image_size // height, image_size // width
        ys, xs = np.meshgrid(np.arange(height) * stride_y, np.arange(width) * stride_x, indexing="ij")
        shifts = np.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4)
        levels.append((shifts + cell[None]).reshape(-1, 4).astype(np.float32))
    return levels


def _numpy_nms(boxes, scores, threshold):
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, order = order[0], order[1:]
        keep.append(i)
        x1 = np.maximum(boxes[i, 0], boxes[order, 0])
        y1 = np.maximum(boxes[i, 1], boxes[order, 1])
        x2 = np.minimum(boxes[i, 2], boxes[order, 2])
        y2 = np.minimum(boxes[i, 3], boxes[order, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        with np.errstate(invalid="ignore"):
            iou = inter / (area[i] + area[order] - inter)
        # As torchvision's kernel: suppress when iou > threshold, so two empty boxes (0 / 0, boxes clipped away
        # at the image border) do not suppress each other.
        order = order[~(iou > threshold)]
    return np.array(keep, int)


def _numpy_torchvision_postprocess(logits, deltas, anchors_per_level, image_size=512):
    """RetinaNet.postprocess_detections of torchvision, re-derived in numpy (score 0.05, top 1000 per level,
    decode with clamp log(1000/16), clip, per-class NMS 0.5, best 300)."""
    all_boxes, all_scores, all_labels = [], [], []
    start = 0
    for anchors in anchors_per_level:
        end = start + len(anchors)
        scores = (1 / (1 + np.exp(-logits[start:end].astype(np.float64)))).reshape(-1)
        candidates = np.flatnonzero(scores > 0.05)
        top = candidates[np.argsort(-scores[candidates], kind="stable")[:1000]]
        anchor_index, labels = top // logits.shape[1], top % logits.shape[1]
        d = deltas[start:end][anchor_index].astype(np.float64)
        a = anchors[anchor_index].astype(np.float64)
        widths, heights = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cx, cy = a[:, 0] + 0.5 * widths, a[:, 1] + 0.5 * heights
        pcx, pcy = d[:, 0] * widths + cx, d[:, 1] * heights + cy
        pw = np.exp(np.minimum(d[:, 2], np.log(1000 / 16))) * widths
        ph = np.exp(np.minimum(d[:, 3], np.log(1000 / 16))) * heights
        boxes = np.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], 1).clip(0, image_size)
        all_boxes.append(boxes)
        all_scores.append(scores[top])
        all_labels.append(labels)
        start = end
    boxes, scores, labels = map(np.concatenate, (all_boxes, all_scores, all_labels))
    keep = np.concatenate(
        [
            np.flatnonzero(labels == k)[_numpy_nms(boxes[labels == k], scores[labels == k], 0.5)]
            for k in np.unique(labels)
        ]
    )
    keep = keep[np.argsort(-scores[keep], kind="stable")][:300]
    return boxes[keep], scores[keep], labels[keep]


def test_decoded_detections_match_torchvision_rules(converted):
    """Our decoder on the converted model's outputs == torchvision's post-processing (re-derived in numpy) on
    torchvision's deltas, with the model's logits (the reference stores only every 16th anchor's; the test
    above checks those)."""
    _, model, outputs, reference = converted
    anchors = _numpy_torchvision_anchors(reference["feature_shapes"].tolist())
    np.testing.assert_array_equal(
        np.asarray(model.anchor_generator(image_shape=(512, 512))), np.concatenate(anchors)
    )
    expected_boxes, expected_scores, expected_labels = _numpy_torchvision_postprocess(
        outputs["classification"], reference["bbox_regression"], anchors
    )
    detections = model.decode({k: v[None] for k, v in outputs.items()}, (512, 512))
    count = int(detections["num_detections"][0])
    boxes = np.asarray(detections["boxes"][0, :count])
    scores = np.asarray(detections["scores"][0, :count])
    classes = np.asarray(detections["classes"][0, :count])
    assert count == len(expected_boxes) == 300
    # Same detections; equal scores may come out in another order, so match each one by class and box.
    unmatched = 0
    for box, score, label in zip(boxes, scores, classes):
        same = (expected_labels == label) & (np.abs(expected_boxes - box).max(axis=1) < 0.5)
        unmatched += not np.any(same & (np.abs(expected_scores - score) < 1e-5))
    assert unmatched == 0
    np.testing.assert_allclose(np.sort(scores), np.sort(expected_scores), atol=1e-5)


def test_default_conversion_keeps_the_80_coco_classes(converted):
    """Without keep_unused_slots the __background__ and N/A slots are dropped; the rest keep their logits."""
    from keras_retinanet.convert.torchvision import (
        COCO_91_SLOT_NAMES,
        COCO_CLASS_NAMES,
        convert_torchvision_retinanet,
    )

    variant, full_model, _, reference = converted
    model, report = convert_torchvision_retinanet(
        reference_weights(variant), image_size=512, batchnorm_epsilon=1e-5
    )
    unused = [0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83]  # COCO category ids that do not exist
    assert report["dropped_slots"] == unused
    assert model.class_names == list(COCO_CLASS_NAMES) and len(COCO_CLASS_NAMES) == 80
    assert [COCO_91_SLOT_NAMES[i] for i in report["slots"]] == model.class_names
    assert model.class_names[:3] == ["person", "bicycle", "car"] and model.class_names[-1] == "toothbrush"
    image = reference["image_uint8_rgb"][None, :128, :128].astype("float32")
    full = np.asarray(full_model(image, training=False)["classification"])
    kept = model(image, training=False)
    np.testing.assert_allclose(np.asarray(kept["classification"]), full[..., report["slots"]], atol=1e-5)


def test_v1_backbone_batchnorm_epsilon_defaults_to_torchvisions_coco_v1():
    """torchvision runs its COCO v1 RetinaNet weights with FrozenBatchNorm2d epsilon 0 (overwrite_eps)."""
    from keras_retinanet.backbones.torchvision.resnet import FrozenBatchNormalization
    from keras_retinanet.convert.torchvision import convert_torchvision_retinanet

    model, report = convert_torchvision_retinanet(reference_weights("v1"), image_size=512)
    norms = [layer for layer in model.backbone.layers if isinstance(layer, FrozenBatchNormalization)]
    assert report["batchnorm_epsilon"] == 0.0 and len(norms) == 53 and {n.epsilon for n in norms} == {0.0}
    assert model.backbone_kwargs["batchnorm_epsilon"] == 0.0  # saved with the model, so a reload keeps it


def test_anchor_order_and_cell_anchors_are_torchvisions():
    from keras_retinanet.convert.torchvision import anchor_permutation, torchvision_cell_anchors
    from keras_retinanet.model.anchors import AnchorGenerator

    generator = AnchorGenerator(offset=0.0, round_sizes=True)
    np.testing.assert_array_equal(anchor_permutation(generator), np.arange(9))
    # Ratio-major: anchors 0-2 are the three sizes of ratio 0.5 (wide), 6-8 of ratio 2 (tall).
    cell = torchvision_cell_anchors(3)
    width, height = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    assert np.all(width[:3] > height[:3]) and np.all(width[6:] < height[6:])
    np.testing.assert_array_equal(cell[3], [-16, -16, 16, 16])  # ratio 1, size 32
    # A scale-major generator is another order: the permutation finds it.
    scale_major = AnchorGenerator(offset=0.0, round_sizes=True)
    scale_major.cell_anchors = lambda level: (
        generator.cell_anchors(level).reshape(3, 3, 4).transpose(1, 0, 2).reshape(9, 4)
    )
    np.testing.assert_array_equal(anchor_permutation(scale_major), [0, 3, 6, 1, 4, 7, 2, 5, 8])
    with pytest.raises(ValueError, match="not one of torchvision"):
        anchor_permutation(AnchorGenerator(offset=0.0, round_sizes=False))


def test_converter_errors_name_the_problem():
    from keras_retinanet.backbones.torchvision.state_dict import CheckpointError
    from keras_retinanet.convert.torchvision import convert_torchvision_retinanet, torchvision_variant

    weights = reference_weights("v1")
    assert torchvision_variant(weights) == "v1"
    assert torchvision_variant(reference_weights("v2")) == "v2"
    with pytest.raises(
        CheckpointError, match="--variant v2 given, but the checkpoint is a torchvision RetinaNet v1"
    ):
        convert_torchvision_retinanet(weights, variant="v2")
    missing = {k: v for k, v in weights.items() if k != "backbone.fpn.layer_blocks.1.0.bias"}
    with pytest.raises(CheckpointError, match="'backbone.fpn.layer_blocks.1.0.bias' is missing"):
        convert_torchvision_retinanet(missing)
    extra = {**weights, "head.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(CheckpointError, match="no place in the converted model: head.extra.weight"):
        convert_torchvision_retinanet(extra)
    wrong = {**weights, "backbone.fpn.inner_blocks.0.0.weight": np.zeros((256, 256, 1, 1), np.float32)}
    with pytest.raises(
        CheckpointError, match=r"inner_blocks.0.0.weight: shape \(1, 1, 256, 256\) does not fit"
    ):
        convert_torchvision_retinanet(wrong)
    classifier = {k[len("backbone.body.") :]: v for k, v in weights.items() if k.startswith("backbone.body.")}
    with pytest.raises(CheckpointError, match="ResNet classifier, not a RetinaNet"):
        convert_torchvision_retinanet(classifier)
    with pytest.raises(ValueError, match="got 3 class names for a checkpoint with 91 class slots"):
        convert_torchvision_retinanet(weights, class_names=["a", "b", "c"])


def test_state_dict_files_without_torch(tmp_path):
    from keras_retinanet.backbones.torchvision.state_dict import (
        CheckpointError,
        load_state_dict,
        save_state_dict,
    )

    tensors = {
        "backbone.body.conv1.weight": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3),
        "x.bias": np.ones(2),
    }
    save_state_dict(tensors, tmp_path / "w.npz")
    loaded = load_state_dict(tmp_path / "w.npz")
    assert sorted(loaded) == sorted(tensors)
    np.testing.assert_array_equal(loaded["backbone.body.conv1.weight"], tensors["backbone.body.conv1.weight"])
    pytest.importorskip("safetensors")
    save_state_dict(tensors, tmp_path / "w.safetensors")
    np.testing.assert_array_equal(load_state_dict(tmp_path / "w.safetensors")["x.bias"], tensors["x.bias"])
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load_state_dict(tmp_path / "nothing.npz")
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown checkpoint format '.ckpt'"):
        load_state_dict(tmp_path / "w.ckpt")


def test_pth_without_torch_says_what_to_do(tmp_path):
    from keras_retinanet.backbones.torchvision.state_dict import CheckpointError, load_state_dict

    try:
        import torch  # noqa: F401

        pytest.skip("torch is installed")
    except ImportError:
        pass
    (tmp_path / "model.pth").write_bytes(b"PK")
    with pytest.raises(CheckpointError, match=r"needs torch .*\.safetensors"):
        load_state_dict(tmp_path / "model.pth")


def test_convert_command_writes_a_model_that_reloads(tmp_path, capsys):
    """`retinanet convert torchvision W.npz --output M.keras`: the reloaded model computes what the converter's did."""
    import keras

    from keras_retinanet.backbones.torchvision.state_dict import save_state_dict
    from keras_retinanet.cli.retinanet import main
    from keras_retinanet.convert.torchvision import convert_torchvision_retinanet

    weights = reference_weights("v2")
    save_state_dict(weights, tmp_path / "v2.npz")
    output = tmp_path / "coco_v2.keras"
    assert (
        main(
            [
                "convert",
                "torchvision",
                str(tmp_path / "v2.npz"),
                "--output",
                str(output),
                "--image-size",
                "640",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "RetinaNet v2" in printed and "80 classes" in printed and "[0, 12, 26" in printed
    model = keras.saving.load_model(output, compile=False)
    assert model.image_size == (640, 640) and model.use_group_norm and model.p6_source == "c5"
    assert (
        model.fpn_padding == "symmetric"
        and model.group_norm_epsilon == 1e-5
        and model.decoder.max_detections == 300
    )
    assert model.backbone.get_layer("layer3_5_bn2").epsilon == 1e-5
    image = reference_outputs("v2")["image_uint8_rgb"][None, :96, :160].astype("float32")
    expected, _ = convert_torchvision_retinanet(weights, image_size=640)
    for key, value in model(image, training=False).items():
        np.testing.assert_allclose(
            np.asarray(value), np.asarray(expected(image, training=False)[key]), atol=1e-5
        )
    assert main(["convert", "torchvision", str(tmp_path / "v2.npz"), "--output", str(output)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["convert", "torchvision", str(tmp_path / "v2.npz"), "--output", str(tmp_path / "m.h5")]) == 2
    assert (
        main(
            [
                "convert",
                "torchvision",
                str(tmp_path / "v2.npz"),
                "-o",
                str(tmp_path / "m.keras"),
                "--variant",
                "v1",
            ]
        )
        == 2
    )
    assert "the checkpoint is a torchvision RetinaNet v2" in capsys.readouterr().err
