"""Training starts from ImageNet weights by default, through Keras' own cache, as ``keras.applications`` does.

The test session's Keras cache (``KERAS_HOME``, set by conftest) holds the shared ImageNet MobileNetV2 file under
Keras' own name, so ``weights="imagenet"`` runs Keras' real loading code with no download; every other ImageNet
file is missing from it, which is what a machine without network and without that file looks like.
"""

from __future__ import annotations

import socket
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from retinanet_testing import KERAS_MOBILENET_V2_FILE, SHARED_MOBILENET_V2, require_shared

from keras_retinanet import RetinaNet
from keras_retinanet.backbones.registry import BackboneWeightsError, build_backbone
from keras_retinanet.cli.retinanet import build_parser, main
from keras_retinanet.cli.train import resolve_config
from keras_retinanet.data.synthetic import make_synthetic_coco
from keras_retinanet.model.config import ModelConfig
from keras_retinanet.training import TrainConfig
from keras_retinanet.training.loop import build_schedule, describe_plan

SHARED_WEIGHTS = SHARED_MOBILENET_V2


def _first_conv_kernel(model: keras.Model) -> np.ndarray:
    """MobileNetV2's stem convolution kernel, (3, 3, 3, 32): the only kernel of that shape."""
    (kernel,) = [w for w in model.weights if tuple(w.shape) == (3, 3, 3, 32)]
    return np.asarray(kernel)


def _stem_kernel_in_file(path: Path) -> np.ndarray:
    """The same kernel read straight from the HDF5 file, without Keras."""
    found = []
    with h5py.File(path, "r") as weights_file:
        weights_file.visititems(
            lambda name, item: (
                found.append(np.asarray(item))
                if isinstance(item, h5py.Dataset) and item.shape == (3, 3, 3, 32)
                else None
            )
        )
    (kernel,) = found
    return kernel


@pytest.fixture(scope="module")
def imagenet_kernel() -> np.ndarray:
    require_shared()
    return _stem_kernel_in_file(SHARED_WEIGHTS)


def test_defaults_are_imagenet_everywhere():
    assert ModelConfig().weights == "imagenet"
    assert TrainConfig().model.weights == "imagenet"
    assert resolve_config(build_parser().parse_args(["train"])).model.weights == "imagenet"


def test_default_model_starts_from_keras_cached_imagenet_weights(imagenet_kernel):
    cached = Path(keras.src.backend.config.keras_home()) / "models" / KERAS_MOBILENET_V2_FILE
    assert cached.is_file()  # what conftest seeded; the network guard would have failed a download
    model = RetinaNet(2, backbone="mobilenet_v2", fpn_channels=16, head_depth=1)
    np.testing.assert_array_equal(_first_conv_kernel(model.backbone), imagenet_kernel)
    scratch = RetinaNet(2, backbone="mobilenet_v2", backbone_weights=None, fpn_channels=16, head_depth=1)
    assert not np.allclose(_first_conv_kernel(scratch.backbone), imagenet_kernel)


def test_weights_path_loads_that_file(imagenet_kernel):
    backbone = build_backbone("mobilenet_v2", weights=str(SHARED_WEIGHTS))
    np.testing.assert_array_equal(_first_conv_kernel(backbone), imagenet_kernel)


def _offline(monkeypatch) -> None:
    """What a machine without network does: every name lookup fails (instead of the test guard's assertion)."""

    def no_lookup(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)


