"""Readers on real data (BCCD as VOC, chess640 as COCO, copied to tmp) and on files written by the tests."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from data_testing import CHESS_NEGATIVE_TEST_IMAGE_ID, write_image, write_voc

from keras_retinanet.data import DataError, load_dataset

# BloodImage_00338 has a zero-area RBC box (object 12) and a WBC box ending on the bottom edge (ymax == 480).
BCCD_IDS = ["BloodImage_00000", "BloodImage_00003", "BloodImage_00338"]


def test_voc_bccd_strict_names_the_zero_area_box(bccd_subset):
    root = bccd_subset(BCCD_IDS)
    with pytest.raises(DataError, match=r"BloodImage_00338\.xml: object 12 \(RBC\): .*zero width or height"):
        load_dataset(f"voc:{root}:train")


def test_voc_bccd_skip_bad_reports_and_converts_coordinates(bccd_subset):
    root = bccd_subset(BCCD_IDS)
    data = load_dataset(f"voc:{root}:train", skip_bad=True)
    assert data.class_names == ["Platelets", "RBC", "WBC"]
    assert [ex["image_id"] for ex in data.examples] == [0, 1, 2]
    assert data.skipped.counts() == {"box_zero_area": 1} and data.skipped.images_skipped == 0
    xml = ET.parse(root / "Annotations" / "BloodImage_00338.xml").getroot()
    objects = xml.findall("object")
    ex = data.examples[2]
    assert (ex["width"], ex["height"]) == (640, 480)
    assert len(ex["boxes"]) == len(objects) - 1  # only the zero-area box dropped
    # Last object: WBC (244, 327, 509, 480) in 1-based inclusive VOC -> (243, 326, 509, 480), edge kept as is.
    np.testing.assert_array_equal(ex["boxes"][-1], [243, 326, 509, 480])
    assert ex["classes"][-1] == data.class_names.index("WBC")
    assert data.skipped.clipped == 0  # ending exactly on the edge is not an overhang


def test_voc_difficult_is_ignore_and_classes_span_all_splits(tmp_path):
    root = write_voc(
        tmp_path / "voc",
        {
            "a": [("cat", (1, 1, 10, 10), False), ("dog", (5, 5, 30, 20), True)],
            "b": [],
        },
    )
    (root / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    data = load_dataset(f"voc:{root}:val")
    assert data.class_names == ["cat", "dog"]  # from every annotation, not only the split's
    assert len(data) == 1 and data.examples[0]["boxes"].shape == (0, 4)  # negative image kept
    data = load_dataset(f"voc:{root}:train")
    np.testing.assert_array_equal(data.examples[0]["ignore"], [False, True])
    np.testing.assert_array_equal(data.examples[0]["boxes"], [[0, 0, 10, 10], [4, 4, 30, 20]])


def test_voc_fixed_class_list_rejects_unknown_name(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", (1, 1, 10, 10), False), ("cow", (2, 2, 9, 9), False)]})
    with pytest.raises(DataError, match=r"a\.xml: object 1 \(cow\): class 'cow' is not in the class list"):
        load_dataset(f"voc:{root}:train", class_names=["cat", "dog"])
    data = load_dataset(f"voc:{root}:train", class_names=["dog", "cat"], skip_bad=True)
    np.testing.assert_array_equal(data.examples[0]["classes"], [1])
    assert data.skipped.counts() == {"unknown_class": 1}


def test_voc_missing_split_file(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": []})
    with pytest.raises(FileNotFoundError, match="nosuch"):
        load_dataset(f"voc:{root}:nosuch")


def test_coco_chess_real_defects(chess_split):
    path = chess_split("train", limit=None)
    data = load_dataset(f"coco:{path}")
    # "pieces" (id 0) is only a parent category without boxes: not a class. The stray "bishop" is a class.
    assert "pieces" not in data.class_names and data.class_names[0] == "bishop"
    assert len(data.class_names) == 13 and len(data) == 202
    raw = json.loads(path.read_text())
    assert sum(len(ex["boxes"]) for ex in data.examples) == len(raw["annotations"])  # duplicate kept
    by_id = {ex["image_id"]: ex for ex in data.examples}
    first = raw["annotations"][0]
    x, y, w, h = first["bbox"]
    ex = by_id[first["image_id"]]
    np.testing.assert_allclose(ex["boxes"][0], [x, y, x + w, y + h], rtol=1e-6)
    category = {c["id"]: c["name"] for c in raw["categories"]}[first["category_id"]]
    assert data.class_names[ex["classes"][0]] == category


def test_coco_negative_image_and_same_classes_on_every_split(chess_split):
    test = load_dataset(f"coco:{chess_split('test', limit=3)}")
    negative = [ex for ex in test.examples if ex["image_id"] == CHESS_NEGATIVE_TEST_IMAGE_ID]
    assert len(negative) == 1 and negative[0]["boxes"].shape == (0, 4)
    assert test.boxes_per_class()["bishop"] == 0
    valid = load_dataset(f"coco:{chess_split('valid', limit=2)}")
    assert test.class_names == valid.class_names


def test_coco_bad_records(tmp_path):
    write_image(tmp_path / "a.jpg", 48, 64)
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 3, "name": "thing", "supercategory": "none"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20], "iscrowd": 1},
            {"id": 2, "image_id": 99, "category_id": 3, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 5, "bbox": [1, 2, 10, 20], "iscrowd": 0},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"ann\.json: annotation id=2: image_id 99 is not in 'images'"):
        load_dataset(f"coco:{path}")
    ds = load_dataset(f"coco:{path}", skip_bad=True)
    assert ds.skipped.counts() == {"annotation_without_image": 1, "unknown_class": 1}
    ex = ds.examples[0]
    assert ex["image_id"] == 7 and ex["ignore"].tolist() == [True]  # iscrowd -> ignore
    np.testing.assert_array_equal(ex["boxes"], [[1, 2, 11, 22]])


def test_coco_not_json(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_dataset(f"coco:{path}", skip_bad=True)


def test_csv_fizyr_format(tmp_path):
    write_image(tmp_path / "img" / "a.jpg", 48, 64)
    write_image(tmp_path / "img" / "b.png", 30, 40)
    (tmp_path / "classes.csv").write_text("person,5\ncar,2\n")
    (tmp_path / "ann.csv").write_text(
        "img/a.jpg,1,2,30,40,person\nimg/b.png,,,,,\nimg/a.jpg,10,10,20,20,car\n"
    )
    data = load_dataset(f"csv:{tmp_path / 'ann.csv'}:{tmp_path / 'classes.csv'}")
    assert data.class_names == ["car", "person"]  # ordered by id
    a, b = data.examples
    np.testing.assert_array_equal(a["boxes"], [[1, 2, 30, 40], [10, 10, 20, 20]])
    np.testing.assert_array_equal(a["classes"], [1, 0])
    assert (b["width"], b["height"], len(b["boxes"])) == (40, 30, 0)  # size from the PNG header; negative


def test_csv_bad_rows(tmp_path):
    write_image(tmp_path / "a.jpg", 48, 64)
    (tmp_path / "classes.csv").write_text("person,0\n")
    (tmp_path / "ann.csv").write_text(
        f"{tmp_path / 'a.jpg'},1,2,30,40,person\n"
        f"{tmp_path / 'a.jpg'},1,2,30,40,horse\n"
        f"{tmp_path / 'a.jpg'},1,2,x,40,person\n"
        f"{tmp_path / 'a.jpg'},1,2\n"
        f"{tmp_path / 'missing.jpg'},1,2,30,40,person\n"
    )
    spec = f"csv:{tmp_path / 'ann.csv'}:{tmp_path / 'classes.csv'}"
    with pytest.raises(
        DataError, match=r"ann\.csv: line 3: coordinates \['1', '2', 'x', '40'\] are not numbers"
    ):
        load_dataset(spec)
    data = load_dataset(spec, skip_bad=True)
    assert data.skipped.counts() == {"unknown_class": 1, "bad_box": 1, "bad_row": 1, "missing_file": 1}
    assert len(data) == 1 and len(data.examples[0]["boxes"]) == 1
    summary = data.skipped.summary()
    assert "missing.jpg: image 'missing.jpg': image file not found" in summary
    assert "ann.csv: line 2 (horse): class 'horse' is not in the class list" in summary
