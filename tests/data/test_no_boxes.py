"""A training set without boxes, or with a class that has none, is refused before anything is written: the run
would end with exit 0 and a model that finds nothing. ``--allow-empty-classes`` is the explicit way through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_testing import write_image

from keras_retinanet.cli.retinanet import main
from keras_retinanet.data import load_dataset
from keras_retinanet.training import TrainConfig, train
from keras_retinanet.training.loop import check_every_class_has_boxes


def yolo_without_labels(root: Path, with_label_files: bool) -> str:
    for k in range(3):
        write_image(root / "images" / "train" / f"{k}.jpg", seed=k)
        if with_label_files:  # present, all empty
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{k}.txt").write_text("")
    (root / "data.yaml").write_text("names: [cat, dog]\ntrain: images/train\n")
    return f"yolo:{root / 'data.yaml'}:train"


def coco(root: Path, annotations: list) -> str:
    write_image(root / "a.jpg")
    path = root / "ann.json"
    content = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": annotations,
    }
    path.write_text(json.dumps(content))
    return f"coco:{path}"


NO_BOXES = [
    ("yolo, no labels folder", lambda root: yolo_without_labels(root, with_label_files=False)),
    ("yolo, empty label files", lambda root: yolo_without_labels(root, with_label_files=True)),
    ('coco, "annotations": []', lambda root: coco(root, [])),
]


@pytest.mark.parametrize("case, make", NO_BOXES, ids=[case for case, _ in NO_BOXES])
def test_train_refuses_a_set_without_boxes(tmp_path, capsys, case, make):
    spec = make(tmp_path / "data")
    output = tmp_path / "run"
    code = main(["train", "--data", spec, "--output", str(output), "--weights", "none", "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{spec}: none of its " in err and "training images has a box" in err
    assert "--allow-empty-classes" in err
    assert not output.exists()


def test_train_refuses_a_class_without_boxes(tmp_path, capsys):
    spec = coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [4, 4, 20, 20]}])
    code = main(["train", "--data", spec, "--output", str(tmp_path / "run"), "--weights", "none"])
    err = capsys.readouterr().err
    assert code == 2
    assert "class(es) 'cat' have no boxes in the training set" in err and "--allow-empty-classes" in err


def test_ignore_boxes_do_not_count_and_the_flag_lets_it_through(tmp_path):
    spec = coco(
        tmp_path,
        [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [4, 4, 20, 20]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 4, 20, 20], "iscrowd": 1},
        ],
    )
    dataset = load_dataset(spec)
    with pytest.raises(ValueError, match="'cat' have no boxes"):
        check_every_class_has_boxes(spec, dataset)
    # With the flag, train gets past the check: it stops later, at the (deliberately) unknown backbone.
    with pytest.raises(ValueError, match="unknown backbone"):
        train(
            TrainConfig(data=spec, output=str(tmp_path / "run"), allow_empty_classes=True).update(
                {"backbone": "no_such_backbone"}
            )
        )
    assert not (tmp_path / "run").exists()


def test_data_check_reports_it(tmp_path, capsys):
    spec = yolo_without_labels(tmp_path / "data", with_label_files=False)
    assert main(["data", "check", spec, "--no-optimize"]) == 0
    assert (
        "no class has a box: retinanet train refuses this unless --allow-empty-classes"
        in capsys.readouterr().out
    )
