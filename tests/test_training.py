import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from retinanet_testing import tiny_retinanet

from keras_retinanet.backbones.batchnorm import batchnorm_layers
from keras_retinanet.training import (
    PredictionImages,
    StopOnNaN,
    TrainConfig,
    UnfreezeBackbone,
    build_optimizer,
)
from keras_retinanet.training.schedules import WarmupSchedule
from keras_retinanet.visualize import class_colour

TESTS = Path(__file__).parent


def test_warmup_then_step_decay_by_hand():
    schedule = WarmupSchedule(0.01, total_steps=90, decay="step", warmup_steps=10, warmup_factor=0.001)
    rates = {step: float(schedule(step)) for step in (0, 5, 10, 59, 60, 79, 80, 89)}
    np.testing.assert_allclose(rates[0], 0.01 * 0.001, rtol=1e-5)
    np.testing.assert_allclose(rates[5], 0.01 * (0.001 * 0.5 + 0.5), rtol=1e-5)
    np.testing.assert_allclose([rates[10], rates[59]], [0.01, 0.01], rtol=1e-5)
    np.testing.assert_allclose([rates[60], rates[79]], [0.001, 0.001], rtol=1e-5)
    np.testing.assert_allclose([rates[80], rates[89]], [0.0001, 0.0001], rtol=1e-5)


def test_cosine_after_warmup():
    schedule = WarmupSchedule(0.01, total_steps=210, decay="cosine", warmup_steps=10)
    np.testing.assert_allclose(float(schedule(10)), 0.01, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(110)), 0.005, rtol=1e-5)  # halfway: cos(pi/2)
    np.testing.assert_allclose(float(schedule(210)), 0.0, atol=1e-9)


