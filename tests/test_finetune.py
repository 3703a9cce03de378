"""Fine-tuning from a trained RetinaNet: what is kept, what is mapped by class name, what starts anew."""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
from retinanet_testing import tiny_retinanet

from keras_retinanet.training.finetune import (
    finetune_model,
    format_report,
    match_class_names,
    transfer_weights,
)

OLD = ["person", "dog", "traffic light", "cat"]
NEW = ["dog", "bird", "Person", "traffic_light"]


@pytest.fixture(scope="module")
def source():
    """A 'trained' model: every weight set to a distinct random value, so that a copy is recognisable."""
    model = tiny_retinanet(len(OLD), class_names=OLD, use_group_norm=True)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(0, 1, variable.shape).astype("float32"))
    return model


def test_names_match_exactly_or_loosely():
    assert match_class_names(OLD, NEW) == {0: 1, 2: 0, 3: 2}
    assert match_class_names(["a b", "A_B"], ["A_B", "a-b"]) == {0: 1, 1: 0}


def test_finetune_copies_weight_by_weight(source, tmp_path):
    path = tmp_path / "source.keras"
    source.save(path)
    model, report = finetune_model(str(path), NEW, image_size=320)
    assert model.class_names == NEW and model.num_classes == 4 and model.image_size == (320, 320)
    assert report["kept"] == {"dog": "dog", "Person": "person", "traffic_light": "traffic light"}
    assert report["new"] == ["bird"] and report["not_used"] == ["cat"] and report["warnings"] == []

    # Everything that does not depend on the classes: equal, variable by variable.
    for name in ("feature_pyramid", "box_head"):
        for old, new in zip(source.get_layer(name).weights, model.get_layer(name).weights):
            np.testing.assert_array_equal(np.asarray(old), np.asarray(new), err_msg=old.path)
    old_backbone, new_backbone = source.backbone.weights, model.backbone.weights
    assert len(old_backbone) == len(new_backbone) > 100
    for old, new in zip(old_backbone, new_backbone):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new), err_msg=old.path)
    old_head, new_head = source.get_layer("classification_head"), model.get_layer("classification_head")
    for old, new in zip(old_head.convs, new_head.convs):
        for a, b in zip(old.weights, new.weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # The last conv: channel anchor * K + class. Matched classes take the old class's column of every anchor.
    anchors = 9
    old_kernel = np.asarray(old_head.final.kernel).reshape(3, 3, 32, anchors, len(OLD))
    old_bias = np.asarray(old_head.final.bias).reshape(anchors, len(OLD))
    kernel = np.asarray(new_head.final.kernel).reshape(3, 3, 32, anchors, len(NEW))
    bias = np.asarray(new_head.final.bias).reshape(anchors, len(NEW))
    for new_index, old_index in ((0, 1), (2, 0), (3, 2)):
        for anchor in range(anchors):
            np.testing.assert_array_equal(kernel[..., anchor, new_index], old_kernel[..., anchor, old_index])
            assert bias[anchor, new_index] == old_bias[anchor, old_index]
    # "bird" starts from the prior: bias -log(99), a fresh N(0, 0.01) kernel column (the source's are N(0, 1)).
    np.testing.assert_allclose(bias[:, 1], -math.log(99.0), rtol=1e-6)
    assert 0.005 < kernel[..., 1].std() < 0.02
    assert "classes starting from the prior: 1 (bird)" in format_report(report)

    # The new model predicts the old model's logits for the matched classes, and the same boxes.
    image = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    old_out, new_out = source(image), model(image)
    np.testing.assert_allclose(
        np.asarray(new_out["box_regression"]), np.asarray(old_out["box_regression"]), atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(new_out["classification"])[..., [0, 2, 3]],
        np.asarray(old_out["classification"])[..., [1, 0, 2]],
        atol=1e-4,
    )


def test_a_finetuned_model_trains(source):
    """A few steps from the transferred weights (GIoU box loss): finite losses that go down on a fixed batch."""
    from keras_retinanet.model.losses import BoxRegressionLoss, FocalLoss

    model, _ = finetune_model(source, ["dog", "bird"])
    encoder = model.label_encoder()
    boxes = np.array([[8.0, 8.0, 40.0, 40.0], [30.0, 10.0, 60.0, 50.0]], "float32")
    targets = encoder.encode((64, 64), boxes, np.array([0, 1], "int32"))
    targets = {key: np.asarray(value)[None] for key, value in targets.items()}
    model.compile(
        optimizer=keras.optimizers.SGD(0.005, momentum=0.9),
        loss={"classification": FocalLoss(), "box_regression": BoxRegressionLoss("giou")},
    )
    image = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    history = [float(model.train_on_batch(image, targets)[0]) for _ in range(4)]
    assert np.all(np.isfinite(history)) and history[-1] < history[0]


def test_transfer_refuses_another_architecture(source):
    other = tiny_retinanet(2, class_names=["dog", "bird"], fpn_channels=16, use_group_norm=True)
    with pytest.raises(ValueError, match="feature_pyramid: weight .* not the same architecture"):
        transfer_weights(source, other)
    with pytest.raises(ValueError, match="cannot change fpn_channels"):
        finetune_model(source, ["dog"], fpn_channels=64)
    from keras_retinanet.detectors import ModelFileError

    with pytest.raises(ModelFileError, match=r"^model not found: missing\.keras \(expected a \.keras file"):
        finetune_model("missing.keras", ["dog"])


# ----------------------------------------------------------------------------------------------------------
# `retinanet train --init MODEL.keras`, end to end on 4 real BCCD images

BCCD_IDS = ["BloodImage_00001", "BloodImage_00004", "BloodImage_00005", "BloodImage_00008"]
BCCD_CLASSES = ["Platelets", "RBC", "WBC"]  # the VOC reader's sorted names
INIT_CLASSES = ["RBC", "dog", "cat"]
PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)


