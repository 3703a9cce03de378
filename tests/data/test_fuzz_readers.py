"""Fuzz test of the COCO, VOC and CSV readers (hypothesis): whatever the annotation files hold (missing keys,
wrong types, nulls, huge and negative numbers, NaN / inf, unicode, empty strings, broken XML), ``load_dataset``
returns a clean :class:`Dataset` or raises :class:`DataError` with a one-line message that names the file.

Derandomized with a bounded number of examples per format, so CI runs the same inputs every time (a few
seconds each on the 2-core CI machine). Raise ``FUZZ_EXAMPLES`` locally to search longer.
"""

from __future__ import annotations

import collections
import copy
import csv
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from data_testing import write_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_retinanet.data import DataError, Dataset, load_dataset

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
IMAGE_WIDTH, IMAGE_HEIGHT = 64, 48

# Any JSON value of the wrong kind.
weird = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(-3, 3), max_size=2),
)
# Text fields of XML and CSV files: numbers, words, and what a float parser chokes on.
number_text = st.one_of(
    st.integers(-10, 80).map(str),
    st.floats(-10, 80, allow_nan=False).map(repr),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "-1e400", "12abc", "٣", "0x10", "1_0", "None"]),
    st.text(max_size=5),
)
class_name = st.one_of(st.sampled_from(["cat", "dog", "Zoë", "猫", "", " "]), st.text(max_size=6))
file_name = st.one_of(
    st.sampled_from(["a.jpg", "b.png", "missing.jpg", "", "a.jpg/", "ä b.jpg"]),
    st.text(max_size=8).filter(
        lambda name: not name.startswith("/")
    ),  # an absolute path names no folder of ours
)
# The values most likely to break a parser, drawn first and often.
HOSTILE_JSON = [None, 0, -1, 2**64, -(2**64), 1e308, float("nan"), float("inf"), "", "12", True, [], {}]
HOSTILE_TEXT = [
    "",
    " ",
    "0",
    "-5",
    "3.5",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "-1e400",
    "12abc",
    "٣",
    "None",
    "猫",
]
json_value = st.one_of(
    st.sampled_from(HOSTILE_JSON), weird, st.integers(-5, 100), st.floats(-5, 100), class_name, file_name
)
text_value = st.one_of(st.sampled_from(HOSTILE_TEXT), number_text, class_name, file_name)

# Valid files (a.jpg and b.png are 64x48 images in the test folder) that the mutations below then break.
COCO = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "width": IMAGE_WIDTH, "height": IMAGE_HEIGHT},
        {"id": 2, "file_name": "b.png", "width": IMAGE_WIDTH, "height": IMAGE_HEIGHT},
    ],
    "categories": [
        {"id": 1, "name": "cat", "supercategory": "animal"},
        {"id": 2, "name": "dog", "supercategory": "animal"},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 20], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [40.5, 10, 20, 30], "iscrowd": 1},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 64, 48], "iscrowd": 0},
    ],
}
# VOC: {field: text} and "objects"; turned into XML by _voc_xml.
VOC = {
    "filename": "a.jpg",
    "size": {"width": str(IMAGE_WIDTH), "height": str(IMAGE_HEIGHT), "depth": "3"},
    "objects": [
        {"name": "cat", "difficult": "0", "bndbox": {"xmin": "2", "ymin": "3", "xmax": "30", "ymax": "20"}},
        {"name": "dog", "difficult": "1", "bndbox": {"xmin": "10", "ymin": "1", "xmax": "64", "ymax": "48"}},
    ],
}
CSV_ROWS = [
    ["a.jpg", "1", "2", "30", "20", "cat"],
    ["b.png", "10", "10", "60.5", "40", "dog"],
    ["a.jpg", "5", "5", "9", "9", "dog"],
    ["b.png", "", "", "", "", ""],
]
CSV_CLASSES = [["cat", "0"], ["dog", "1"]]


def _paths(value, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys / indices) into a nested structure of dicts and lists, the root included."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _paths(item, (*prefix, index))
    return paths


def _mutations(document, values):
    """Lists of up to 4 (path, action, value): delete a key / element, set it to ``values``, or duplicate it."""
    action = st.sampled_from(["delete", "set", "set", "copy"])
    return st.lists(st.tuples(st.sampled_from(_paths(document)), action, values), max_size=4)


def _has(parent, key) -> bool:
    if isinstance(parent, dict):
        return key in parent
    return isinstance(parent, list) and isinstance(key, int) and key < len(parent)


def _mutate(document, mutations):
    """A deep copy of ``document`` with the mutations applied (those whose path is gone are ignored)."""
    document = copy.deepcopy(document)
    for path, action, value in mutations:
        if not path:
            document = value if action == "set" else document
            continue
        parent = document
        for key in path[:-1]:
            parent = parent[key] if _has(parent, key) else None
        key = path[-1]
        if _has(parent, key):
            if action == "delete":
                del parent[key]
            elif action == "set":
                parent[key] = value
            elif isinstance(parent, list):
                parent.append(copy.deepcopy(parent[key]))
    return document


