"""Safe resume: atomic run files, the training states a rerun picks, the NaN stop, guarded run folders."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.train_runs import committed_epochs, run_train, train_command

from keras_retinanet import atomic
from keras_retinanet.atomic import FolderInUseError
from keras_retinanet.data.synthetic import make_synthetic_coco
from keras_retinanet.training import (
    BestCheckpoint,
    LastCheckpoint,
    MetricsCSVLogger,
    RunFolderError,
    StopOnNaN,
    TrainConfig,
    TrainingBackup,
    run_folder,
    train,
)
from keras_retinanet.training.run_folder import parse_allow_changes, plan_run

# ----------------------------------------------------------------------------------------------------------
# Atomic files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic.replacing(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]
    atomic.write_text(target, "new\n")
    assert target.read_text() == "new\n" and list(tmp_path.iterdir()) == [target]


def test_temporary_names_keep_the_suffixes_keras_checks(tmp_path):
    partial = atomic.partial_path(tmp_path / "epoch-0002.weights.h5")
    assert partial.parent == tmp_path and partial.name.startswith(".epoch-0002.partial-")
    assert partial.name.endswith(".weights.h5")
    assert atomic.partial_path(tmp_path / "last.keras").name.endswith(".keras")


# ----------------------------------------------------------------------------------------------------------
# Run folders (no TensorFlow needed)

SMALL = dict(backbone="mobilenet_v2", weights=None, fpn_channels=16, head_depth=1, image_size=64)


def _config(output: Path, **values) -> TrainConfig:
    return TrainConfig(output=str(output), data="coco:a.json:images", epochs=3).update({**SMALL, **values})


def _fake_run(output: Path, config: TrainConfig, epochs_done: int = 1, finished: bool = False) -> None:
    """A run folder as ``train`` leaves it, with dummy weights (plan_run never loads them)."""
    output.mkdir(parents=True)
    (output / "config.yaml").write_text(config.to_yaml())
    (output / "labels.txt").write_text("circle\nsquare\n")
    for epoch in range(1, epochs_done + 1):
        weights, _ = run_folder.state_paths(output / "backup", epoch)
        weights.parent.mkdir(exist_ok=True)
        weights.write_bytes(b"weights %d" % epoch)
        run_folder.commit_state(output / "backup", epoch, config.epochs, [], {})
    if finished:
        (output / "model.keras").write_bytes(b"model")
        (output / "train_summary.json").write_text(json.dumps({"finished": True, "epochs_done": epochs_done}))


def _snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_configuration_resumes_from_the_newest_state(tmp_path):
    config = _config(tmp_path / "run")
    _fake_run(tmp_path / "run", config, epochs_done=2)
    plan = plan_run(config)
    assert not plan.fresh and not plan.finished and plan.changes == {}
    assert plan.state.epoch == 2 and plan.class_names == ["circle", "square"]
    # Options that only change what is shown may differ without asking.
    assert plan_run(config.update({"verbose": 0, "tensorboard": False})).changes == {}


def test_a_run_folder_of_an_earlier_version_keeps_its_class_names(tmp_path):
    """Earlier versions wrote class_names.txt (now labels.txt, the name beside exported files): still read."""
    config = _config(tmp_path / "run")
    _fake_run(tmp_path / "run", config, epochs_done=1)
    (tmp_path / "run" / "labels.txt").rename(tmp_path / "run" / "class_names.txt")
    assert plan_run(config).class_names == ["circle", "square"]


def test_a_different_configuration_is_refused_with_the_keys_and_the_way_on(tmp_path):
    output = tmp_path / "run"
    config = _config(output)
    _fake_run(output, config)
    before = _snapshot(output)
    with pytest.raises(RunFolderError) as error:
        plan_run(config.update({"learning_rate": 0.001, "epochs": 5}))
    message = str(error.value)
    assert "epochs 3 -> 5" in message and "learning_rate 0.01 -> 0.001" in message
    assert "--allow-changes epochs,learning_rate" in message and "new --output" in message
    # Allowing only one of them is not enough; allowing both continues and records the changes.
    with pytest.raises(RunFolderError, match="--allow-changes learning_rate;"):
        plan_run(config.update({"learning_rate": 0.001, "epochs": 5}), allow_changes="epochs")
    plan = plan_run(
        config.update({"learning_rate": 0.001, "epochs": 5}), allow_changes=["epochs", "learning-rate"]
    )
    assert plan.changes == {"epochs": (3, 5), "learning_rate": (0.01, 0.001)} and plan.state.epoch == 1
    assert plan_run(config.update({"eval_every": 2}), allow_changes="all").changes == {"eval_every": (1, 2)}
    assert _snapshot(output) == before


@pytest.mark.parametrize("key, value", [("fpn_channels", 32), ("anchor_sizes", [16, 32, 64, 128, 256]),
                                        ("optimizer", "adamw"), ("freeze_batchnorm", True)])  # fmt: skip
def test_the_model_and_the_optimiser_state_can_never_change(tmp_path, key, value):
    output = tmp_path / "run"
    config = _config(output, anchors="given")  # with auto, a run fits (and so may change) its anchor sizes
    _fake_run(output, config)
    with pytest.raises(RunFolderError, match=f"{key} .* cannot change in an existing run folder"):
        plan_run(config.update({key: value}), allow_changes="all")
    with pytest.raises(RunFolderError, match=f"--allow-changes: {key} can never change"):
        parse_allow_changes(key)


def test_allow_changes_names_are_checked():
    assert parse_allow_changes("epochs, learning-rate") == {"epochs", "learning_rate"}
    assert parse_allow_changes(["all"]) is None
    with pytest.raises(RunFolderError, match=r"learnig_rate \(did you mean learning_rate\?\)"):
        parse_allow_changes("learnig_rate")


def test_fewer_epochs_than_trained_are_refused(tmp_path):
    config = _config(tmp_path / "run", epochs=3)
    _fake_run(tmp_path / "run", config, epochs_done=3)
    with pytest.raises(RunFolderError, match="already trained 3 epochs; --epochs 2 is fewer"):
        plan_run(config.update({"epochs": 2}), allow_changes="epochs")


def test_a_finished_run_has_nothing_to_do_unless_it_is_made_longer(tmp_path):
    config = _config(tmp_path / "run", epochs=2)
    _fake_run(tmp_path / "run", config, epochs_done=2, finished=True)
    assert plan_run(config).finished
    longer = plan_run(config.update({"epochs": 4}), allow_changes="epochs")
    assert not longer.finished and longer.state.epoch == 2


def test_folders_with_nothing_to_continue_start_over(tmp_path):
    assert plan_run(_config(tmp_path / "new")).fresh
    # A config.yaml but no finished epoch (a NaN or a kill in epoch 1): any new configuration may start over.
    output = tmp_path / "run"
    _fake_run(output, _config(output), epochs_done=0)
    assert plan_run(_config(output, fpn_channels=64, learning_rate=0.001)).fresh


def test_folders_that_cannot_be_checked_are_refused(tmp_path):
    output = tmp_path / "run"
    (output / "checkpoints").mkdir(parents=True)
    (output / "checkpoints" / "last.keras").write_bytes(b"model")
    with pytest.raises(RunFolderError, match="no config.yaml"):
        plan_run(_config(output))
    (output / "config.yaml").write_text("epochs: [")
    with pytest.raises(RunFolderError, match="config.yaml cannot be read"):
        plan_run(_config(output))
    # A model but no state to continue from (backup/ deleted) and not finished.
    config = _config(tmp_path / "other")
    _fake_run(tmp_path / "other", config, epochs_done=0)
    (tmp_path / "other" / "model.keras").write_bytes(b"model")
    with pytest.raises(RunFolderError, match="no training state to continue from"):
        plan_run(config)


@pytest.mark.parametrize("value", ["false", "true"])
def test_a_config_yaml_with_the_removed_subpixel_shift(tmp_path, value):
    """Off, as 0.3's recipes wrote it, the run resumes; on, it cannot be reproduced: one line naming the file."""
    output = tmp_path / "run"
    config = _config(output)
    _fake_run(output, config, epochs_done=2)
    written = output / "config.yaml"
    written.write_text(written.read_text().replace("cache:", f"subpixel_shift: {value}\ncache:", 1))
    if value == "false":
        plan = plan_run(config)
        assert plan.changes == {} and plan.state.epoch == 2 and plan.previous == config
        return
    with pytest.raises(ValueError) as error:
        TrainConfig.from_yaml(written)
    for raised in (error.value, pytest.raises(RunFolderError, plan_run, config).value):
        message = str(raised)
        assert "\n" not in message and message.count(str(written)) == 1, message
        assert "subpixel_shift was removed in 0.4" in message and "retrain" in message and "0.3" in message