def _trained_like(class_names, seed: int, **kwargs):
    """A tiny RetinaNet whose every weight is moved off its initial value (so that a copy is recognisable and
    differs from a model built with train's seed), with BatchNorm variances kept positive, so that it runs in
    inference mode (frozen BatchNorm) as a trained model would."""
    model = tiny_retinanet(len(class_names), class_names=class_names, **kwargs)
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = np.asarray(variable)
        if "moving_variance" in variable.path:
            value = rng.uniform(0.5, 1.5, value.shape)
        else:
            value = value + rng.normal(0, 0.05, value.shape)
        variable.assign(value.astype("float32"))
    return model


def _class_independent_weights(model) -> list:
    """(path, array) of every weight outside the classification head's last conv, in a fixed order."""
    head = model.get_layer("classification_head")
    layers = [model.backbone, model.get_layer("feature_pyramid"), model.get_layer("box_head"), *head.convs]
    return [(variable.path, np.array(variable)) for layer in layers for variable in layer.weights]


class _StopBeforeTrainingError(Exception):
    pass


def _spy_on_finetune(monkeypatch, stop: bool = False) -> list:
    """Records, at the moment ``train`` gets it, the model ``finetune_model`` builds (training changes it later);
    ``stop``: then raises ``_StopBeforeTrainingError``, for tests about the model only."""
    import keras_retinanet.training.finetune as finetune

    real, calls = finetune.finetune_model, []

    def spy(source, class_names, **overrides):
        model, report = real(source, class_names, **overrides)
        head = model.get_layer("classification_head")
        calls.append(
            {
                "overrides": overrides,
                "report": report,
                "config": model.get_config(),
                "class_independent": _class_independent_weights(model),
                "kernel": np.array(head.final.kernel),
                "bias": np.array(head.final.bias),
            }
        )
        if stop:
            raise _StopBeforeTrainingError
        return model, report

    monkeypatch.setattr(finetune, "finetune_model", spy)
    return calls


