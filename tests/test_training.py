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
import yaml
from retinanet_testing import tiny_retinanet

from keras_retinanet.cli import build_parser
from keras_retinanet.commands.train import resolve_config
from keras_retinanet.schedules import WarmupSchedule
from keras_retinanet.training import StopOnNaN, TrainConfig, build_optimizer

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


def test_config_precedence_yaml_flags_set(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        yaml.safe_dump({"image_size": 384, "batch_size": 4, "anchor_sizes": [16, 32, 64, 128, 256]})
    )
    args = build_parser().parse_args(
        [
            "train",
            "--config",
            str(config_file),
            "--batch-size",
            "2",
            "--set",
            "learning_rate=0.02",
            "--set",
            "mixed_precision=true",
        ]
    )
    config = resolve_config(args)
    assert (config.image_size, config.batch_size, config.learning_rate) == (384, 2, 0.02)
    assert config.mixed_precision is True and config.anchor_sizes == (16, 32, 64, 128, 256)
    with pytest.raises(ValueError, match="unknown training option.*imagesize"):
        resolve_config(build_parser().parse_args(["train", "--set", "imagesize=3"]))


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


def _train_command(root, output, epochs):
    return [
        sys.executable,
        "-m",
        "keras_retinanet",
        "train",
        "--data",
        f"voc:{root}:train",
        "--output",
        str(output),
        "--backbone",
        "mobilenet_v2",
        "--backbone-kwargs",
        '{"alpha": 0.35}',
        "--fpn-channels",
        "16",
        "--head-depth",
        "1",
        "--image-size",
        "128",
        "--batch-size",
        "2",
        "--epochs",
        str(epochs),
        "--steps-per-epoch",
        "2",
        "--warmup-steps",
        "0",
        "--precise-bn-batches",
        "0",
        "--no-tensorboard",
        "--verbose",
        "2",
    ]


def test_resume_after_kill_continues_from_the_last_epoch(bccd_subset, tmp_path):
    root = bccd_subset([f"BloodImage_0000{i}" for i in range(4)])
    output = tmp_path / "run"
    command = _train_command(root, output, epochs=3)
    metadata = output / "backup" / "training_metadata.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        # Kill -9 as soon as the first epoch has been backed up.
        for _ in range(600):
            if metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", -1) >= 0:
                break
            if process.poll() is not None:
                pytest.fail(f"training ended before it could be killed:\n{process.stdout.read()}")
            subprocess.run(["sleep", "0.2"])
        process.kill()
    finally:
        process.wait()
    assert not (output / "model.keras").exists()

    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Epoch 1/3" not in resumed.stdout and "Epoch 3/3" in resumed.stdout
    model = keras.saving.load_model(output / "model.keras")
    # The optimiser's step counter came back from the backup: 3 epochs x 2 steps in total.
    assert int(model.optimizer.iterations.numpy()) == 6


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


def test_multi_worker_two_processes_end_with_identical_weights(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(TESTS / "helpers" / "multi_worker.py"),
                    str(TESTS),
                    str(tmp_path / f"w{index}.npz"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    first, second = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    weights = [k for k in first.files if k.startswith("arr_")]
    assert len(weights) > 10
    for key in weights:
        np.testing.assert_array_equal(first[key], second[key])
    np.testing.assert_allclose(first["loss"], second["loss"])
