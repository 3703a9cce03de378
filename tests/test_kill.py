"""Kill tests: ``retinanet train`` and the run-folder writers SIGKILLed at chosen points, then rerun.

The kills are real SIGKILLs of a subprocess, placed deterministically by the fault-injection hook of
``keras_retinanet.atomic`` (``KERAS_RETINANET_KILL_AT=FILE:written`` kills once the temporary file
is complete and before the rename; ``FILE:renamed`` right after the rename; ``@N`` the N-th time).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.train_runs import (
    KILLED,
    assert_valid_keras_file,
    committed_epochs,
    partial_files,
    run_train,
    train_command,
)
from helpers.train_runs import env as _env

from keras_retinanet.atomic import remove_partial_files
from keras_retinanet.data.synthetic import make_synthetic_coco

# ----------------------------------------------------------------------------------------------------------
# The writers alone


_WRITE_TEXT = """
import sys
from keras_retinanet import atomic
atomic.write_text(sys.argv[1], "new contents\\n")
"""


@pytest.mark.parametrize("point, expected", [("written", "old contents\n"), ("renamed", "new contents\n")])
def test_text_write_killed_before_or_after_the_rename(tmp_path, point, expected):
    target = tmp_path / "log.csv"
    target.write_text("old contents\n")
    result = subprocess.run(
        [sys.executable, "-c", _WRITE_TEXT, str(target)], env=_env(f"log.csv:{point}"), capture_output=True
    )
    assert result.returncode == KILLED, result.stderr
    # Before the rename the old file is whole; after it the new one is: never a mix, never a truncated file.
    assert target.read_text() == expected
    leftovers = partial_files(tmp_path)
    assert len(leftovers) == (1 if point == "written" else 0)
    if leftovers:
        assert leftovers[0].read_text() == "new contents\n"  # the complete temporary file, never renamed
        assert remove_partial_files(tmp_path) == leftovers and not partial_files(tmp_path)


_SAVE_MODEL = """
import sys
sys.path.insert(0, sys.argv[2])
from retinanet_testing import tiny_retinanet
from keras_retinanet import atomic
model = tiny_retinanet(num_classes=2, fpn_channels=8)
model.compile(optimizer="sgd")
atomic.save_model(model, sys.argv[1])
"""


def test_model_save_killed_before_the_rename_keeps_the_previous_checkpoint(tmp_path):
    """The issue's case: a kill while ``checkpoints/last.keras`` was written left a 3 KB file that was not a
    zip, and the previous good checkpoint was gone."""
    target = tmp_path / "last.keras"
    previous = b"PK\x05\x06" + bytes(18)  # an empty but valid zip stands for the previous checkpoint
    target.write_bytes(previous)
    result = subprocess.run(
        [sys.executable, "-c", _SAVE_MODEL, str(target), str(Path(__file__).parent)],
        env=_env("last.keras:written"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == KILLED, result.stderr[-3000:]
    assert target.read_bytes() == previous
    (partial,) = partial_files(tmp_path)
    # The new checkpoint was complete when the process died; only the rename was missing.
    assert zipfile.is_zipfile(partial) and "model.weights.h5" in zipfile.ZipFile(partial).namelist()


# ----------------------------------------------------------------------------------------------------------
# Whole training runs


@pytest.fixture(scope="module")
def synthetic_spec(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_coco(folder, num_images=8, image_size=64, min_size=8, max_objects=3)


def test_training_killed_at_each_write_resumes_where_the_last_complete_state_is(synthetic_spec, tmp_path):
    output = tmp_path / "run"
    command = train_command(synthetic_spec, output, epochs=3)

    # 1. Killed after epoch 2's weights were renamed into place, before the marker that commits them.
    first = run_train(command, kill_at="epoch-0002.json:written")
    assert first.returncode == KILLED, first.stdout + first.stderr
    assert committed_epochs(output) == [1]
    assert (output / "backup" / "epoch-0002.weights.h5").exists()  # complete, but not committed
    assert_valid_keras_file(output / "checkpoints" / "last.keras")
    assert not (output / "model.keras").exists()

    # 2. Resumes from epoch 1 (the orphan weights of epoch 2 are ignored); epochs 2 and 3 are committed, then
    #    killed before the final model's rename.
    second = run_train(command, kill_at="model.keras:written")
    assert second.returncode == KILLED, second.stdout + second.stderr
    assert "resuming from epoch 1 of 3" in second.stdout, second.stdout
    assert "Epoch 1/3" not in second.stdout and "Epoch 2/3" in second.stdout and "Epoch 3/3" in second.stdout
    assert committed_epochs(output) == [2, 3]
    assert not (output / "model.keras").exists()
    assert any(p.name.startswith(".model.partial-") for p in partial_files(output))

    # 3. Nothing left to train: writes the final model and finishes.
    last = run_train(command)
    assert last.returncode == 0, last.stdout + last.stderr
    assert "resuming from epoch 3 of 3" in last.stdout and "Epoch " not in last.stdout
    assert partial_files(output) == []  # every temporary file of the killed runs was removed
    assert_valid_keras_file(output / "model.keras")
    assert_valid_keras_file(output / "checkpoints" / "last.keras")
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["finished"] is True and summary["epochs_done"] == 3 and summary["resumed_from_epoch"] == 3
    assert len(summary["history"]["loss"]) == 3
    # One log row per epoch, none repeated by the reruns.
    rows = (output / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "0", "1", "2"]

    import keras

    # Registers RetinaNet, its losses and the learning-rate schedule of the saved optimiser.
    import keras_retinanet.model.losses  # noqa: F401
    import keras_retinanet.model.retinanet  # noqa: F401
    import keras_retinanet.training.schedules  # noqa: F401

    model = keras.saving.load_model(output / "model.keras")
    # The optimiser's step counter went through every resume: 3 epochs x 2 steps, no step run twice.
    assert int(model.optimizer.iterations.numpy()) == 6

    # 4. Once finished, the same command has nothing to do and rewrites nothing.
    before = {p: p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()}
    again = run_train(command)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "has already finished" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()} == before
