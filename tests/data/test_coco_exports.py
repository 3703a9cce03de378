"""COCO JSON as labelling tools export it (files written by the tests, in each tool's layout), and the quirks:
0-based and non-contiguous category ids, supercategory-only categories, iscrowd, segmentation-only annotations.

Layouts, from each tool's documentation:
- Roboflow, formats page "COCO JSON": one folder per split holding the images and ``_annotations.coco.json``; a
  category id 0 named after the project is the supercategory of every other category and has no boxes.
- CVAT, manual page "COCO" (export format "COCO 1.0"): ``annotations/instances_<subset>.json`` and the images
  beside ``annotations/``; category ids from 1, ``supercategory: ""``; polygons as ``segmentation`` with a bbox;
  masks as ``iscrowd: 1`` with an uncompressed RLE; an ``attributes`` dict per annotation.
- Label Studio, guide page "Export annotations and data" (COCO): ``result.json`` with ``images/`` beside it and
  ``file_name: "images/..."``; category ids from 0 without supercategory; ``ignore: 0`` in each annotation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_testing import write_image
from pycocotools import mask as mask_utils

from keras_retinanet.data import DataError, load_dataset

W, H = 64, 48


def test_roboflow_export(tmp_path):
    root = tmp_path / "pets.v1i.coco" / "train"
    write_image(root / "a_jpg.rf.0f1e.jpg", H, W)
    write_image(root / "b_jpg.rf.9a8b.jpg", H, W, seed=1)
    (tmp_path / "pets.v1i.coco" / "README.roboflow.txt").write_text("Pets - v1\n")
    data = {
        "info": {"year": "2024", "version": "1", "description": "Exported from roboflow.com", "url": ""},
        "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
        "categories": [
            {"id": 0, "name": "pets", "supercategory": "none"},
            {"id": 1, "name": "cat", "supercategory": "pets"},
            {"id": 2, "name": "dog", "supercategory": "pets"},
        ],
        "images": [
            {"id": 0, "license": 1, "file_name": "a_jpg.rf.0f1e.jpg", "height": H, "width": W,
             "date_captured": "2024-01-01T00:00:00+00:00"},
            {"id": 1, "license": 1, "file_name": "b_jpg.rf.9a8b.jpg", "height": H, "width": W,
             "date_captured": "2024-01-01T00:00:00+00:00"},
        ],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 2, "bbox": [3, 4, 20.5, 10], "area": 205, "segmentation": [],
             "iscrowd": 0},
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [30, 5, 10, 12], "area": 120, "segmentation": [],
             "iscrowd": 0},
        ],
    }  # fmt: skip
    (root / "_annotations.coco.json").write_text(json.dumps(data))
    ds = load_dataset(f"coco:{root / '_annotations.coco.json'}")
    assert ds.class_names == ["cat", "dog"]  # the parent "pets" (id 0, no boxes) is not a class
    a, b = ds.examples
    np.testing.assert_allclose(a["boxes"], [[3, 4, 23.5, 14], [30, 5, 40, 17]])
    np.testing.assert_array_equal(a["classes"], [1, 0])
    assert b["boxes"].shape == (0, 4) and b["image_id"] == 1  # image without annotations: a negative


def _rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of 0s and 1s in column-major order, starting with 0s."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"counts": counts, "size": list(mask.shape)}


def test_cvat_export_polygon_and_crowd_mask(tmp_path):
    root = tmp_path / "task_1_dataset"
    write_image(root / "images" / "frame_000000.jpg", H, W)
    mask = np.zeros((H, W), np.uint8)
    mask[20:30, 40:60] = 1  # rows 20..29, columns 40..59: box (40, 20, 60, 30)
    data = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
        "categories": [
            {"id": 1, "name": "car", "supercategory": ""},
            {"id": 2, "name": "person", "supercategory": ""},
        ],
        "images": [
            {"id": 1, "width": W, "height": H, "file_name": "frame_000000.jpg", "license": 0, "flickr_url": "",
             "coco_url": "", "date_captured": 0},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "segmentation": [[5.0, 6.0, 25.0, 6.0, 25.0, 40.0]],
             "area": 340.0, "bbox": [5.0, 6.0, 20.0, 34.0], "iscrowd": 0,
             "attributes": {"occluded": False}},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": _rle_uncompressed(mask), "area": 200.0,
             "bbox": [40.0, 20.0, 20.0, 10.0], "iscrowd": 1, "attributes": {"occluded": False}},
        ],
    }  # fmt: skip
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    ds = load_dataset(f"coco:{root / 'annotations' / 'instances_default.json'}:{root / 'images'}")
    assert ds.class_names == ["car", "person"]
    (ex,) = ds.examples
    np.testing.assert_allclose(ex["boxes"], [[5, 6, 25, 40], [40, 20, 60, 30]])
    np.testing.assert_array_equal(ex["classes"], [1, 0])
    assert ex["ignore"].tolist() == [False, True]  # the crowd mask is an ignore region, never a positive
    assert ds.boxes_per_class(include_ignored=False) == {"car": 0, "person": 1}


def test_label_studio_export_zero_based_ids(tmp_path):
    root = tmp_path / "project-1-at-2024-01-01"
    write_image(root / "images" / "4f1c2d3e-plane.jpg", H, W)
    data = {
        "images": [{"width": W, "height": H, "id": 0, "file_name": "images/4f1c2d3e-plane.jpg"}],
        "categories": [{"id": 0, "name": "Airplane"}, {"id": 1, "name": "Car"}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 0, "segmentation": [], "bbox": [1.25, 2.5, 30.0, 12.75],
             "ignore": 0, "iscrowd": 0, "area": 382.5},
            {"id": 1, "image_id": 0, "category_id": 1, "segmentation": [], "bbox": [40.0, 30.0, 10.0, 8.0],
             "ignore": 0, "iscrowd": 0, "area": 80.0},
        ],
        "info": {"year": 2024, "version": "1.0", "description": "", "contributor": "Label Studio", "url": "",
                 "date_created": "2024-01-01 00:00:00.000000"},
    }  # fmt: skip
    (root / "result.json").write_text(json.dumps(data))
    ds = load_dataset(f"coco:{root / 'result.json'}")
    assert ds.class_names == ["Airplane", "Car"]  # id 0 is a class like any other
    np.testing.assert_allclose(ds.examples[0]["boxes"], [[1.25, 2.5, 31.25, 15.25], [40, 30, 50, 38]])
    np.testing.assert_array_equal(ds.examples[0]["classes"], [0, 1])


def _write(tmp_path, categories, annotations) -> str:
    write_image(tmp_path / "a.jpg", H, W)
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": W, "height": H}],
        "categories": categories,
        "annotations": annotations,
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return f"coco:{tmp_path / 'ann.json'}"


def test_non_contiguous_ids_ordered_by_id_and_mapped_by_name(tmp_path):
    spec = _write(
        tmp_path,
        [{"id": 12, "name": "c"}, {"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
        [
            {"id": 1, "image_id": 1, "category_id": 12, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [2, 2, 5, 5]},
            {"id": 3, "image_id": 1, "category_id": 7, "bbox": [3, 3, 5, 5]},
        ],
    )
    ds = load_dataset(spec)
    assert ds.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(ds.examples[0]["classes"], [2, 0, 1])
    ds = load_dataset(spec, class_names=["c", "b", "a"])  # a trained model's order
    np.testing.assert_array_equal(ds.examples[0]["classes"], [0, 2, 1])


def test_segmentation_only_annotations(tmp_path):
    mask = np.zeros((H, W), np.uint8)
    mask[4:9, 10:13] = 1  # box (10, 4, 13, 9)
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    spec = _write(
        tmp_path,
        [{"id": 1, "name": "x"}],
        [
            # polygon without bbox: the vertex extent
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[10.5, 20, 30, 22.25, 12, 40]]},
            # two polygons, bbox []: the extent of both
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [],
             "segmentation": [[1, 2, 5, 2, 5, 6], [40, 30, 44, 30, 44, 35]]},
            {"id": 3, "image_id": 1, "category_id": 1, "segmentation": compressed},
            {"id": 4, "image_id": 1, "category_id": 1, "segmentation": _rle_uncompressed(mask), "bbox": None},
        ],
    )  # fmt: skip
    (ex,) = load_dataset(spec).examples
    np.testing.assert_allclose(
        ex["boxes"], [[10.5, 20, 30, 40], [1, 2, 44, 35], [10, 4, 13, 9], [10, 4, 13, 9]]
    )


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ({}, "no bbox, and no segmentation"),
        ({"segmentation": []}, "no bbox, and no segmentation"),
        ({"segmentation": [[1, 2, 3, 4]]}, "no bbox, and segmentation is not a list of polygons"),
        (
            {"segmentation": {"counts": [1, 2], "size": [0, 5]}},
            r"no bbox, and the RLE size \[0, 5\] is not \[height, width\]",
        ),
    ],
)
def test_annotation_without_any_box_is_a_bad_record(tmp_path, annotation, message):
    spec = _write(
        tmp_path,
        [{"id": 1, "name": "x"}],
        [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 9, "image_id": 1, "category_id": 1, **annotation},
        ],
    )
    with pytest.raises(DataError, match=rf"ann\.json: annotation id=9: {message}"):
        load_dataset(spec)
    ds = load_dataset(spec, skip_bad=True)
    assert ds.skipped.counts() == {"bad_box": 1}
    np.testing.assert_array_equal(ds.examples[0]["boxes"], [[1, 1, 6, 6]])