def test_offline_without_cached_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    # MobileNetV2 x0.35's ImageNet file is not in the test session's Keras cache.
    _offline(monkeypatch)
    spec = make_synthetic_coco(tmp_path / "data", num_images=2, image_size=(64, 64), seed=0)
    output = tmp_path / "run"
    code = main(
        [
            "train", "--data", spec, "--output", str(output), "--backbone", "mobilenet_v2",
            "--backbone-kwargs", '{"alpha": 0.35}', "--image-size", "64", "--epochs", "1",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        "retinanet train: error: the ImageNet weights of backbone 'mobilenet_v2' are not in "
    )
    assert "--weights PATH" in err and "--weights none" in err and "Name or service not known" in err
    assert not output.exists()  # nothing written


def test_offline_error_in_python_names_the_way_out(monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(BackboneWeightsError, match=r"--weights none \(train from scratch\)"):
        RetinaNet(2, backbone="mobilenet_v2", backbone_kwargs={"alpha": 0.35})


@pytest.mark.parametrize(
    "flags, expected",
    [
        ([], "weights ImageNet (Keras' cache {home}/models), BatchNorm frozen"),
        (["--weights", "none"], "weights random (from scratch), BatchNorm trained"),
        (["--weights", str(SHARED_WEIGHTS)], f"weights {SHARED_WEIGHTS}, BatchNorm frozen"),
        (["--no-freeze-batchnorm"], "weights ImageNet (Keras' cache {home}/models), BatchNorm trained"),
        (["--weights", "none", "--freeze-batchnorm"], "weights random (from scratch), BatchNorm frozen"),
    ],
)
def test_plan_line_says_which_weights_and_batchnorm(flags, expected):
    config = resolve_config(build_parser().parse_args(["train", "--backbone", "mobilenet_v2", *flags]))
    (plan, *_) = describe_plan(config, 10, "as given", None)
    home = keras.src.backend.config.keras_home()
    assert f"backbone mobilenet_v2, {expected.format(home=home)};" in plan


def test_batchnorm_is_frozen_exactly_when_the_start_is_pretrained():
    assert TrainConfig().freeze_batchnorm is None and TrainConfig().batchnorm_frozen
    assert not TrainConfig(model={"weights": None}).batchnorm_frozen
    assert TrainConfig(model={"weights": "backbone.h5"}).batchnorm_frozen
    assert TrainConfig(init="coco.keras", model={"weights": None}).batchnorm_frozen
    assert not TrainConfig(freeze_batchnorm=False).batchnorm_frozen
    assert TrainConfig(freeze_batchnorm=True, model={"weights": None}).batchnorm_frozen
    assert TrainConfig().update({"freeze_batchnorm": "none"}).freeze_batchnorm is None


@pytest.mark.parametrize(
    "total, imagenet, scratch",
    # a tenth of the run; with a pretrained backbone at least 100 steps, never more than half the run
    [(60, 30, 6), (260, 100, 26), (370, 100, 37), (1110, 111, 111), (9000, 500, 500)],
)
def test_warmup_of_a_pretrained_backbone_is_at_least_100_steps(total, imagenet, scratch):
    assert build_schedule(TrainConfig(), total).warmup_steps == imagenet
    assert build_schedule(TrainConfig(model={"weights": None}), total).warmup_steps == scratch
    assert build_schedule(TrainConfig(init="coco.keras"), total).warmup_steps == scratch
    assert build_schedule(TrainConfig(warmup_steps=7), total).warmup_steps == 7


def test_plan_line_gives_the_warmup_and_the_weight_decay():
    (imagenet, *_) = describe_plan(TrainConfig(epochs=10), 37, "as given", None)
    (scratch, *_) = describe_plan(TrainConfig(epochs=10, model={"weights": None}), 37, "as given", None)
    assert "warm-up 100 steps (27%), cosine to 0 at step 370, weight decay 0.0001;" in imagenet
    assert "warm-up 37 steps (10%), cosine to 0 at step 370, weight decay 0.0001;" in scratch


@pytest.mark.parametrize("weights", ["imagenet", "none"])
def test_training_keeps_imagenet_batchnorm_statistics_and_learns_them_from_scratch(tmp_path, weights):
    require_shared()
    spec = make_synthetic_coco(tmp_path / "data", num_images=4, image_size=(64, 64), seed=0)
    output = tmp_path / "run"
    argv = [
        "train", "--data", spec, "--output", str(output), "--backbone", "mobilenet_v2", "--weights", weights,
        "--fpn-channels", "16", "--head-depth", "1", "--image-size", "64", "--epochs", "1", "--batch-size", "2",
        "--no-tensorboard", "--verbose", "0",
    ]  # fmt: skip
    assert main(argv) == 0
    trained = keras.saving.load_model(output / "model.keras", compile=False)
    start = build_backbone("mobilenet_v2", weights=None if weights == "none" else "imagenet")
    moving = [
        (a.path, np.asarray(a), np.asarray(b))
        for a, b in zip(start.weights, trained.backbone.weights)
        if "moving_" in a.path
    ]
    assert len(moving) == 2 * 52  # MobileNetV2's 52 BatchNorm layers
    if weights == "imagenet":
        for path, before, after in moving:
            np.testing.assert_array_equal(after, before, err_msg=path)
    else:  # trained (and recomputed after training): no layer keeps Keras' zeros and ones
        assert all(not np.array_equal(before, after) for _, before, after in moving)


def test_data_check_says_where_training_starts(tmp_path, capsys):
    import shlex

    spec = make_synthetic_coco(tmp_path / "my data", num_images=2, image_size=(64, 64), seed=0)
    assert main(["data", "check", spec, "--no-optimize", "--image-size", "256"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("training starts from"))
    assert "--weights imagenet" in lines[start] and keras.src.backend.config.keras_home() in lines[start]
    assert "BatchNorm frozen and a warm-up of at least 100 steps" in lines[start]
    config = resolve_config(build_parser().parse_args(shlex.split(lines[start + 1].strip())[1:]))
    assert config.data == spec and config.model.weights == "imagenet"  # a path with a space survives quoting
    assert "--weights none" in lines[start + 2]


def test_train_help_shows_the_imagenet_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    weights_help = help_text[help_text.index("--weights") :][:400]
    assert "imagenet" in weights_help and "none" in weights_help
    warmup_help = help_text[help_text.index("--warmup-steps") :][:300]
    assert "at least 100" in warmup_help, warmup_help
