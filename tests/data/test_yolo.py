"""YOLO txt reader on folders the tests write in the layouts that labelling tools export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_testing import write_image

from keras_retinanet.cli.retinanet import main
from keras_retinanet.data import DataError, load_dataset
from keras_retinanet.data.yolo import label_path

W, H = 64, 48  # every test image


def write_roboflow_yolo(root):
    """Roboflow's "YOLOv8 PyTorch TXT" export (Roboflow docs, formats page "YOLOv8 PyTorch TXT"): one folder per
    split with images/ and labels/, and a data.yaml beside them whose split paths start with ``../``."""
    (root).mkdir(parents=True)
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\n"
        "nc: 2\nnames: ['cat', 'dog']\n\n"
        "roboflow:\n  workspace: ws\n  project: pets\n  version: 1\n  license: CC BY 4.0\n"
    )
    for split in ("train", "valid"):
        write_image(root / split / "images" / "a_jpg.rf.1.jpg", H, W)
        write_image(root / split / "images" / "b_jpg.rf.2.jpg", H, W, seed=1)
        write_image(root / split / "images" / "c_jpg.rf.3.jpg", H, W, seed=2)
        (root / split / "labels").mkdir()
        (root / split / "labels" / "a_jpg.rf.1.txt").write_text(
            "0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.125 0.25\n"
        )
        (root / split / "labels" / "b_jpg.rf.2.txt").write_text("")  # negative: empty file
        # c has no label file at all: also a negative
    (root / "test" / "images").mkdir(parents=True)
    return root / "data.yaml"


def test_roboflow_layout_boxes_negatives_and_splits(tmp_path):
    data_yaml = write_roboflow_yolo(tmp_path / "pets")
    data = load_dataset(f"yolo:{data_yaml}")  # split defaults to train
    assert data.class_names == ["cat", "dog"]
    assert [ex["image_path"].rsplit("/", 3)[1:] for ex in data.examples] == [
        ["train", "images", "a_jpg.rf.1.jpg"],
        ["train", "images", "b_jpg.rf.2.jpg"],
        ["train", "images", "c_jpg.rf.3.jpg"],
    ]
    a, b, c = data.examples
    # cx 0.5*64=32, cy 0.5*48=24, w 16, h 24 -> (24, 12, 40, 36); cx 16, cy 12, w 8, h 12 -> (12, 6, 20, 18).
    np.testing.assert_allclose(a["boxes"], [[24, 12, 40, 36], [12, 6, 20, 18]])
    np.testing.assert_array_equal(a["classes"], [0, 1])
    assert a["ignore"].tolist() == [False, False] and (a["width"], a["height"]) == (64, 48)
    assert b["boxes"].shape == (0, 4) and c["boxes"].shape == (0, 4)
    assert len(data.skipped) == 0
    valid = load_dataset(f"yolo:{data_yaml}:val")
    assert "/valid/images/" in valid.examples[0]["image_path"] and len(valid) == 3
    with pytest.raises(DataError, match=r"data\.yaml: no 'nosuch' split \(splits given: train, val, test\)"):
        load_dataset(f"yolo:{data_yaml}:nosuch")
    # An empty split folder: a clear error, not an empty dataset.
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"yolo:{data_yaml}:test")


def test_cvat_layout_list_file_names_mapping_and_polygon(tmp_path):
    """CVAT's "Ultralytics YOLO Detection 1.0" export (CVAT docs, "Ultralytics YOLO" format page): data.yaml with
    ``path: ./``, ``names`` as an id -> name mapping, ``train: train.txt`` listing images/train/... paths."""
    root = tmp_path / "cvat"
    write_image(root / "images" / "train" / "frame_000000.jpg", H, W)
    write_image(root / "images" / "train" / "frame_000001.jpg", H, W, seed=1)
    (root / "labels" / "train").mkdir(parents=True)
    # Polygon line (Ultralytics segment format): its box is the vertex extent, x 0.1..0.5, y 0.1..0.6.
    (root / "labels" / "train" / "frame_000000.txt").write_text(
        "1 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6\n0 0.500000 0.500000 1.000000 1.000000\n"
    )
    (root / "labels" / "train" / "frame_000001.txt").write_text("\n")
    (root / "train.txt").write_text("images/train/frame_000001.jpg\nimages/train/frame_000000.jpg\n")
    (root / "data.yaml").write_text(
        "path: ./  # dataset root dir\ntrain: train.txt  # train images (relative to 'path')\n\n"
        "names:\n  0: car\n  1: person\n"
    )
    data = load_dataset(f"yolo:{root / 'data.yaml'}:train")
    assert data.class_names == ["car", "person"]
    first, second = data.examples  # the list file's order
    assert first["image_path"].endswith("frame_000001.jpg") and first["boxes"].shape == (0, 4)
    np.testing.assert_allclose(second["boxes"], [[6.4, 4.8, 32, 28.8], [0, 0, 64, 48]], rtol=1e-6)
    np.testing.assert_array_equal(second["classes"], [1, 0])


def test_model_class_order_maps_by_name(tmp_path):
    data_yaml = write_roboflow_yolo(tmp_path / "pets")
    data = load_dataset(f"yolo:{data_yaml}", class_names=["dog", "bird", "cat"])
    np.testing.assert_array_equal(data.examples[0]["classes"], [2, 0])


def test_bad_lines_name_file_and_line(tmp_path):
    data_yaml = write_roboflow_yolo(tmp_path / "pets")
    labels = tmp_path / "pets" / "train" / "labels" / "a_jpg.rf.1.txt"
    labels.write_text(
        "0 0.5 0.5 0.25 0.5\n"
        "2 0.5 0.5 0.1 0.1\n"  # class out of range
        "0 0.5 x 0.1 0.1\n"  # not a number
        "1 0.5 0.5 0.1\n"  # four values
        "0 0.5 0.5 0.1 0.1 0.3\n"  # six values: neither a box nor a polygon
        "1.5 0.5 0.5 0.1 0.1\n"  # class not an integer
        "0 2.5 0.5 0.1 0.1\n"  # outside the image
        "0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n"  # a polygon with an odd number of coordinates
    )
    with pytest.raises(
        DataError, match=r"a_jpg\.rf\.1\.txt: line 2: class '2' is not an integer id in 0\.\.1"
    ):
        load_dataset(f"yolo:{data_yaml}")
    data = load_dataset(f"yolo:{data_yaml}", skip_bad=True)
    assert data.skipped.counts() == {"unknown_class": 2, "bad_box": 1, "bad_row": 3, "box_outside_image": 1}
    assert data.skipped.boxes_skipped == 7 and len(data) == 3
    np.testing.assert_allclose(data.examples[0]["boxes"], [[24, 12, 40, 36]])
    summary = data.skipped.summary()
    assert "a_jpg.rf.1.txt: line 3: coordinates ['0.5', 'x', '0.1', '0.1'] are not numbers" in summary
    assert (
        "a_jpg.rf.1.txt: line 7 (cat): box (156.8, 21.6, 163.2, 26.4) lies outside the 64x48 image" in summary
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: images\nnames:\n  0: a\n  2: b\n", r"'names' ids \[0, 2\] are not 0\.\.1"),
        ("train: images\nnc: 3\nnames: [a, b]\n", r"nc 3 but 'names' lists 2 classes"),
        ("train: images\nnames: [a, a]\n", r"'names' has duplicates"),
        ("train: images\n", r"'names' is NoneType, not a list"),
        ("- a\n- b\n", r"the top level is list"),
        ("names: [a]\ntrain: [images, {x: 1}]\n", r"train entry \{'x': 1\} is not a path"),
    ],
)
def test_bad_yaml(tmp_path, text, message):
    write_image(tmp_path / "images" / "a.jpg", H, W)
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(DataError, match=message):
        load_dataset(f"yolo:{tmp_path / 'data.yaml'}", skip_bad=True)


def test_label_path_replaces_the_last_images_folder():
    assert label_path("/d/images/x/images/train/a.b.jpg") == "/d/images/x/labels/train/a.b.txt"
    assert label_path("/d/train/images/a.PNG") == "/d/train/labels/a.txt"


def test_data_check_reads_yolo_and_unreadable_yaml_exits_2(tmp_path, capsys):
    data_yaml = write_roboflow_yolo(tmp_path / "pets")
    out = tmp_path / "check.json"
    assert main(["data", "check", f"yolo:{data_yaml}", "--no-optimize", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["boxes_per_class"] == {"cat": 1, "dog": 1} and report["negatives"] == 2
    (tmp_path / "bad.yaml").write_text("names: [a\n")
    assert main(["data", "check", f"yolo:{tmp_path / 'bad.yaml'}", "--no-optimize"]) == 2
    assert "bad.yaml: not a readable YAML file" in capsys.readouterr().err


def test_edge_boxes_rounded_past_the_edge_are_on_it(tmp_path):
    """Six-decimal labels of a box on the right edge can end 1e-6 past it: on the edge, not a clipped overhang;
    a real overhang (0.005) is clipped and counted."""
    data_yaml = write_roboflow_yolo(tmp_path / "pets")
    labels = tmp_path / "pets" / "train" / "labels" / "a_jpg.rf.1.txt"
    labels.write_text("0 0.900000 0.500000 0.200001 0.200000\n1 0.905 0.5 0.2 0.2\n")
    data = load_dataset(f"yolo:{data_yaml}")
    np.testing.assert_allclose(
        data.examples[0]["boxes"], [[51.2, 19.2, 64, 28.8], [51.52, 19.2, 64, 28.8]], atol=1e-4
    )
    assert data.skipped.clipped == 1