def _train_argv(init, root, output, *extra) -> list[str]:
    return [
        "train", "--init", str(init), "--data", f"voc:{root}:train", "--output", str(output),
        "--image-size", "128", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
        "--learning-rate", "0.001", "--warmup-steps", "1", "--no-tensorboard",
        "--verbose", "0", *extra,
    ]  # fmt: skip


def test_train_init_end_to_end_on_bccd(bccd_subset, tmp_path, monkeypatch, capsys):
    """`retinanet train --init` fine-tunes an RBC/dog/cat model on BCCD (Platelets, RBC, WBC): RBC starts from
    the old RBC weights of every anchor, Platelets and WBC from the prior, the rest is the old model's."""
    from keras_retinanet.cli.retinanet import main
    from keras_retinanet.training import TrainConfig

    source = _trained_like(INIT_CLASSES, seed=3)
    init = tmp_path / "init.keras"
    source.save(init)
    root = bccd_subset(BCCD_IDS)
    output = tmp_path / "run"
    calls = _spy_on_finetune(monkeypatch)

    assert main(_train_argv(init, root, output)) == 0
    printed = capsys.readouterr().out
    assert "classes starting from the old model's: 1 (RBC)" in printed
    assert "classes starting from the prior: 2 (Platelets, WBC)" in printed

    # The model training started from: built once, from init.keras, at the run's image size: 128 on the longer
    # side of BCCD's 4:3 photos (the default --image-shape data).
    assert len(calls) == 1
    start = calls[0]
    assert start["overrides"] == {"image_size": (96, 128)}
    assert start["report"]["kept"] == {"RBC": "RBC"} and start["report"]["not_used"] == ["dog", "cat"]
    old_weights = _class_independent_weights(source)
    assert len(start["class_independent"]) == len(old_weights) > 100
    for (path, old), (_, new) in zip(old_weights, start["class_independent"]):
        np.testing.assert_array_equal(new, old, err_msg=path)
    anchors, channels = 9, 32
    old_head = source.get_layer("classification_head")
    old_kernel = np.asarray(old_head.final.kernel).reshape(3, 3, channels, anchors, 3)
    old_bias = np.asarray(old_head.final.bias).reshape(anchors, 3)
    kernel = start["kernel"].reshape(3, 3, channels, anchors, 3)
    bias = start["bias"].reshape(anchors, 3)
    rbc_old, rbc_new = INIT_CLASSES.index("RBC"), BCCD_CLASSES.index("RBC")  # 0 -> 1
    np.testing.assert_array_equal(kernel[..., rbc_new], old_kernel[..., rbc_old])
    np.testing.assert_array_equal(bias[:, rbc_new], old_bias[:, rbc_old])
    for name in ("Platelets", "WBC"):
        np.testing.assert_allclose(bias[:, BCCD_CLASSES.index(name)], PRIOR_BIAS, rtol=1e-6)
        # Keras' fresh N(0, 0.01) column, not a copy of any old class (those were moved by N(0, 0.05)).
        assert 0.005 < kernel[..., BCCD_CLASSES.index(name)].std() < 0.02
    assert math.isclose(PRIOR_BIAS, -4.59512, abs_tol=1e-5)  # -log(99)

    # The run: finite losses, a model for the data's classes that trained from that start.
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["stopped_on_nan"] is None
    assert all(math.isfinite(value) for values in summary["history"].values() for value in values)
    assert (output / "labels.txt").read_text().split("\n")[:3] == BCCD_CLASSES
    assert TrainConfig.from_yaml(output / "config.yaml").init == str(init)  # the run can be repeated
    trained = keras.saving.load_model(output / "model.keras", compile=False)
    assert (
        trained.class_names == BCCD_CLASSES and trained.num_classes == 3 and trained.image_size == (96, 128)
    )
    trained_head = trained.get_layer("classification_head")
    moved = np.abs(np.asarray(trained_head.final.kernel) - start["kernel"]).max()
    assert 0 < moved < 0.1, moved
    # BatchNorm is frozen by default from --init: the backbone's statistics are still the old model's.
    for old, new in zip(source.backbone.weights, trained.backbone.weights):
        if "moving_" in old.path:
            np.testing.assert_array_equal(np.asarray(new), np.asarray(old), err_msg=old.path)


