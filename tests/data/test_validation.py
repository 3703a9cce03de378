"""Every bad-input case: a clear error naming file, record and problem; skip_bad skips and counts."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from data_testing import write_image, write_voc

from keras_retinanet.data import DataError, SkipReport, load_dataset, parse_spec
from keras_retinanet.data.images import ImageError, inspect_image
from keras_retinanet.data.validation import check_boxes


def _voc_with_image(tmp_path, mutate):
    root = write_voc(
        tmp_path / "voc", {"a": [("cat", (1, 1, 10, 10), False)], "b": [("cat", (2, 2, 9, 9), False)]}
    )
    mutate(root / "JPEGImages" / "a.jpg")
    return root


@pytest.mark.parametrize(
    "mutate, reason, message",
    [
        (lambda p: p.unlink(), "missing_file", "image file not found"),
        (
            lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
            "truncated_image",
            "truncated JPEG",
        ),
        (
            lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50),
            "corrupt_image",
            "JPEG header has a bad segment length",
        ),
        (
            lambda p: p.write_bytes(b"GIF89a" + b"\x00" * 50),
            "unsupported_format",
            "unsupported image format 'gif'",
        ),
        (lambda p: p.write_bytes(b"hello world, not an image"), "unsupported_format", "not an image file"),
    ],
)
def test_bad_image_files(tmp_path, mutate, reason, message):
    root = _voc_with_image(tmp_path, mutate)
    with pytest.raises(DataError, match=rf"JPEGImages/a\.jpg: image 'a': {message}"):
        load_dataset(f"voc:{root}:train")
    data = load_dataset(f"voc:{root}:train", skip_bad=True)
    assert [ex["image_path"].endswith("b.jpg") for ex in data.examples] == [True]
    assert data.skipped.counts() == {reason: 1} and data.skipped.images_skipped == 1


def test_truncated_png_and_decode_verification(tmp_path):
    path = write_image(tmp_path / "x.png", 20, 30)
    assert inspect_image(path).format == "png" and inspect_image(path).width == 30
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ImageError, match="truncated PNG"):
        inspect_image(path)
    # Damage in the middle of a JPEG keeps the header and the end marker: only a full decode can tell.
    jpeg = write_image(tmp_path / "y.jpg", 64, 64)
    raw = bytearray(jpeg.read_bytes())
    start = raw.index(b"\xff\xda")  # start of scan
    raw[start + 2 : start + 200] = b"\xff" * 198
    raw[start + 200 : -2] = b""
    jpeg.write_bytes(bytes(raw) + b"\xff\xd9")
    inspect_image(jpeg)  # header check passes
    with pytest.raises(ImageError):
        inspect_image(jpeg, verify="decode")


def test_annotation_without_image_file_and_without_annotation(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", (1, 1, 10, 10), False)]})  # one class: a usable set
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nghost\n")
    with pytest.raises(DataError, match=r"ghost\.xml: image 'ghost': annotation file not found"):
        load_dataset(f"voc:{root}:train")
    assert load_dataset(f"voc:{root}:train", skip_bad=True).skipped.counts() == {"missing_annotation": 1}


def test_size_mismatch(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": []}, size=(64, 48))
    write_image(root / "JPEGImages" / "a.jpg", 50, 64)  # the file is not what the XML says
    with pytest.raises(DataError, match="annotation says 64x48 but the image is 64x50"):
        load_dataset(f"voc:{root}:train")


@pytest.mark.parametrize(
    "box, reason",
    [
        ((30, 5, 10, 20), "box_inverted"),
        ((10, 5, 10, 20), "box_zero_area"),
        ((70, 5, 90, 20), "box_outside_image"),
        ((-20, 5, 30, 20), "box_outside_image"),  # overhangs by 20 px > 10% of 64
        ((np.nan, 5, 30, 20), "box_not_finite"),
    ],
)
def test_bad_boxes(box, reason):
    with pytest.raises(DataError, match=r"ann\.xml: object 0: box .*"):
        check_boxes(np.array([box]), 64, 48, SkipReport(), "ann.xml", ["object 0"])
    report = SkipReport(skip_bad=True)
    boxes, keep = check_boxes(
        np.array([box, (1, 1, 5, 5)]), 64, 48, report, "ann.xml", ["object 0", "object 1"]
    )
    assert report.counts() == {reason: 1} and keep.tolist() == [False, True]
    np.testing.assert_array_equal(boxes, [[1, 1, 5, 5]])


def test_overhang_is_clipped_and_edge_boxes_kept():
    report = SkipReport()
    boxes, keep = check_boxes(
        np.array([(-3, 0, 20, 48), (50, 10, 66, 50), (0, 0, 64, 48)]), 64, 48, report, "f", ["0", "1", "2"]
    )
    assert keep.all() and report.clipped == 2 and len(report) == 0
    np.testing.assert_array_equal(boxes, [[0, 0, 20, 48], [50, 10, 64, 48], [0, 0, 64, 48]])


def test_exif_orientation_from_header(tmp_path):
    path = write_image(tmp_path / "o.jpg", 20, 30)
    raw = path.read_bytes()
    tiff = (
        b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    )
    app1 = b"\xff\xe1" + struct.pack(">H", len(tiff) + 8) + b"Exif\x00\x00" + tiff
    path.write_bytes(raw[:2] + app1 + raw[2:])
    info = inspect_image(path)
    assert (info.width, info.height, info.orientation, info.display_size) == (30, 20, 6, (20, 30))


@pytest.mark.parametrize(
    "spec, kind, path, extra",
    [
        ("voc:/d/VOC2007:trainval", "voc", "/d/VOC2007", "trainval"),
        ("voc:/d/VOC2007", "voc", "/d/VOC2007", None),
        ("coco:/a/instances_val2017.json:/a/val2017", "coco", "/a/instances_val2017.json", "/a/val2017"),
        ("csv:a.csv:classes.csv", "csv", "a.csv", "classes.csv"),
        ("yolo:/d/data.yaml:val", "yolo", "/d/data.yaml", "val"),
        ("yolo:data.yaml", "yolo", "data.yaml", None),
        ("tfds:voc/2007:test", "tfds", "voc/2007", "test"),
        ("tfds:coco/2017", "tfds", "coco/2017", None),
        ("tfds:voc/2007:train[:10%]", "tfds", "voc/2007", "train[:10%]"),
        ("tfds:mnist:3.0.1:test", "tfds", "mnist:3.0.1", "test"),
    ],
)
def test_parse_spec(spec, kind, path, extra):
    parsed = parse_spec(spec)
    assert (parsed.format, parsed.path, parsed.extra) == (kind, path, extra)


@pytest.mark.parametrize(
    "spec", ["voc", "foo:bar", "csv:only.csv", "coco:", "voc:a:b:c", "yolo:a.yaml:val:x"]
)
def test_parse_spec_rejects(spec):
    with pytest.raises(ValueError, match="expected voc:DIR"):
        parse_spec(spec)
