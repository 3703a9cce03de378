"""One vocabulary, one home per idea: presets and the benchmark speak ModelConfig, shared values are defined once
(keras_retinanet/conventions.py), boxes are clipped by boxes.clip_boxes and images resized by imaging.py."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from keras_retinanet.boxes import clip_boxes
from keras_retinanet.conventions import (
    DEFAULT_IMAGE_SIZE,
    DISPLAY_SCORE_THRESHOLD,
    LABELS_FILE,
    class_name,
    fallback_class_names,
)
from keras_retinanet.model.config import ModelConfig
from keras_retinanet.model.presets import PRESETS, TORCHVISION_IMAGE_SIZE, retinanet_from_preset
from keras_retinanet.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_vocabulary_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------
# presets are ModelConfigs


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_model_config_that_round_trips_value_by_value(name):
    preset = PRESETS[name]
    assert type(preset) is ModelConfig
    through_yaml = ModelConfig.from_dict(yaml.safe_load(yaml.safe_dump(preset.to_dict())))
    for field in dataclasses.fields(ModelConfig):
        original, restored = getattr(preset, field.name), getattr(through_yaml, field.name)
        assert restored == original and type(restored) is type(original), field.name


def test_presets_hold_the_papers_and_torchvisions_values():
    # What each preset changes from ModelConfig's defaults, written out by hand from the papers / torchvision.
    assert PRESETS["paper"].non_defaults() == {"use_group_norm": False, "matching": "iou"}
    torchvision = {
        "backbone": "torchvision_resnet50",
        "p6_source": "p5",
        "fpn_padding": "symmetric",
        "use_group_norm": False,
        "image_size": 1024,
        "anchor_offset": 0.0,
        "anchor_round_sizes": True,
        "allow_low_quality_matches": True,
        "matching": "iou",
        "max_detections": 300,
        "box_loss": "l1",
    }
    assert PRESETS["torchvision"].non_defaults() == torchvision
    # v2: P6 from C5 and GroupNorm heads (both the defaults), the GIoU loss.
    v2 = {**torchvision, "box_loss": "giou"}
    del v2["p6_source"], v2["use_group_norm"]
    assert PRESETS["torchvision_v2"].non_defaults() == v2
    assert TORCHVISION_IMAGE_SIZE == 1024 and DEFAULT_IMAGE_SIZE == 512


def test_the_paper_recipe_model_is_the_paper_preset():
    assert TrainConfig.from_recipe("paper").model == PRESETS["paper"]


def test_the_torchvision_v2_training_config_uses_the_v2_preset_model():
    """configs/torchvision_retinanet_v2.yaml's model options are the preset's, but for its trainable backbone."""
    model = TrainConfig.from_yaml(REPO / "configs" / "torchvision_retinanet_v2.yaml").model
    assert dataclasses.replace(model, backbone_kwargs={}) == PRESETS["torchvision_v2"]


def test_the_model_garden_config_uses_the_preset_model_with_keras_imagenet_pixels():
    """configs/model_garden_mobilenet_v2.yaml trains the preset's architecture from Keras' ImageNet weights, whose
    pixels are [-1, 1]; the preset keeps the COCO checkpoints' ImageNet mean/std."""
    model = TrainConfig.from_yaml(REPO / "configs" / "model_garden_mobilenet_v2.yaml").model
    assert (
        model.input_normalization is None
        and PRESETS["model_garden_mobilenet_v2"].input_normalization == "torch"
    )
    assert dataclasses.replace(model, input_normalization="torch") == PRESETS["model_garden_mobilenet_v2"]


def test_retinanet_from_preset_builds_the_preset_with_the_given_options():
    small = dict(
        backbone="mobilenet_v2", weights=None, backbone_kwargs={"alpha": 0.35}, fpn_channels=16, head_depth=1
    )
    model = retinanet_from_preset("torchvision", 2, name="tiny", **small)
    config = PRESETS["torchvision"].update(small)
    assert model.name == "tiny" and model.class_names == ["0", "1"]
    assert (model.p6_source, model.fpn_padding, model.fpn_channels, model.head_depth) == (
        "p5",
        "symmetric",
        16,
        1,
    )
    assert model.image_size == (1024, 1024) and config.image_size == 1024
    assert model.decoder.max_detections == 300 and model.matcher.allow_low_quality_matches
    assert model.anchor_generator.offset == 0.0 and model.anchor_generator.round_sizes
    with pytest.raises(ValueError, match="unknown preset 'yolo'"):
        retinanet_from_preset("yolo", 2)


# ----------------------------------------------------------------------------------------------------------
# the benchmark builds its model from a ModelConfig


def test_the_benchmark_protocol_model_is_the_paper_preset():
    from benchmarking.project import ProjectSettings

    settings = ProjectSettings()
    assert settings.model == PRESETS["paper"] and settings.image_size == 512 and settings.num_classes == 80
    tool = _load_tool("benchmark")
    assert tool.parse_args([]).model == PRESETS["paper"]
    quick = tool.parse_args(["--quick", "--p6-source", "p5", "--backbone-alpha", "0.5"]).model
    assert quick == PRESETS["paper"].update(
        {
            "image_size": 64,
            "backbone": "mobilenet_v2",
            "backbone_kwargs": {"alpha": 0.5},
            "fpn_channels": 32,
            "head_depth": 1,
            "p6_source": "p5",
        }
    )
    with pytest.raises(ValueError, match="square"):
        _ = ProjectSettings(model=PRESETS["paper"].update({"image_size": (64, 96)})).image_size


