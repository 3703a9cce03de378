"""ModelConfig / TrainConfig: one home for each model option, defaults that follow the classes, flags from
real types, flat and nested YAML, and the `data check` suggestion pasted into `train`."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

from keras_retinanet.cli.retinanet import build_parser
from keras_retinanet.cli.train import resolve_config
from keras_retinanet.model.config import TARGET_CLASSES, ModelConfig
from keras_retinanet.model.options import field_types
from keras_retinanet.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]

# Arguments of the configured classes that no ModelConfig field sets, and why.
NOT_CONFIGURED = {
    ("RetinaNet", "num_classes"): "from the data",
    ("RetinaNet", "class_names"): "from the data",
    ("RetinaNet", "anchor_generator"): "built from the anchor_* fields",
    ("RetinaNet", "box_coder"): "built from the box_* fields",
    ("RetinaNet", "matcher"): "built from the matcher fields",
    ("RetinaNet", "decoder"): "built from the decoder fields",
    ("AnchorGenerator", "min_level"): "the pyramid has levels P3-P7 only",
    ("AnchorGenerator", "max_level"): "the pyramid has levels P3-P7 only",
    ("FocalLoss", "name"): "Keras' loss name",
    ("BoxRegressionLoss", "name"): "Keras' loss name",
    ("BoxRegressionLoss", "box_coder"): "the model's box coder (box_* fields), given by ModelConfig.losses",
}
# Where the config's default says the same thing differently, or must differ.
SAME_MEANING = {
    ("RetinaNet", "backbone_kwargs"): (None, {}),  # None means no extra arguments
    # RetinaNet's None means "size not recorded"; a training run always has a size and records it.
    ("RetinaNet", "image_size"): (None, 512),
}


def _classes():
    import importlib

    return {name: getattr(importlib.import_module(module), name) for name, module in TARGET_CLASSES.items()}


def _parameters(cls) -> dict[str, inspect.Parameter]:
    return {
        name: p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


# Where the default recipe differs from the paper (the classes' defaults); --recipe paper restores them.
RECIPE_DEFAULTS = {("Matcher", "matching"): ("iou", "atss"), ("RetinaNet", "use_group_norm"): (False, True)}


def test_model_config_defaults_are_the_classes_defaults():
    classes = _classes()
    targeted = set()
    for field in dataclasses.fields(ModelConfig):
        class_name, argument = field.metadata["target"]
        parameters = _parameters(classes[class_name])
        assert argument in parameters, f"{field.name}: {class_name} has no argument {argument}"
        targeted.add((class_name, argument))
        ours = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        theirs = parameters[argument].default
        if (class_name, argument) in SAME_MEANING:
            assert (theirs, ours) == SAME_MEANING[(class_name, argument)], field.name
            continue
        if (class_name, argument) in RECIPE_DEFAULTS:
            assert (theirs, ours) == RECIPE_DEFAULTS[(class_name, argument)], field.name
            assert getattr(TrainConfig.from_recipe("paper").model, field.name) == theirs, field.name
            continue
        if isinstance(theirs, (list, tuple)):
            theirs = tuple(theirs)
        assert ours == theirs, f"ModelConfig.{field.name} = {ours!r}, but {class_name}({argument}={theirs!r})"
    # Every argument of every configured class is set by a field or deliberately left out: a new argument
    # of RetinaNet or of one of its parts fails here until ModelConfig gets it.
    for class_name, cls in classes.items():
        for argument in _parameters(cls):
            key = (class_name, argument)
            assert key in targeted or key in NOT_CONFIGURED, (
                f"no ModelConfig field for {class_name}({argument})"
            )
    assert not targeted & set(NOT_CONFIGURED)


def test_build_passes_every_field_to_its_class():
    """Every field set away from its default reaches the built model, its parts and its losses."""
    changed = ModelConfig(
        backbone="mobilenet_v2",
        weights=None,
        backbone_kwargs={"alpha": 0.35},
        batchnorm_momentum=0.97,
        backbone_feature_layers=("block_5_add", "block_12_add", "block_16_project_BN"),
        input_normalization="torch",
        fpn_channels=16,
        p6_source="p5",
        fpn_padding="symmetric",
        fpn_batchnorm=True,
        head_depth=1,
        head_channels=8,
        use_group_norm=False,
        group_norm_epsilon=1e-3,
        head_batchnorm=True,
        separable_convs=True,
        activation="relu6",
        prior_probability=0.02,
        image_size=(96, 128),
        anchor_sizes=(16, 32, 64, 128, 256),
        anchor_scales=(1.0, 1.5),
        anchor_aspect_ratios=(1.0,),
        anchor_offset=0.0,
        anchor_round_sizes=True,
        box_weights=(10.0, 10.0, 5.0, 5.0),
        box_clamp=3.0,
        positive_threshold=0.6,
        negative_threshold=0.3,
        allow_low_quality_matches=True,
        matching="iou",
        atss_topk=5,
        score_threshold=0.2,
        topk_per_level=50,
        nms_iou_threshold=0.6,
        max_detections=7,
        class_agnostic_nms=True,
        focal_alpha=None,
        focal_gamma=1.5,
        box_loss="giou",
        box_loss_beta=0.2,
    )
    defaults = ModelConfig()
    assert all(
        getattr(changed, f.name) != getattr(defaults, f.name)
        for f in dataclasses.fields(ModelConfig)
        if f.name != "weights"
    )
    model = changed.build(["a", "b"])
    losses = changed.losses()
    built = {
        "RetinaNet": model.get_config(),
        "AnchorGenerator": model.anchor_generator.get_config(),
        "BoxCoder": vars(model.box_coder),
        "Matcher": vars(model.matcher),
        "DetectionDecoder": vars(model.decoder),
        "FocalLoss": losses["classification"].get_config(),
        "BoxRegressionLoss": losses["box_regression"].get_config(),
    }
    for field in dataclasses.fields(ModelConfig):
        class_name, argument = field.metadata["target"]
        if (class_name, argument) == ("RetinaNet", "backbone_weights"):
            continue  # never saved in the config (the weights travel in the file)
        value, got = getattr(changed, field.name), built[class_name][argument]
        if isinstance(value, tuple) and isinstance(value[0], str):
            assert tuple(got) == value, field.name
        elif isinstance(value, tuple):
            np.testing.assert_allclose(got, value, err_msg=field.name)
        else:
            assert got == value, f"{field.name}: built {class_name} has {argument}={got!r}"
    assert model.num_classes == 2 and model.class_names == ["a", "b"]
    assert model.image_size == (96, 128)
    # 2 scales x 1 ratio per location, and the first-level anchor is a rounded torchvision anchor.
    assert model.anchor_generator.num_anchors_per_location == 2
    # The GIoU loss decodes deltas with the model's box coding.
    assert vars(losses["box_regression"].box_coder) == vars(model.box_coder)


def test_train_and_model_options_do_not_share_a_name():
    model_names = {f.name for f in dataclasses.fields(ModelConfig)}
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not model_names & train_names


def test_strategy_choices_are_the_distribute_module_s():
    from keras_retinanet.training.distribute import STRATEGIES

    assert typing.get_args(field_types(TrainConfig)["strategy"]) == STRATEGIES


# The flat file this repository shipped before ModelConfig: it must still mean the same run.
FLAT_BCCD_QUICK = """
backbone: mobilenet_v2
weights: none
fpn_channels: 128
head_depth: 4
image_size: 384
batch_size: 8
epochs: 30
steps_per_epoch: 37
optimizer: sgd
learning_rate: 0.01
momentum: 0.9
weight_decay: 0.0001
schedule: cosine
warmup_steps: 200
clip_norm: 10.0
flip_probability: 0.5
scale_range: [1.0, 1.0]
eval_every: 10
skip_bad: true
"""


def test_bccd_quick_config_keeps_its_meaning(tmp_path):
    """The protocol's file is the paper recipe with the protocol's schedule, as before the default recipe."""
    expected = TrainConfig.from_recipe(
        "paper",
        model=dict(backbone="mobilenet_v2", weights=None, fpn_channels=128, head_depth=4, image_size=384),
        batch_size=8,
        epochs=30,
        steps_per_epoch=37,
        optimizer="sgd",
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_steps=200,
        clip_norm=10.0,
        flip_probability=0.5,
        scale_range=(1.0, 1.0),
        eval_every=10,
        skip_bad=True,
    )
    assert TrainConfig.from_yaml(REPO / "configs" / "bccd_quick.yaml") == expected
    flat = tmp_path / "flat.yaml"
    flat.write_text(FLAT_BCCD_QUICK)
    # A file of earlier versions (no recipe key) reads as the same run with --recipe paper.
    assert TrainConfig.from_yaml(flat, recipe="paper") == expected
    # Everything not in the file is the paper's: anchors, matcher, heads, square input, losses.
    assert expected.model.anchor_sizes == (32.0, 64.0, 128.0, 256.0, 512.0)
    assert expected.model.positive_threshold == 0.5 and expected.model.focal_gamma == 2.0
    assert (expected.anchors, expected.model.matching, expected.model.use_group_norm) == (
        "given",
        "iou",
        False,
    )
    # A run folder of an earlier version says "paper" for the anchors as given.
    assert TrainConfig(anchors="paper") == TrainConfig(anchors="given")
    assert (expected.image_shape, expected.warmup_steps, expected.schedule) == ("square", 200, "cosine")


def test_run_config_yaml_is_nested_and_reads_back(tmp_path):
    config = TrainConfig(
        data="voc:x",
        clip_norm=None,
        model=ModelConfig(anchor_round_sizes=True, image_size=(320, 480), focal_alpha=None),
    )
    text = config.to_yaml()
    values = yaml.safe_load(text)
    assert values["model"]["anchor_round_sizes"] is True and "anchor_round_sizes" not in values
    assert values["clip_norm"] is None and values["model"]["image_size"] == [320, 480]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert TrainConfig.from_yaml(path) == config


def test_flat_nested_and_dotted_keys_agree():
    flat = TrainConfig.from_dict({"fpn_channels": 64, "anchor_offset": 0.0, "epochs": 2})
    nested = TrainConfig.from_dict({"model": {"fpn_channels": 64, "anchor_offset": 0.0}, "epochs": 2})
    dotted = TrainConfig().update({"model.fpn_channels": 64, "model.anchor-offset": 0, "epochs": "2"})
    assert flat == nested == dotted
    assert flat.model.fpn_channels == 64 and isinstance(dotted.model.anchor_offset, float)
    with pytest.raises(ValueError, match="fpn_channels given twice"):
        TrainConfig.from_dict({"fpn_channels": 64, "model": {"fpn_channels": 32}})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"fpn_chanels": 3}, r"unknown training option\(s\): fpn_chanels \(did you mean fpn_channels\?\)"),
        ({"model": {"epochs": 3}}, r"unknown model option\(s\): epochs"),
        ({"epochs": 2.5}, "option epochs: expected an integer, got 2.5"),
        ({"box_weights": [1, 1]}, "option box_weights: expected 4 numbers"),
        ({"anchor_sizes": [32, "x"]}, r"option anchor_sizes\[1\]: expected a number"),
        ({"optimizer": "adam"}, "option optimizer: expected one of sgd, adamw, got 'adam'"),
        ({"mixed_precision": "maybe"}, "option mixed_precision: expected true or false"),
        ({"backbone_kwargs": "[1, 2]"}, "option backbone_kwargs: expected a mapping"),
        ({"learning_rate": None}, "option learning_rate: expected a number, got None"),
    ],
)
def test_bad_values_are_errors_that_name_the_option(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  head_depth: four\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: option head_depth: expected an integer")):
        TrainConfig.from_yaml(path)
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        TrainConfig.from_yaml(path)


def _train(*flags: str) -> TrainConfig:
    return resolve_config(build_parser().parse_args(["train", *flags]))


def test_flag_types_come_from_the_field_types():
    config = _train(
        "--clip-norm", "none", "--steps-per-epoch", "none", "--focal-alpha", "none", "--val-data", "none",
        "--epochs", "3", "--learning-rate", "1e-3", "--anchor-round-sizes", "--no-cache",
        "--backbone-kwargs", '{"alpha": 0.35}', "--optimizer", "adamw", "--p6-source", "p5",
    )  # fmt: skip
    assert config.clip_norm is None and config.steps_per_epoch is None and config.val_data is None
    assert config.model.focal_alpha is None
    assert config.epochs == 3 and config.learning_rate == 1e-3 and config.cache is False
    assert config.model.anchor_round_sizes is True and config.model.backbone_kwargs == {"alpha": 0.35}
    assert config.optimizer == "adamw" and config.model.p6_source == "p5"
    assert _train("--clip-norm", "2.5").clip_norm == 2.5


@pytest.mark.parametrize(
    "flags",
    [
        ["--anchor-sizes", "16,32,64,128,256"],
        ["--anchor-sizes", "16", "32", "64", "128", "256"],
        ["--anchor-sizes", "16,32", "64", "128,256"],
        ["--anchor-sizes", "16,", "32,", "64,", "128,", "256"],
    ],
)
def test_list_flags_accept_commas_and_spaces(flags):
    assert _train(*flags).model.anchor_sizes == (16.0, 32.0, 64.0, 128.0, 256.0)


def test_every_list_option_takes_both_spellings():
    for field in dataclasses.fields(ModelConfig) + dataclasses.fields(TrainConfig):
        if not isinstance(field.default, tuple):
            continue
        values = [str(v) for v in field.default]
        flag = "--" + field.name.replace("_", "-")
        spaced, commas = _train(flag, *values), _train(flag, ",".join(values))
        assert spaced == commas, field.name
    assert _train("--image-size", "384").model.image_size == 384
    assert _train("--image-size", "384", "640").model.image_size == (384, 640)
    assert _train("--image-size", "384,640").model.image_size == (384, 640)


def test_bad_flags_exit_with_a_usage_error(capsys):
    for flags in (
        ["--box-weights", "1", "2"],
        ["--epochs", "1.5"],
        ["--optimizer", "adam"],
        ["--clip-norm", "x"],
    ):
        with pytest.raises(SystemExit) as error:
            build_parser().parse_args(["train", *flags])
        assert error.value.code == 2
    err = capsys.readouterr().err
    assert "argument --box-weights: option box_weights: expected 4 numbers" in err
    assert "argument --clip-norm: option clip_norm: expected none or a number, got 'x'" in err


def test_config_precedence_yaml_flags_set(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        yaml.safe_dump({"image_size": 384, "batch_size": 4, "anchor_sizes": [16, 32, 64, 128, 256]})
    )
    config = _train(
        "--config", str(config_file), "--batch-size", "2", "--fpn-channels", "32",
        "--set", "learning_rate=0.02", "--set", "mixed_precision=true", "--set", "model.fpn_channels=64",
        "--set", "clip_norm=none",
    )  # fmt: skip
    assert (config.model.image_size, config.batch_size, config.learning_rate) == (384, 2, 0.02)
    assert config.mixed_precision is True and config.model.anchor_sizes == (16, 32, 64, 128, 256)
    assert config.model.fpn_channels == 64 and config.clip_norm is None
    # A flag not given leaves the YAML value alone (flags default to "not given", not to the default).
    assert _train("--config", str(config_file)).model.image_size == 384
    with pytest.raises(ValueError, match="unknown training option.*imagesize"):
        _train("--set", "imagesize=3")
    with pytest.raises(ValueError, match="--set expects KEY=VALUE"):
        _train("--set", "epochs")


def test_data_check_suggestion_pastes_into_train(tmp_path, capsys):
    """`retinanet data check` prints anchors with train's flag names; train's parser reads them back."""
    from keras_retinanet.cli.retinanet import main
    from keras_retinanet.data.synthetic import make_synthetic_coco

    spec = make_synthetic_coco(tmp_path / "data", num_images=6, image_size=128, seed=3)
    report = tmp_path / "check.json"
    assert (
        main(["data", "check", spec, "--image-size", "128", "--anchor-sizes", "16,32,64,128,256",
              "--iterations", "20", "--json", str(report)])
        == 0
    )  # fmt: skip
    lines = [line for line in capsys.readouterr().out.splitlines() if "use: retinanet train" in line]
    assert len(lines) == 1
    flags = lines[0].split("use: retinanet train", 1)[1].split()
    config = _train(*flags)
    suggested = json.loads(report.read_text())["anchors"]
    np.testing.assert_allclose(config.model.anchor_scales, suggested["scales"], atol=5e-4)
    np.testing.assert_allclose(config.model.anchor_aspect_ratios, suggested["aspect_ratios"], atol=5e-4)
    np.testing.assert_allclose(config.model.anchor_sizes, suggested["sizes"], rtol=5e-4)
    assert config.model.image_size == (128, 128) and config.model.anchor_offset == 0.5


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    config = TrainConfig.from_yaml(path)
    copy = tmp_path / "config.yaml"
    copy.write_text(config.to_yaml())
    assert TrainConfig.from_yaml(copy) == config