def test_weight_decay_skips_norms_and_biases():
    model = tiny_retinanet(use_group_norm=True)
    optimizer = build_optimizer(TrainConfig(weight_decay=1e-4), total_steps=10)
    optimizer.build(model.trainable_variables)
    decayed = {v.name for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    skipped = {v.name for v in model.trainable_variables if not optimizer._use_weight_decay(v)}
    assert decayed == {"kernel"}
    assert skipped == {"bias", "gamma", "beta"}


def test_nan_loss_stops_training_with_a_message():
    model = tiny_retinanet()
    model.compile(optimizer="sgd")
    images = np.zeros((2, 64, 64, 3), "float32")
    targets = model.label_encoder().encode(
        (64, 64), np.zeros((2, 1, 4), "float32"), np.full((2, 1), -1, "int32")
    )
    targets = {k: np.asarray(v).copy() for k, v in targets.items()}
    # A corrupt target on a positive anchor makes the box loss NaN at the first step.
    targets["classification"][:, 0] = 0
    targets["box_regression"][:, 0] = [np.nan, 0.0, 0.0, 0.0, 0.0]
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat(5)
    guard = StopOnNaN()
    history = model.fit(dataset, epochs=3, callbacks=[guard], verbose=0)
    assert len(history.epoch) == 1
    assert (
        guard.message is not None and "epoch 1, step 1" in guard.message and "learning rate" in guard.message
    )


# Kill-and-resume, the NaN stop's state and guarded run folders: tests/test_kill.py and tests/test_resume.py.


@pytest.mark.slow  # ~2 min; the multi-worker test below covers the same replica split of the loss (make test-all)
def test_mirrored_two_cpus_matches_one_device():
    result = subprocess.run(
        [sys.executable, str(TESTS / "helpers" / "distributed_step.py"), str(TESTS)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["replicas"] == 2
    np.testing.assert_allclose(values["mirrored_loss"], values["single_loss"], rtol=1e-5)
    # The step moved the weights, and both strategies moved them the same way: same gradients.
    assert values["largest_update"] > 1e-4
    assert values["largest_weight_difference"] < 1e-5 * max(1.0, values["largest_update"] * 100)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_multi_worker_two_processes_train_like_one_device_on_the_global_batch(tmp_path, monkeypatch):
    """Two workers (all-reduce over gRPC) must end where one device ends after the same global batches, and
    that place must be away from the start with a lower loss: identical weights alone would also hold if
    neither worker had trained."""
    import runpy

    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    helper = TESTS / "helpers" / "multi_worker.py"
    processes = []
    for index in (0, 1):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        arguments = [sys.executable, str(helper), str(TESTS), str(tmp_path / f"w{index}.npz")]
        processes.append(
            subprocess.Popen(arguments, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    # The single-device reference runs here meanwhile (no third TensorFlow process to start).
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(sys, "argv", [str(helper), str(TESTS), str(tmp_path / "single.npz"), "single"])
    runpy.run_path(str(helper), run_name="__main__")
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    first, second, single = (np.load(tmp_path / name) for name in ("w0.npz", "w1.npz", "single.npz"))
    count = len([k for k in single.files if k.startswith("final_")])
    assert count > 10

    def weights(run, kind):
        return [run[f"{kind}_{i}"] for i in range(count)]

    # The same start everywhere, or the comparisons below would mean nothing.
    for a, b in zip(weights(first, "initial"), weights(single, "initial")):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(weights(first, "final"), weights(second, "final")):
        np.testing.assert_array_equal(a, b)
    moved = max(
        float(np.abs(f - i).max()) for f, i in zip(weights(single, "final"), weights(single, "initial"))
    )
    difference = max(
        float(np.abs(m - s).max()) for m, s in zip(weights(first, "final"), weights(single, "final"))
    )
    assert moved > 1e-3
    assert difference < 1e-3 * moved, (difference, moved)
    np.testing.assert_allclose(first["loss"], single["loss"], rtol=1e-4)
    np.testing.assert_allclose(first["loss"], second["loss"])
    # Steps 0, 2 and 4 see the same global batch (images 0-3): its loss fell as training went on.
    assert first["loss"][4] < 0.95 * first["loss"][0], first["loss"]


def _tiny_fit_data(model, size: int = 64, count: int = 2):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (count, size, size, 3)).astype("float32")
    boxes = np.tile(np.array([[[8, 8, 40, 40], [20, 16, 60, 56]]], "float32"), (count, 1, 1))
    targets = model.label_encoder().encode((size, size), boxes, np.tile([[0, 1]], (count, 1)).astype("int32"))
    return tf.data.Dataset.from_tensors((images, targets)).repeat()


def test_fit_traces_the_train_step_once(monkeypatch):
    # Keras creates its per-loss trackers inside the first trace when no strategy is set, and TensorFlow traces
    # a step that creates variables twice; the model builds them from the data's spec first.
    from keras_retinanet.model.retinanet import RetinaNet

    traces = []
    original = RetinaNet.train_step
    monkeypatch.setattr(RetinaNet, "train_step", lambda self, data: traces.append(1) or original(self, data))
    model = tiny_retinanet()
    model.compile(optimizer="sgd")
    history = model.fit(_tiny_fit_data(model), epochs=2, steps_per_epoch=2, verbose=0)
    assert len(traces) == 1 and len(history.history["classification_loss"]) == 2


class _Snapshots(keras.callbacks.Callback):
    """Records, at the end of every epoch, the backbone's trainable flag and copies of the weights."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        backbone = self.model.backbone
        norms = batchnorm_layers(backbone)
        norm_ids = {id(w) for layer in norms for w in layer.weights}
        self.epochs.append(
            {
                "trainable": backbone.trainable,
                "norms_trainable": {layer.trainable for layer in norms},
                "backbone": [w.numpy().copy() for w in backbone.weights if id(w) not in norm_ids],
                "norms": [w.numpy().copy() for w in norms[0].weights + norms[-1].weights],
                "heads": [w.numpy().copy() for w in self.model.get_layer("classification_head").weights],
            }
        )


def _changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("keep_batchnorm_frozen", [True, False])
def test_unfreeze_backbone_freezes_for_n_epochs_then_trains_it(keep_batchnorm_frozen):
    keras.utils.set_random_seed(0)
    model = tiny_retinanet()
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    assert model.backbone.trainable
    snapshots = _Snapshots()
    unfreeze = UnfreezeBackbone(2, keep_batchnorm_frozen=keep_batchnorm_frozen)
    model.fit(_tiny_fit_data(model), epochs=4, steps_per_epoch=1, callbacks=[unfreeze, snapshots], verbose=0)
    epochs = snapshots.epochs
    # Epochs 0 and 1: the backbone is frozen (BatchNorm too) and its weights are exactly the initial ones,
    # while the heads train.
    for index in (0, 1):
        assert epochs[index]["trainable"] is False and epochs[index]["norms_trainable"] == {False}
    assert not _changed(epochs[0]["backbone"], epochs[1]["backbone"])
    assert len(epochs[0]["backbone"]) > 10
    assert _changed(epochs[0]["heads"], epochs[1]["heads"])
    # Epochs 2 and 3: the backbone is trainable and its weights move every step.
    for index in (2, 3):
        assert epochs[index]["trainable"] is True
    assert _changed(epochs[1]["backbone"], epochs[2]["backbone"])
    assert _changed(epochs[2]["backbone"], epochs[3]["backbone"])
    if keep_batchnorm_frozen:
        # BatchNorm stays in inference mode: scales, offsets and moving statistics never change.
        assert epochs[3]["norms_trainable"] == {False}
        assert not _changed(epochs[0]["norms"], epochs[3]["norms"])
    else:
        assert epochs[3]["norms_trainable"] == {True}
        assert not _changed(epochs[0]["norms"], epochs[1]["norms"])
        assert _changed(epochs[1]["norms"], epochs[3]["norms"])


class _FixedDetections:
    """Stands in for a model: ``detect`` returns the same padded detections every time."""

    def __init__(self, detections):
        self.detections = detections

    def detect(self, images):
        assert len(images) == len(self.detections["num_detections"])
        return self.detections


def _read_images(log_dir, tag="predictions"):
    """(step, decoded (N, H, W, 3) uint8 images) of every image summary ``tag`` in the event files."""
    found = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    assert value.metadata.plugin_data.plugin_name == "images"
                    encoded = tf.make_ndarray(value.tensor)  # [width, height, png, png, ...]
                    images = np.stack([tf.io.decode_png(png).numpy() for png in encoded[2:]])
                    assert (int(encoded[0]), int(encoded[1])) == (images.shape[2], images.shape[1])
                    found.append((event.step, images))
    return found


def test_prediction_images_draws_the_detections_into_tensorboard(tmp_path):
    raw = np.full((2, 96, 80, 3), 128.0, "float32")
    detections = {
        # Image 0: a box of class 1 at 0.9 (drawn) and one of class 0 at 0.1 (under the 0.3 threshold).
        # Image 1: nothing (padding rows only).
        "boxes": np.array([[[10, 40, 50, 70], [60, 5, 75, 30]], [[0, 0, 0, 0], [0, 0, 0, 0]]], "float32"),
        "scores": np.array([[0.9, 0.1], [0.0, 0.0]], "float32"),
        "classes": np.array([[1, 0], [-1, -1]], "int32"),
        "num_detections": np.array([2, 0], "int32"),
    }
    callback = PredictionImages(raw, tmp_path, class_names=["cat", "dog"])
    callback.set_model(_FixedDetections(detections))
    callback.on_epoch_end(3)
    callback.on_train_end()
    written = _read_images(tmp_path / "predictions")
    assert [step for step, _ in written] == [3]
    images = written[0][1]
    assert images.shape == (2, 96, 80, 3) and images.dtype == np.uint8
    drawn, empty = images[0].astype(int), images[1].astype(int)
    # The box's left edge (x = 10, below its label) is drawn in the class colour; the raw image is grey.
    np.testing.assert_array_equal(drawn[60, 10], class_colour(1))
    np.testing.assert_array_equal(drawn[70, 30], class_colour(1))  # bottom edge
    assert (drawn[42:69, 12:49] == 128).all()  # inside the box (its label is above it): untouched
    # The low-score box is not drawn, and an image without detections is the raw image.
    assert (drawn[:, 56:] == 128).all()
    assert (empty == 128).all()


def test_prediction_images_with_a_real_model(tmp_path):
    """``RetinaNet.detect`` output (tensors) goes through: a model that scores every anchor 0.99 gets boxes."""
    keras.utils.set_random_seed(0)
    model = tiny_retinanet(prior_probability=0.99)
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    callback = PredictionImages(images, tmp_path, class_names=["a", "b", "c"])
    callback.set_model(model)
    callback.on_epoch_end(0)
    callback.on_train_end()
    ((step, written),) = _read_images(tmp_path / "predictions")
    assert step == 0 and written.shape == (1, 64, 64, 3)
    assert (written[0] != images[0].astype(np.uint8)).any(axis=-1).mean() > 0.05


def test_xla_training_step_equals_the_uncompiled_one():
    """--jit-compile (the GPU path) compiles the whole step with XLA: the same loss and the same updated weights
    as the step TensorFlow runs op by op."""
    keras.utils.set_random_seed(0)
    reference = tiny_retinanet()
    reference.build((None, 64, 64, 3))
    images, targets = next(iter(_tiny_fit_data(reference)))
    results = []
    for jit in (False, True):
        model = tiny_retinanet()
        model.build((None, 64, 64, 3))
        model.set_weights(reference.get_weights())
        model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit)
        loss = model.train_on_batch(images, targets, return_dict=True)["loss"]
        results.append((float(loss), model.get_weights()))
    (loss, weights), (xla_loss, xla_weights) = results
    assert loss > 0 and xla_loss == pytest.approx(loss, rel=1e-4)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(weights, reference.get_weights(), strict=True))
    assert moved > 1e-4
    for a, b in zip(weights, xla_weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3 * moved)


def test_a_finite_but_diverged_loss_stops_training():
    guard = StopOnNaN(verbose=False)
    guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    guard.on_train_begin()
    guard.on_epoch_begin(1)
    guard.on_train_batch_end(0, {"loss": 1e5})  # large, but a run can come back from it
    assert not guard.stopped
    guard.on_train_batch_end(6, {"loss": 3e13})
    assert guard.stopped and guard.model.stop_training
    assert "the loss diverged to 3e+13 (above 1e+06) at epoch 2, step 7" in guard.message
