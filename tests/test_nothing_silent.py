"""Silent wrong results (issue 26, item 2): each case exited 0 before and did something wrong without a word.

- a JPEG cut at 30% of its bytes with the end marker (FF D9) appended decoded as a partly grey image; only
  libjpeg's warning, which names no file, said so;
- ``--allow-changes learning_rate`` on a finished run trained 0 epochs but rewrote ``config.yaml``.

(``train --epochs 0`` is refused in tests/test_checked_inputs.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from keras_retinanet.cli.retinanet import main
from keras_retinanet.data import DataError, load_dataset
from keras_retinanet.data.images import ImageError, inspect_image
from keras_retinanet.imaging import jpeg_data_warnings
from keras_retinanet.training import TrainConfig, run_folder, train
from keras_retinanet.training.run_folder import plan_run

BCCD_IDS = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"]
LIBJPEG = "Corrupt JPEG data: premature end of data segment"


def cut_jpeg(path: Path, fraction: float = 0.3) -> None:
    """Keeps the first ``fraction`` of the bytes and appends the end-of-image marker (a header check passes)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)] + b"\xff\xd9")


def test_a_cut_jpeg_with_its_end_marker_is_caught(bccd_subset):
    root = bccd_subset(BCCD_IDS[:1])
    image = root / "JPEGImages" / f"{BCCD_IDS[0]}.jpg"
    assert jpeg_data_warnings(image.read_bytes()) == []
    assert inspect_image(image).width == 640
    for fraction in (0.05, 0.3, 0.9):
        cut = image.with_name(f"cut-{fraction}.jpg")
        shutil.copy(image, cut)
        cut_jpeg(cut, fraction)
        assert cut.read_bytes().endswith(b"\xff\xd9")
        assert jpeg_data_warnings(cut.read_bytes()) == [LIBJPEG]
        for verify in ("header", "decode"):
            with pytest.raises(ImageError) as caught:
                inspect_image(cut, verify=verify)
            assert caught.value.reason == "truncated_image"
            assert str(caught.value) == (
                f"truncated or corrupt JPEG data (libjpeg: {LIBJPEG}): it would decode partly grey"
            )


def test_sound_shared_jpegs_raise_no_warning(shared_datasets):
    """No false alarms: the first 40 BCCD and chess images decode without a libjpeg warning."""
    files = sorted((shared_datasets / "bccd").rglob("*.jpg"))[:20]
    files += sorted((shared_datasets / "chess640").rglob("*.jpg"))[:20]
    assert len(files) == 40
    assert [f.name for f in files if jpeg_data_warnings(f.read_bytes())] == []


def test_training_data_with_a_cut_jpeg_names_it_or_skips_and_counts_it(bccd_subset):
    root = bccd_subset(BCCD_IDS)
    bad = root / "JPEGImages" / f"{BCCD_IDS[1]}.jpg"
    cut_jpeg(bad)
    spec = f"voc:{root}:train"
    with pytest.raises(DataError) as caught:
        load_dataset(spec)
    assert str(caught.value).startswith(f"{bad}: ") and LIBJPEG in str(caught.value)
    dataset = load_dataset(spec, skip_bad=True)
    assert [Path(e["image_path"]).name for e in dataset.examples] == [
        f"{BCCD_IDS[0]}.jpg",
        f"{BCCD_IDS[2]}.jpg",
    ]
    assert dataset.skipped.counts() == {"truncated_image": 1}


def test_data_check_reports_the_cut_jpeg_and_exits_1(bccd_subset, capsys):
    root = bccd_subset(BCCD_IDS)
    bad = root / "JPEGImages" / f"{BCCD_IDS[1]}.jpg"
    cut_jpeg(bad)
    code = main(["data", "check", f"voc:{root}:train", "--no-optimize"])
    captured = capsys.readouterr()
    assert code == 1
    assert "truncated_image: 1" in captured.out
    assert f"{bad}: " in captured.out and LIBJPEG in captured.out


def test_train_with_a_cut_jpeg_stops_before_writing_anything(bccd_subset, tmp_path, capsys):
    root = bccd_subset(BCCD_IDS)
    bad = root / "JPEGImages" / f"{BCCD_IDS[1]}.jpg"
    cut_jpeg(bad)
    output = tmp_path / "run"
    code = main(["train", "--data", f"voc:{root}:train", "--output", str(output), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"retinanet train: error: {bad}: ") and LIBJPEG in err and "--skip-bad" in err
    assert not output.exists()


# ----------------------------------------------------------------------------------------------------------
# --allow-changes on a finished run (no TensorFlow needed: train() stops at the plan)


def _finished_run(output: Path, config: TrainConfig, epochs: int) -> None:
    output.mkdir(parents=True)
    (output / "config.yaml").write_text(config.to_yaml())
    (output / "labels.txt").write_text("circle\n")
    for epoch in range(1, epochs + 1):
        weights, _ = run_folder.state_paths(output / "backup", epoch)
        weights.parent.mkdir(exist_ok=True)
        weights.write_bytes(b"weights %d" % epoch)
        run_folder.commit_state(output / "backup", epoch, config.epochs, [], {})
    (output / "model.keras").write_bytes(b"model")
    (output / "train_summary.json").write_text(json.dumps({"finished": True, "epochs_done": epochs}))


def test_allowed_changes_on_a_finished_run_change_nothing(tmp_path, capsys):
    output = tmp_path / "run"
    config = TrainConfig(output=str(output), data="coco:a.json:images", epochs=2, learning_rate=0.01)
    _finished_run(output, config, epochs=2)
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    lower = config.update({"learning_rate": 0.001})

    plan = plan_run(lower, allow_changes="learning_rate")
    assert plan.finished and plan.changes == {"learning_rate": (0.01, 0.001)}
    summary = train(lower, allow_changes="learning_rate")
    assert summary["already_finished"] is True and summary["epochs_done"] == 2
    assert capsys.readouterr().out.strip() == (
        f"{output} has already finished (2 epochs, {output / 'model.keras'}): nothing to do. The changed "
        "settings (learning_rate 0.01 -> 0.001) act only on epochs still to train, so nothing was changed "
        "(config.yaml included). To train longer add --epochs N --allow-changes epochs; to start over use a "
        "new --output."
    )
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    # Training longer with the change still continues the run.
    longer = plan_run(lower.update({"epochs": 3}), allow_changes="learning_rate,epochs")
    assert not longer.finished and longer.state.epoch == 2


def test_predict_names_a_cut_jpeg_and_exits_1(bccd_subset, detector_like, tmp_path, capsys):
    root = bccd_subset(BCCD_IDS[:2])
    bad = root / "JPEGImages" / f"{BCCD_IDS[1]}.jpg"
    cut_jpeg(bad)
    out = tmp_path / "out"
    code = main(
        ["predict", detector_like["keras"], str(root / "JPEGImages"), "--out", str(out), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: {bad}: truncated or corrupt JPEG data (libjpeg: {LIBJPEG})" in err
    assert "1 input(s) failed" in err
    detections = json.loads((out / "detections.json").read_text())
    assert {Path(d["file_name"]).name for d in detections} <= {f"{BCCD_IDS[0]}.jpg"}  # the sound photo's only