def test_other_classes_are_refused(tmp_path):
    config = _config(tmp_path / "run")
    _fake_run(tmp_path / "run", config)
    plan = plan_run(config)
    plan.check_class_names(["circle", "square"])
    with pytest.raises(RunFolderError, match=r"trained on the classes \['circle', 'square'\]"):
        plan.check_class_names(["circle", "triangle"])


def test_a_second_training_cannot_use_a_locked_folder(tmp_path):
    held = run_folder.locked(tmp_path / "run")
    held.__enter__()
    try:
        with (
            pytest.raises(FolderInUseError, match="in use by another training"),
            run_folder.locked(tmp_path / "run"),
        ):
            pass
    finally:
        held.__exit__(None, None, None)
    with run_folder.locked(tmp_path / "run"):  # released by the first
        pass


# ----------------------------------------------------------------------------------------------------------
# Training states, with a small Keras model


def _small_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    return model


def _data(batches: list[np.ndarray], targets: list[float] | None = None) -> tf.data.Dataset:
    targets = [1.0] * len(batches) if targets is None else targets
    return tf.data.Dataset.from_tensor_slices(
        (np.stack(batches), np.stack([np.full((2, 1), t, "float32") for t in targets]))
    ).repeat()


_GOOD = [np.full((2, 4), v, "float32") for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)]


