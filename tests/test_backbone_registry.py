"""keras_retinanet/backbones/registry.py's public registration, as docs/adding-a-backbone.md describes it: a
backbone family registered from outside the package builds, trains and reloads by name."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_retinanet import RetinaNet, register_backbone
from keras_retinanet.backbones.registry import available_backbones, build_backbone
from keras_retinanet.detectors import load_retinanet


def toy_convnet(include_top=False, weights=None, input_shape=(None, None, 3), width=8) -> keras.Model:
    """Five stride-2 convs (strides 2 to 32), with the ``keras.applications`` constructor's arguments."""
    if weights is not None:
        raise ValueError("toy_convnet has no pretrained weights")
    x = inputs = keras.Input(input_shape)
    for i in range(5):
        x = keras.layers.Conv2D(width * 2 ** min(i, 2), 3, strides=2, padding="same", name=f"toy_{i}")(x)
        x = keras.layers.ReLU(name=f"toy_relu_{i}")(x)
    return keras.Model(inputs, x, name="toy_convnet")


def test_registered_backbone_gives_c3_c4_c5_and_built_ins_are_kept():
    register_backbone("toy_convnet", toy_convnet, normalization="tf")
    assert "toy_convnet" in available_backbones()
    backbone = build_backbone("toy_convnet", weights=None, width=4)
    c3, c4, c5 = backbone(np.zeros((1, 64, 96, 3), np.float32))
    assert (c3.shape[1:], c4.shape[1:], c5.shape[1:]) == ((8, 12, 16), (4, 6, 16), (2, 3, 16))
    assert (
        backbone.get_layer("image_normalization").mode == "tf"
    )  # what the registration said its weights expect
    with pytest.raises(ValueError, match="'resnet50' is built in"):
        register_backbone("resnet50", toy_convnet)


def test_registered_backbone_trains_and_reloads_by_name(tmp_path):
    register_backbone("toy_convnet", toy_convnet, feature_layers=("toy_relu_2", "toy_relu_3", "toy_relu_4"))
    model = RetinaNet(2, backbone="toy_convnet", backbone_weights=None, fpn_channels=16, head_depth=1)
    encoder = model.label_encoder()
    targets = encoder.encode((64, 64), np.array([[8, 8, 40, 40]], np.float32), np.array([1], np.int32))
    batch = {k: np.asarray(v)[None] for k, v in targets.items()}
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    before = model.get_layer("toy_convnet").get_weights()[0].copy()
    model.train_on_batch(images, batch)  # the toy backbone's weights train with the rest
    assert not np.allclose(model.get_layer("toy_convnet").get_weights()[0], before)
    model.save(tmp_path / "toy.keras")
    loaded = load_retinanet(tmp_path / "toy.keras")
    assert loaded.backbone_name == "toy_convnet"
    for key, value in model(images).items():
        np.testing.assert_allclose(loaded(images)[key], value, atol=1e-5)