def _voc_xml(document) -> str:
    """The XML of a (mutated) VOC structure; a non-dict document becomes its text (not an annotation)."""
    if not isinstance(document, dict):
        return str(document)
    root = ET.Element("annotation")

    def add(parent, key, value):
        element = ET.SubElement(parent, str(key) if str(key).isidentifier() else "field")
        if isinstance(value, dict):
            for k, v in value.items():
                add(element, k, v)
        elif isinstance(value, list):
            for item in value:
                add(element, "item", item)
        else:
            element.text = str(
                value
            )  # control characters stay as they are: not well-formed XML, as in the wild

    for key, value in document.items():
        if key == "objects" and isinstance(value, list):
            for obj in value:
                add(root, "object", obj)
        else:
            add(root, key, value)
    return ET.tostring(root, encoding="unicode")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A folder with two real images (a.jpg 64x48, b.png 64x48) and the VOC layout around copies of them."""
    root = tmp_path_factory.mktemp("fuzz")
    write_image(root / "a.jpg", IMAGE_HEIGHT, IMAGE_WIDTH)
    write_image(root / "b.png", IMAGE_HEIGHT, IMAGE_WIDTH, seed=1)
    for sub in ("Annotations", "ImageSets/Main"):
        (root / "voc" / sub).mkdir(parents=True)
    write_image(root / "voc" / "JPEGImages" / "a.jpg", IMAGE_HEIGHT, IMAGE_WIDTH)
    write_image(root / "voc" / "JPEGImages" / "b.jpg", IMAGE_HEIGHT, IMAGE_WIDTH, seed=1)
    (root / "voc" / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    return root


def _check(spec: str, skip_bad: bool, root: Path, outcomes: collections.Counter) -> None:
    """Loads ``spec``; a Dataset must be clean, an error must be a one-line DataError naming a file."""
    try:
        data = load_dataset(spec, skip_bad=skip_bad)
    except DataError as error:
        message = str(error)
        assert "\n" not in message, message
        # Names the annotation file, the spec's path, or an image (an absolute path given in the file).
        assert str(root) in message or message.startswith("/"), message
        outcomes["error"] += 1
        return
    assert isinstance(data, Dataset)
    assert data.class_names and len(set(data.class_names)) == len(data.class_names)
    assert all(isinstance(name, str) for name in data.class_names)
    assert data.examples, "an empty dataset must be an error"
    for example in data.examples:
        boxes, classes, ignore = example["boxes"], example["classes"], example["ignore"]
        width, height = example["width"], example["height"]
        assert isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0
        assert (width, height) == (IMAGE_WIDTH, IMAGE_HEIGHT), example
        assert boxes.dtype == np.float32 and boxes.shape == (len(classes), 4)
        assert classes.dtype == np.int32 and ignore.dtype == bool and ignore.shape == classes.shape
        assert np.isfinite(boxes).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all()
        assert ((classes >= 0) & (classes < data.num_classes)).all()
        assert os.path.isfile(example["image_path"])
        assert isinstance(example["image_id"], int) and 0 <= example["image_id"] < 2**63
    if not skip_bad:
        assert len(data.skipped) == 0
    outcomes["clean" if not len(data.skipped) else "skipped"] += 1


def _expect_every_outcome(outcomes: collections.Counter) -> None:
    # The strategies must reach the readers' inner code, not only their first check.
    assert outcomes["error"] and outcomes["clean"] and outcomes["skipped"], outcomes


def test_coco_reader_fuzz(root):
    outcomes = collections.Counter()
    path = root / "annotations.json"

    @FUZZ
    @given(mutations=_mutations(COCO, json_value), skip_bad=st.booleans())
    def run(mutations, skip_bad):
        # NaN and Infinity written as Python's json writes (and reads) them.
        path.write_text(json.dumps(_mutate(COCO, mutations)), encoding="utf-8")
        _check(f"coco:{path}", skip_bad, root, outcomes)

    run()
    _expect_every_outcome(outcomes)


def test_voc_reader_fuzz(root):
    outcomes = collections.Counter()
    voc = root / "voc"

    @FUZZ
    @given(first=_mutations(VOC, text_value), second=_mutations(VOC, text_value), skip_bad=st.booleans())
    def run(first, second, skip_bad):
        for name, mutations in (("a", first), ("b", second)):
            document = _mutate({**VOC, "filename": f"{name}.jpg"}, mutations)
            (voc / "Annotations" / f"{name}.xml").write_text(_voc_xml(document), encoding="utf-8")
        _check(f"voc:{voc}:train", skip_bad, root, outcomes)

    run()
    _expect_every_outcome(outcomes)


def test_csv_reader_fuzz(root):
    outcomes = collections.Counter()
    annotations, classes = root / "annotations.csv", root / "classes.csv"

    @FUZZ
    @given(
        rows=_mutations(CSV_ROWS, text_value),
        class_rows=_mutations(CSV_CLASSES, text_value),
        skip_bad=st.booleans(),
    )
    def run(rows, class_rows, skip_bad):
        for file, content in (
            (annotations, _mutate(CSV_ROWS, rows)),
            (classes, _mutate(CSV_CLASSES, class_rows)),
        ):
            with open(file, "w", newline="", encoding="utf-8") as f:
                if isinstance(content, list):
                    csv.writer(f).writerows(row if isinstance(row, list) else [row] for row in content)
                else:
                    f.write(str(content))
        _check(f"csv:{annotations}:{classes}", skip_bad, root, outcomes)

    run()
    _expect_every_outcome(outcomes)
