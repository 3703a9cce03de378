"""NaN recovery that recovers (issue 26, item 3).

Before: after ``--learning-rate 1e6`` the kept "last finite" state already held huge weights, so the rerun the
message advised diverged again (exit 3 both times), nothing let the user pick an older state, and a stale
``model.keras`` of an earlier finished run stayed beside ``"finished": false``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from helpers.train_runs import run_train, train_command

from keras_retinanet.data.synthetic import make_synthetic_coco
from keras_retinanet.training import RunFolderError, TrainingBackup, run_folder
from keras_retinanet.training.run_folder import TrainingState


def _state(epoch: int, losses: list[float], largest: float | None = None, start: float | None = None):
    history = tuple({"epoch": i, "loss": loss} for i, loss in enumerate(losses))
    return TrainingState(epoch, 3, 0.0, Path("w.h5"), Path("m.json"), history=history,
                         weights_max_abs=largest, initial_weights_max_abs=start)  # fmt: skip


def test_a_state_that_diverged_is_told_from_a_sane_one():
    assert _state(2, [1.2, 0.9], largest=9.0, start=4.6).divergence() is None
    assert _state(1, [float("nan")]).divergence() == "its loss was nan"
    assert _state(3, [2.0, 0.5, 2.43e13]).divergence() == (
        "its loss 2.43e+13 is over 200 (100 times the highest epoch loss before it, or than 1)"
    )
    assert _state(3, [2.0, 0.5, 150.0]).divergence() is None  # 75x the highest: a bad epoch, not a divergence
    # An epoch without positive anchors logs a tiny loss; an ordinary one after it is no jump.
    assert _state(3, [0.0017, 0.00175, 0.411]).divergence() is None
    assert _state(2, [0.0017, 101.0]).divergence() == (
        "its loss 101 is over 100 (100 times the highest epoch loss before it, or than 1)"
    )
    assert _state(1, [0.001], largest=3040.0, start=4.6).divergence() == (
        "its largest weight is 3.04e+03, 661 times the largest at the start"
    )
    assert _state(1, [0.001], largest=3040.0, start=None).divergence() is None  # older markers: unknown


def test_resume_from_an_epoch_without_a_kept_state_lists_the_kept_ones(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    for epoch, loss in ((2, 0.5), (3, 0.25)):
        weights, _ = run_folder.state_paths(backup, epoch)
        weights.write_bytes(b"w")
        run_folder.commit_state(
            backup, epoch, 3, [{"epoch": epoch - 1, "loss": loss}], {}, weights_max_abs=7.0
        )
    callback = TrainingBackup(backup, resume_from_epoch=1)
    with pytest.raises(RunFolderError) as caught:
        callback.restore()
    times = [s.time_text() for s in run_folder.list_states(backup)[0]]
    assert str(caught.value) == (
        f"--resume-from-epoch 1: {backup} keeps no state of that epoch (kept: epoch 3 (loss 0.25, largest "
        f"weight 7, saved {times[0]}); epoch 2 (loss 0.5, largest weight 7, saved {times[1]}); 0 starts from the "
        "beginning)"
    )
    assert TrainingBackup(backup, resume_from_epoch=0, verbose=0).restore() is None
    with pytest.raises(ValueError, match="--resume-from-epoch must be 0 or more, got -1"):
        TrainingBackup(backup, resume_from_epoch=-1)


@pytest.fixture(scope="module")
def synthetic_spec(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("synthetic")
    return make_synthetic_coco(folder, num_images=8, image_size=64, min_size=8, max_objects=3)


def _advised_flags(stderr: str) -> list[str]:
    match = re.search(r"Rerun with the same --output from [^:]+: (.*?); or use a new --output", stderr)
    assert match, stderr
    return match.group(1).split()


@pytest.mark.slow  # three tiny trainings in subprocesses: ~2 minutes here
def test_the_advised_rerun_after_a_divergence_finishes(synthetic_spec, tmp_path):
    output = tmp_path / "run"

    def command(*extra):
        return train_command(synthetic_spec, output, 3, "--warmup-steps", "1", *extra)

    # The case: the first epoch ends with a sane loss but weights blown up, the second with a huge
    # finite loss, the third in NaN.
    diverged = run_train(command("--learning-rate", "1e6"))
    assert diverged.returncode == 3, diverged.stdout + diverged.stderr
    states = run_folder.list_states(output / "backup")[0]
    assert states and states[0].divergence() is not None  # the last finite state has already diverged
    assert "has already diverged" in diverged.stderr and "Kept states: epoch" in diverged.stderr
    sane = [s.epoch for s in states if s.divergence() is None]
    flags = _advised_flags(diverged.stderr)
    assert flags == [
        "--learning-rate", "0.01", "--allow-changes", "learning_rate", "--resume-from-epoch", str(max(sane, default=0))
    ]  # fmt: skip

    # Before this change the advice continued from the newest state: it diverges again.
    again = run_train(command("--learning-rate", "0.01", "--allow-changes", "learning_rate"))
    assert again.returncode == 3, again.stdout + again.stderr

    # What the message advises finishes the run.
    resumed = run_train(command(*flags))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["finished"] is True and summary["epochs_done"] == 3
    with open(output / "log.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert all(math.isfinite(float(row["loss"])) and float(row["loss"]) < 10 for row in rows)
    kept = run_folder.list_states(output / "backup")[0]
    assert [s.divergence() for s in kept] == [None, None], [
        (s.describe(), s.initial_weights_max_abs) for s in kept
    ]


def test_training_on_after_a_finished_run_moves_its_model_aside(tmp_path, capsys):
    """So that no model.keras of an earlier run stays beside ``"finished": false`` after a NaN stop or a kill."""
    from keras_retinanet.training import TrainConfig
    from keras_retinanet.training.loop import _retire_final_model
    from keras_retinanet.training.run_folder import plan_run

    output = tmp_path / "run"
    config = TrainConfig(output=str(output), data="coco:a.json:images", epochs=2)
    output.mkdir()
    (output / "config.yaml").write_text(config.to_yaml())
    weights, _ = run_folder.state_paths(output / "backup", 2)
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    run_folder.commit_state(output / "backup", 2, 2, [], {})
    (output / "model.keras").write_bytes(b"the finished model")
    (output / "train_summary.json").write_text(json.dumps({"finished": True, "epochs_done": 2}))

    plan = plan_run(config.update({"epochs": 4}), allow_changes="epochs")
    _retire_final_model(plan)
    kept = output / "checkpoints" / "final-epoch-0002.keras"
    assert not (output / "model.keras").exists() and kept.read_bytes() == b"the finished model"
    assert capsys.readouterr().out == (
        f"{output / 'model.keras'} (the earlier run's final model, epoch 2) moved to {kept}; this run writes a "
        "new one\n"
    )
    # A kill now leaves a folder that continues (not "finished"), and no model.keras to mistake for this run's.
    assert not plan_run(config.update({"epochs": 4}), allow_changes="epochs").finished
