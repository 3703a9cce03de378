"""tools/peer_accuracy.py without Ultralytics or torch: the parts that decide its numbers and its errors.

The YOLO predictions -> detections mapping is scored by the project's own pycocotools code on tiny ground
truths whose AP is worked out by hand; the data.yaml must lead Ultralytics (and this project's YOLO reader) to
the converted splits with the right names; a missing Ultralytics environment is one line and exit status 2.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("_tool_peer_accuracy", ROOT / "tools" / "peer_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

NAMES = ["cat", "dog"]


def _example(boxes, classes, index=0, ignore=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return {
        "image_path": f"/images/{index}.jpg",
        "image_id": index,
        "boxes": boxes,
        "classes": np.asarray(classes, np.int32),
        "ignore": np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool),
        "height": 100,
        "width": 100,
    }


def _prediction(boxes, scores, classes):
    return {"boxes": [list(map(float, b)) for b in boxes], "scores": list(scores), "classes": list(classes)}


# ----------------------------------------------------------------------------------------------------------
# predictions -> detections -> pycocotools, against hand-worked APs


def test_perfect_predictions_score_ap_one():
    examples = [
        _example([[10, 10, 40, 50], [50, 20, 90, 80]], [0, 1], index=0),
        _example([[5, 5, 30, 30]], [1], index=1),
    ]
    predictions = [
        _prediction([[10, 10, 40, 50], [50, 20, 90, 80]], [0.9, 0.8], [0, 1]),
        _prediction([[5, 5, 30, 30]], [0.7], [1]),
    ]
    detections = tool.yolo_to_detections(predictions, NAMES, NAMES)
    metrics = tool.score(examples, detections, NAMES)
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(1.0)
    assert metrics["per_class"] == {
        name: {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)} for name in ("cat", "dog")
    }


def test_a_box_shifted_by_a_fifth_of_its_width_scores_four_of_ten_thresholds():
    # Ground truth 10x10 at (0, 0); the detection is the same box 2 px to the right: intersection 8x10 = 80,
    # union 100 + 100 - 80 = 120, IoU 2/3. COCO's thresholds 0.50, 0.55, 0.60, 0.65 match (AP 1 each), 0.70 to
    # 0.95 do not (AP 0): AP = 4/10, AP50 = 1, AP75 = 0.
    examples = [_example([[0, 0, 10, 10]], [0])]
    detections = tool.yolo_to_detections([_prediction([[2, 0, 12, 10]], [0.9], [0])], NAMES, NAMES)
    metrics = tool.score(examples, detections, NAMES)
    assert metrics["AP"] == pytest.approx(0.4)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(0.0)
    assert metrics["per_class"]["cat"] == {"AP": pytest.approx(0.4), "AP50": pytest.approx(1.0)}
    assert metrics["per_class"]["dog"]["AP"] == -1.0  # no ground truth: undefined, as pycocotools says


def test_yolo_class_ids_map_to_the_data_sets_classes_by_name():
    # The YOLO model lists its classes in another order than the data set (and one the data set lacks): its
    # id 0 is "dog" = data class 1. Scored without the mapping, both boxes would be the wrong class (AP 0).
    examples = [_example([[10, 10, 40, 50], [50, 20, 90, 80]], [0, 1])]
    yolo_names = ["dog", "bird", "cat"]
    predictions = [
        _prediction([[10, 10, 40, 50], [50, 20, 90, 80], [0, 0, 5, 5]], [0.9, 0.8, 0.99], [2, 0, 1])
    ]
    detections = tool.yolo_to_detections(predictions, yolo_names, NAMES)
    assert detections[0]["classes"].tolist() == [0, 1]  # "bird" dropped
    assert detections[0]["scores"].tolist() == [0.9, 0.8]
    metrics = tool.score(examples, detections, NAMES)
    assert metrics["AP"] == pytest.approx(1.0)

    results = tool.coco_results(detections, examples, NAMES)
    # Category ids 1..K for data classes 0..K-1, as examples_to_coco numbers the ground truth; boxes x, y, w, h.
    assert [(r["category_id"], r["category_name"]) for r in results] == [(1, "cat"), (2, "dog")]
    assert results[0]["bbox"] == [10.0, 10.0, 30.0, 40.0]
    assert results[1]["image_id"] == 1 and results[1]["file_name"] == "/images/0.jpg"


def test_bad_yolo_predictions_are_refused():
    with pytest.raises(ValueError, match="outside 0..1"):
        tool.yolo_to_detections([_prediction([[0, 0, 1, 1]], [0.5], [2])], NAMES, NAMES)
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        tool.yolo_to_detections([_prediction([[0, 0, 1, 1], [0, 0, 2, 2]], [0.5], [0, 0])], NAMES, NAMES)


def test_an_image_without_predictions_still_counts_its_ground_truth():
    # Two images with one cat each; only the first is found: recall 0.5, precision 1 up to it -> AP 0.5 (101-point
    # interpolation: recalls 0..0.5 have precision 1, 51 of 101 points) = 51/101.
    examples = [_example([[0, 0, 10, 10]], [0], index=0), _example([[0, 0, 10, 10]], [0], index=1)]
    predictions = [_prediction([[0, 0, 10, 10]], [0.9], [0]), _prediction([], [], [])]
    metrics = tool.score(examples, tool.yolo_to_detections(predictions, NAMES, NAMES), NAMES)
    assert metrics["AP50"] == pytest.approx(51 / 101)


# ----------------------------------------------------------------------------------------------------------
# data conversion and data.yaml


def test_data_yaml_points_at_the_converted_splits_with_the_right_names(bccd_subset, tmp_path):
    from keras_retinanet.data import load_dataset

    train_ids = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"]
    val_ids = ["BloodImage_00003", "BloodImage_00004"]
    bccd_subset(train_ids, split="trainval")
    voc = bccd_subset(val_ids, split="test")
    train, val = tool.load_splits(f"voc:{voc}:trainval", f"voc:{voc}:test", skip_bad=True)
    root = tmp_path / "work" / "data"
    tool.convert(train, val, root)
    data_yaml = tool.write_data_yaml(tmp_path / "work" / "data.yaml", root, train.class_names)

    config = yaml.safe_load(data_yaml.read_text())
    assert config["path"] == str(root.resolve())
    assert config["train"] == "images/train" and config["val"] == "images/val"
    assert config["names"] == dict(enumerate(train.class_names))
    assert sorted(train.class_names) == ["Platelets", "RBC", "WBC"]
    assert sorted(p.stem for p in (root / "images" / "val").iterdir()) == val_ids
    assert sorted(p.stem for p in (root / "labels" / "train").iterdir()) == train_ids

    # What Ultralytics reads is what the project reads: the same images and boxes, split by split.
    for split, source in (("train", train), ("val", val)):
        back = load_dataset(f"yolo:{data_yaml}:{split}")
        assert back.class_names == train.class_names
        assert [Path(e["image_path"]).name for e in back.examples] == [
            Path(e["image_path"]).name for e in source.examples
        ]
        for got, want in zip(back.examples, source.examples, strict=True):
            np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-3)
            assert got["classes"].tolist() == want["classes"].tolist()


def test_data_yaml_refuses_a_folder_without_the_splits(tmp_path):
    with pytest.raises(FileNotFoundError, match="images/train"):
        tool.write_data_yaml(tmp_path / "data.yaml", tmp_path, NAMES)


# ----------------------------------------------------------------------------------------------------------
# errors: one line, exit status 2


def _args(voc: Path, output: Path) -> list[str]:
    return [
        "--data",
        f"voc:{voc}:trainval",
        "--val-data",
        f"voc:{voc}:trainval",
        "--epochs",
        "1",
        "--image-size",
        "64",
        "--output",
        str(output),
    ]


@pytest.fixture
def voc(bccd_subset) -> Path:
    return bccd_subset(["BloodImage_00000", "BloodImage_00001"], split="trainval")


def test_no_peer_python_is_one_line_and_exit_2(voc, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RETINANET_PEER_PYTHON", raising=False)
    assert tool.main(_args(voc, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--peer-python" in err and "RETINANET_PEER_PYTHON" in err and "Ultralytics" in err
    assert not (tmp_path / "out").exists()

    monkeypatch.setenv("RETINANET_PEER_PYTHON", str(tmp_path / "nowhere" / "python"))
    assert tool.main(_args(voc, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such executable interpreter" in err


def test_a_python_without_ultralytics_is_one_line_and_exit_2(voc, tmp_path, capsys):
    # This project's own interpreter has neither ultralytics nor torch (never dependencies).
    assert importlib.util.find_spec("ultralytics") is None
    rc = tool.main([*_args(voc, tmp_path / "out"), "--peer-python", sys.executable])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "ultralytics is not importable" in err and sys.executable in err


def test_a_bad_spec_is_one_line_and_exit_2(tmp_path, capsys):
    argv = ["--data", "nonsense", "--val-data", "voc:x", "--epochs", "1", "--image-size", "64"]
    rc = tool.main([*argv, "--output", str(tmp_path / "out"), "--peer-python", sys.executable])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "bad dataset spec 'nonsense'" in err


# ----------------------------------------------------------------------------------------------------------
# the table and our runs' rows


def _row(**values):
    row = {
        "model": "YOLO11n (ultralytics 8.4.190)",
        "data_label": "BCCD:trainval -> BCCD:test",
        "epochs": 30,
        "image_size": 384,
        "AP": 0.48812,
        "AP50": 0.7634,
        "AP75": 0.5441,
        "per_class_AP50": {"RBC": 0.802, "WBC": 0.981, "Platelets": 0.506},
        "train_wall_s": 1954.4,
        "threads": {"torch_num_threads": 1, "OMP_NUM_THREADS": "1"},
    }
    row.update(values)
    return row


def test_table_rows_hold_every_column_in_order():
    table = tool.format_table([_row(), _row(model="RetinaNet", AP=-1.0, train_wall_s=None, threads=None)])
    lines = table.splitlines()
    assert len(lines) == 4
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(tool.TABLE_COLUMNS)
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert len(cells) == len(tool.TABLE_COLUMNS) == lines[1].count("---")
    assert cells == [
        "YOLO11n (ultralytics 8.4.190)",
        "BCCD:trainval -> BCCD:test",
        "30",
        "384",
        "0.488",
        "0.763",
        "0.544",
        "RBC 0.802, WBC 0.981, Platelets 0.506",
        "1,954",
        "torch 1, OMP 1",
    ]
    other = [c.strip() for c in lines[3].strip("|").split("|")]
    assert other[4] == "n/a" and other[8] == "-" and other[9] == "-"


def test_short_spec_names_the_data_set_and_split():
    assert tool.short_spec("voc:/d/bccd/BCCD:test") == "BCCD:test"
    spec = "coco:/d/chess640/valid/_annotations.coco.json:/d/chess640/valid"
    assert tool.short_spec(spec) == "chess640/valid"


def test_our_run_reports_the_metrics_training_wrote_for_the_same_split(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = {
        "data": "voc:/d/bccd/BCCD:trainval",
        "val_data": "voc:/d/bccd/BCCD:test",
        "skip_bad": True,
        "epochs": 30,
        "batch_size": 8,
        "model": {"backbone": "mobilenet_v2", "image_size": [288, 384]},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {
        "AP": 0.465,
        "AP50": 0.839,
        "AP75": 0.5,
        "per_class": {"Platelets": {"AP": 0.3, "AP50": 0.791}, "RBC": {"AP": 0.4, "AP50": 0.8}},
    }
    (run / "train_summary.json").write_text(json.dumps({"finished": True, "final_metrics": metrics}))
    args = tool.parse_args(
        [
            "--data",
            config["data"],
            "--val-data",
            config["val_data"],
            "--skip-bad",
            "--epochs",
            "30",
            "--image-size",
            "384",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    row = tool.ours_row(run, val=None, args=args)  # no model.keras: the summary's metrics must be used
    assert (row["AP"], row["AP50"], row["AP75"]) == (0.465, 0.839, 0.5)
    assert row["per_class_AP50"] == {"Platelets": 0.791, "RBC": 0.8}
    assert row["image_size"] == "288x384" and row["epochs"] == 30 and "mobilenet_v2" in row["model"]
    assert "final_metrics" in row["source"]

    # Validated on another split: its summary says nothing about this one, and without a model it is an error.
    args.val_data = "voc:/d/bccd/BCCD:val"
    with pytest.raises(tool.PeerAccuracyError, match="no model.keras"):
        tool.ours_row(run, val=None, args=args)