class _Weights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch + 1] = [np.array(w) for w in self.model.get_weights()]


def _fit(model, epochs, callbacks, data=None):
    return model.fit(data or _data(_GOOD), epochs=epochs, steps_per_epoch=2, callbacks=callbacks, verbose=0)


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


class _Start(keras.callbacks.Callback):
    """The weights when training starts (after a :class:`TrainingBackup` placed before it restored them)."""

    def on_train_begin(self, logs=None):
        self.weights = [np.array(w) for w in self.model.get_weights()]


def test_resume_picks_the_newest_intact_state_and_skips_a_damaged_one(tmp_path, capsys):
    backup = tmp_path / "backup"
    weights = _Weights()
    _fit(_small_model(), 3, [weights, TrainingBackup(backup)])
    assert committed_epochs(tmp_path) == [2, 3]  # the two newest are kept
    # The issue's damage: a 0-byte weights file (Keras' in-place write, killed).
    run_folder.state_paths(backup, 3)[0].write_bytes(b"")

    model = _small_model(seed=1)
    restorer, start = TrainingBackup(backup), _Start()
    history = _fit(model, 4, [restorer, start])
    assert restorer.restored.epoch == 2
    assert "skipping the training state" in capsys.readouterr().err
    assert _same(start.weights, weights.epochs[2])  # exactly epoch 2's weights, not the new model's
    assert history.epoch == [2, 3]  # epochs 3 and 4, 0-based
    # And epoch 2's optimiser state: 2 more epochs x 2 steps after 2 x 2.
    assert int(model.optimizer.iterations.numpy()) == 8