def test_train_init_refuses_model_options_it_would_ignore(bccd_subset, tmp_path, capsys):
    """--init keeps the init model's architecture, anchors, matcher and decoder: a model option that would be
    ignored is refused before anything is written, naming each one (nothing silently recorded as applied)."""
    from keras_retinanet.cli.retinanet import main

    source = _trained_like(["RBC"], seed=4, head_depth=2)
    init = tmp_path / "init.keras"
    source.save(init)
    argv = _train_argv(
        init, bccd_subset(BCCD_IDS), tmp_path / "run", "--fpn-channels", "64", "--score-threshold", "0.3"
    )
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "fpn_channels=64" in error and "score_threshold=0.3" in error and "--init" in error
    assert not (tmp_path / "run" / "model.keras").exists()


def test_data_check_prints_a_finetuning_recipe_that_parses(tmp_path, capsys):
    """`retinanet data check` shows how to fine-tune from torchvision's COCO model: both printed commands parse
    with retinanet's own parser into the recipe's options, and the classes COCO knows are named."""
    import shlex

    from keras_retinanet.cli.retinanet import build_parser, main
    from keras_retinanet.cli.train import resolve_config
    from keras_retinanet.data.synthetic import make_synthetic_coco

    spec = make_synthetic_coco(tmp_path / "my data", num_images=4, image_size=96, seed=1)
    annotations = spec.split(":")[1]
    content = json.loads(Path(annotations).read_text())
    for category, name in zip(content["categories"], ["circle", "Stop_Sign", "person"]):
        category["name"] = name
    Path(annotations).write_text(json.dumps(content))
    report = tmp_path / "check.json"
    assert main(["data", "check", spec, "--no-optimize", "--image-size", "256", "--json", str(report)]) == 0

    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("fine-tuning from a COCO model"))
    convert_line, train_line = lines[start + 1].strip(), lines[start + 2].strip()
    assert convert_line.startswith("retinanet convert torchvision ")
    assert train_line.startswith("retinanet train ")
    build_parser().parse_args(shlex.split(convert_line)[1:])
    config = resolve_config(build_parser().parse_args(shlex.split(train_line)[1:]))
    assert config.init == "coco_r50.keras" and config.data == spec  # a path with a space survives quoting
    assert config.batchnorm_frozen and config.learning_rate == 0.001 and config.epochs == 12
    assert config.model.image_size == (256, 256) and config.batch_size == 8
    assert config.warmup_steps == 1  # one epoch of 4 images at batch 8: the default 500 would outlast the run
    # class order: the category ids' (circle, Stop_Sign, person); two of them are COCO's
    assert (
        "classes COCO knows, starting from its weights: 2 (Stop_Sign <- stop sign, person)"
        in lines[start + 3]
    )
    saved = json.loads(report.read_text())["finetuning"]
    assert saved["coco_matches"] == {"Stop_Sign": "stop sign", "person": "person"}
    assert saved["train"] == shlex.split(train_line)[1:]


def test_pretrained_doc_commands_parse():
    """Every `retinanet ...` line of docs/pretrained.md's shell blocks parses with retinanet's own parser."""
    import re
    import shlex

    from retinanet_testing import REPO

    from keras_retinanet.cli.retinanet import build_parser

    text = (REPO / "docs" / "pretrained.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [
        line.strip()
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip().startswith("retinanet ")
    ]
    assert len(lines) >= 6 and any(line.startswith("retinanet train --init") for line in lines)
    for line in lines:
        try:
            build_parser().parse_args(shlex.split(line, comments=True)[1:])
        except SystemExit as error:
            pytest.fail(f"docs/pretrained.md command does not parse ({error}): {line}")
