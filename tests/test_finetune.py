"""Fine-tuning from a trained RetinaNet: what is kept, what is mapped by class name, what starts anew."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from retinanet_testing import tiny_retinanet

from keras_retinanet.finetune import finetune_model, format_report, match_class_names, transfer_weights

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
    assert model.class_names == NEW and model.num_classes == 4 and model.image_size == 320
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
    from keras_retinanet.losses import BoxRegressionLoss, FocalLoss

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
    with pytest.raises(FileNotFoundError, match="--init model"):
        finetune_model("missing.keras", ["dog"])