def test_no_intact_state_is_an_error_not_a_silent_restart(tmp_path):
    backup = tmp_path / "backup"
    _fit(_small_model(), 2, [TrainingBackup(backup)])
    run_folder.state_paths(backup, 2)[0].write_bytes(b"")
    data = bytearray(run_folder.state_paths(backup, 1)[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    run_folder.state_paths(backup, 1)[0].write_bytes(bytes(data))
    with pytest.raises(RunFolderError, match=r"no intact training state .*empty \(0 bytes\).*SHA-256"):
        _fit(_small_model(), 3, [TrainingBackup(backup)])


def test_the_legacy_keras_backup_is_read_and_its_empty_file_reported(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    source = _small_model()
    _fit(source, 1, [])
    source.save_weights(backup / "latest.weights.h5")
    (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    model = _small_model(seed=1)
    restorer = TrainingBackup(backup)
    _fit(model, 2, [restorer])
    assert restorer.restored.epoch == 1 and restorer.restored.legacy
    assert committed_epochs(tmp_path) == [2] and not (backup / "latest.weights.h5").exists()

    (backup / "epoch-0002.json").unlink()
    (backup / "latest.weights.h5").write_bytes(b"")
    (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    with pytest.raises(RunFolderError, match=r"latest.weights.h5 \(epoch 1\): its weights file is empty"):
        _fit(_small_model(), 2, [TrainingBackup(backup)])


def test_a_diverged_epoch_is_never_saved(tmp_path):
    """The loss is NaN in epoch 2: the checkpoint and the newest state stay those of epoch 1."""
    data = _data(_GOOD[:4], targets=[1.0, 1.0, np.nan, np.nan])
    guard = StopOnNaN(verbose=False)
    weights = _Weights()
    backup = TrainingBackup(tmp_path / "backup", guard=guard)
    last = LastCheckpoint(tmp_path / "last.keras", guard=guard)
    _fit(_small_model(), 3, [guard, weights, last, backup], data=data)
    assert guard.stopped and guard.epoch == 2 and guard.step == 1 and "loss became nan" in guard.message
    assert committed_epochs(tmp_path) == [1] and backup.saved.epoch == 1
    assert backup.unsaved["epoch"] == 1 and math.isnan(backup.unsaved["loss"])
    assert not all(np.isfinite(w).all() for w in weights.epochs[2])
    saved = keras.saving.load_model(tmp_path / "last.keras")
    assert _same(saved.get_weights(), weights.epochs[1])


class _Poison(keras.callbacks.Callback):
    """Makes one weight NaN at the end of epoch 2, after a finite loss."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            kernel = self.model.weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_non_finite_weights_behind_a_finite_loss_stop_training_too(tmp_path):
    guard = StopOnNaN(verbose=False)
    backup = TrainingBackup(tmp_path / "backup", guard=guard)
    history = _fit(_small_model(), 4, [_Poison(), guard, backup])
    assert all(math.isfinite(loss) for loss in history.history["loss"])
    assert guard.stopped and "weights became non-finite at the end of epoch 2" in guard.message
    assert committed_epochs(tmp_path) == [1]


class _FakeAP(keras.callbacks.Callback):
    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_AP"] = self.values[epoch]


def test_best_checkpoint_and_early_stopping_state_survive_a_resume(tmp_path):
    def callbacks(values):
        best = BestCheckpoint(tmp_path / "best.keras")
        stop = keras.callbacks.EarlyStopping(monitor="val_AP", mode="max", patience=2)
        stateful = {"best_checkpoint": best, "early_stopping": stop}
        return (
            best,
            stop,
            [_FakeAP(values), best, stop, TrainingBackup(tmp_path / "backup", stateful=stateful)],
        )

    best, stop, first = callbacks([0.5, 0.3, 0.9, 0.9, 0.9])
    _fit(_small_model(), 2, first)
    assert best.best == 0.5 and stop.wait == 1
    saved = (tmp_path / "best.keras").stat().st_mtime_ns
    # Epoch 3 scores 0.4: below the restored best (0.5), so best.keras stays; patience runs out (wait 2).
    best, stop, second = callbacks([0.5, 0.3, 0.4, 0.9, 0.9])
    history = _fit(_small_model(seed=1), 5, second)
    assert best.best == 0.5 and (tmp_path / "best.keras").stat().st_mtime_ns == saved
    assert history.epoch == [2] and stop.stopped_epoch == 2


def test_csv_log_continues_without_duplicate_rows(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n0,1.0\n1,0.5\n2,0.25\n")  # epoch 2's row was logged, its state not saved
    logger = MetricsCSVLogger(path, extra_keys=["val_AP"], append=True)
    logger.on_train_begin()
    logger.on_epoch_begin(2)
    logger.on_epoch_end(2, {"loss": 0.3, "learning_rate": np.float32(0.01)})
    logger.on_epoch_begin(3)
    logger.on_epoch_end(3, {"loss": 0.2, "val_AP": 0.7})
    with open(path) as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["epoch", "learning_rate", "loss", "val_AP"]
    assert [(r["epoch"], r["loss"], r["val_AP"]) for r in rows] == [
        ("0", "1.0", ""), ("1", "0.5", ""), ("2", "0.3", ""), ("3", "0.2", "0.7")
    ]  # fmt: skip
    assert float(rows[2]["learning_rate"]) == pytest.approx(0.01)


def test_a_failed_start_writes_nothing(tmp_path):
    """The data loads but the model cannot be built: no run folder, no config.yaml or labels.txt."""
    spec = make_synthetic_coco(tmp_path / "data", num_images=2, image_size=64)
    output = tmp_path / "run"
    with pytest.raises(ValueError, match="unknown backbone"):
        train(TrainConfig(data=spec, output=str(output), verbose=0).update({"backbone": "no_such_backbone"}))
    assert not output.exists()


# ----------------------------------------------------------------------------------------------------------
# The command, end to end


@pytest.fixture(scope="module")
def synthetic_spec(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_coco(folder, num_images=8, image_size=64, min_size=8, max_objects=3)


def test_nan_stop_keeps_the_last_finite_state_and_changed_settings_are_guarded(synthetic_spec, tmp_path):
    output = tmp_path / "run"

    # The paper's heads: at lr 1e8 their loss turns NaN in the next epoch. GroupNorm heads (the default recipe)
    # keep it finite for an epoch of huge weights, the case tests/test_nan_recovery.py covers.
    def command(epochs, *extra):
        return train_command(synthetic_spec, output, epochs, "--recipe", "paper", *extra)

    first = run_train(command(1))
    assert first.returncode == 0, first.stdout + first.stderr
    finite_state = (output / "backup" / "epoch-0001.weights.h5").read_bytes()
    before = _snapshot(output)

    # Refused before anything is touched: which keys differ, old -> new, and how to go on.
    other_rate = run_train(command(1, "--learning-rate", "0.02"))
    assert other_rate.returncode == 2
    assert (
        "learning_rate 0.01 -> 0.02" in other_rate.stderr
        and "--allow-changes learning_rate" in other_rate.stderr
    )
    other_model = run_train(command(1, "--fpn-channels", "32", "--allow-changes", "all"))
    assert other_model.returncode == 2
    assert "fpn_channels 16 -> 32" in other_model.stderr and "cannot change" in other_model.stderr
    assert _snapshot(output) == before

    # Longer, at a learning rate that diverges: exit 3, and nothing of the diverged epoch is kept.
    diverged = run_train(command(3, "--learning-rate", "1e8", "--allow-changes", "epochs,learning_rate"))
    assert diverged.returncode == 3, diverged.stdout + diverged.stderr
    assert "resuming from epoch 1 of 3" in diverged.stdout
    assert "keeps the last finite state, epoch 1 of 3" in diverged.stderr
    assert "--allow-changes learning_rate" in diverged.stderr
    assert committed_epochs(output) == [1]
    assert (output / "backup" / "epoch-0001.weights.h5").read_bytes() == finite_state
    assert (output / "checkpoints" / "last.keras").read_bytes() == before[
        output / "checkpoints" / "last.keras"
    ][1]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["finished"] is False and "keeps the last finite state" in summary["stopped_on_nan"]

    # As the message says: a lower learning rate continues from epoch 1 and finishes.
    resumed = run_train(command(3, "--learning-rate", "0.01", "--allow-changes", "learning_rate"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from epoch 1 of 3" in resumed.stdout
    assert "Epoch 1/3" not in resumed.stdout and "Epoch 3/3" in resumed.stdout
    with open(output / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert all(math.isfinite(float(row["loss"])) for row in rows)
    assert all(float(row["learning_rate"]) <= 0.01 * (1 + 1e-6) for row in rows)  # the new rate, not 1e8
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["finished"] is True and summary["changed"] == {"learning_rate": [1e8, 0.01]}
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_done"] == 3