def test_the_benchmark_builds_exactly_its_model_config():
    from benchmarking.project import ProjectSettings, build_model

    config = PRESETS["paper"].update(
        {
            "image_size": 64,
            "backbone": "mobilenet_v2",
            "weights": None,
            "backbone_kwargs": {"alpha": 0.35},
            "fpn_channels": 16,
        }
    )
    model = build_model(ProjectSettings(model=config, num_classes=3))
    built, expected = model.get_config(), config.build(["0", "1", "2"]).get_config()
    assert {**built, "name": None} == {**expected, "name": None}  # Keras numbers the names of unnamed models
    assert (model.num_classes, model.fpn_channels, model.image_size, model.matcher.matching) == (
        3,
        16,
        (64, 64),
        "iou",
    )


# ----------------------------------------------------------------------------------------------------------
# one definition of each shared value


def test_class_name_and_the_fallback_names():
    assert fallback_class_names(3) == ["0", "1", "2"]
    assert class_name(1, ["cat", "dog"]) == "dog"
    assert class_name(2, ["cat", "dog"]) == "2" and class_name(-1, ["cat"]) == "-1" and class_name(4) == "4"


def _literal_defaults(path: Path):
    """(line, value) of every function-argument default and keyword argument in a file (but ``alpha=``, a
    plot's transparency)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        defaults = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defaults = [d for d in node.args.defaults + node.args.kw_defaults if d is not None]
        elif isinstance(node, ast.Call):
            defaults = [k.value for k in node.keywords if k.arg != "alpha"]
        for value in defaults:
            if isinstance(value, ast.Constant):
                yield value.lineno, value.value


def test_shared_values_are_not_written_again_as_literals():
    """0.3 (display threshold), 512 (image size) and "labels.txt" are conventions.py's names everywhere."""
    assert (DISPLAY_SCORE_THRESHOLD, LABELS_FILE) == (0.3, "labels.txt")
    found = []
    for path in sorted([*(REPO / "keras_retinanet").rglob("*.py"), *(REPO / "tools").glob("*.py")]):
        if path.name == "conventions.py":
            continue
        found += [
            f"{path.name}:{line} default {value!r}"
            for line, value in _literal_defaults(path)
            if value in (0.3, 512)
        ]
        found += [
            f"{path.name}:{node.lineno} {node.value!r}"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and node.value == "labels.txt"
        ]
    assert found == []


# ----------------------------------------------------------------------------------------------------------
# boxes.clip_boxes, the one clipping; imaging's resizes


def test_clip_boxes_numpy_and_tensors_give_the_hand_values():
    import tensorflow as tf

    boxes = np.array([[-5.0, -1.0, 30.0, 50.0], [10.0, 10.0, 20.0, 20.0]], np.float32)
    expected = [[0.0, 0.0, 25.0, 40.0], [10.0, 10.0, 20.0, 20.0]]  # a 40 high, 25 wide image
    clipped = clip_boxes(boxes, 40, 25)
    assert isinstance(clipped, np.ndarray) and clipped.dtype == np.float32
    np.testing.assert_array_equal(clipped, expected)
    np.testing.assert_array_equal(clip_boxes(boxes.astype(np.float64), 40, 25), expected)
    assert clip_boxes(boxes.astype(np.float64), 40, 25).dtype == np.float64
    np.testing.assert_array_equal(clip_boxes(tf.constant(boxes), 40, 25).numpy(), expected)
    # (B, M, 4) boxes of two images of their own sizes: 40 x 25 and 10 x 15.
    batch = np.stack([boxes, boxes])
    heights, widths = np.array([[40.0], [10.0]]), np.array([[25.0], [15.0]])
    expected_batch = [expected, [[0.0, 0.0, 15.0, 10.0], [10.0, 10.0, 15.0, 10.0]]]
    np.testing.assert_array_equal(clip_boxes(batch, heights, widths), expected_batch)
    np.testing.assert_array_equal(clip_boxes(tf.constant(batch), heights, widths).numpy(), expected_batch)
    assert np.isnan(clip_boxes(np.array([[np.nan, 0, 1, 1]], np.float32), 4, 4)[0, 0])


def test_rescale_averages_areas_when_shrinking():
    from keras_retinanet.imaging import rescale

    image = np.array([[0, 4, 8, 8], [4, 8, 8, 8], [0, 0, 2, 2], [0, 0, 2, 6]], np.float32)[..., None]
    np.testing.assert_allclose(rescale(image, 0.5).reshape(2, 2), [[4.0, 8.0], [0.0, 3.0]])


def test_resize_tensor_is_bilinear_with_half_pixel_centres():
    from keras_retinanet.imaging import resize_tensor

    row = np.array([[0.0, 10.0]], np.float32)[
        ..., None
    ]  # 1 x 2 -> 1 x 4: samples at x = -0.25, 0.25, 0.75, 1.25
    resized = resize_tensor(row, (1, 4)).numpy().reshape(-1)
    np.testing.assert_allclose(resized, [0.0, 2.5, 7.5, 10.0])
