"""Pascal VOC reader: Annotations/*.xml, JPEGImages/, ImageSets/Main/SPLIT.txt.

VOC coordinates are 1-based and inclusive (a box over the whole 640-pixel width is xmin=1, xmax=640). They
become 0-based continuous xyxy as in detectron2: ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``.
A box with ``xmax == xmin`` (a single click, e.g. two BCCD boxes) is reported as zero-area, checked on the
raw values. ``difficult`` objects are kept with ``ignore=True``.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from keras_retinanet.data.dataset import ExampleBuilder, require_path
from keras_retinanet.data.validation import DataError, SkipReport

# What ElementTree raises for a file that is not well-formed XML or declares an unknown encoding.
XML_ERRORS = (ET.ParseError, ValueError, LookupError)


def _image_ids(root: str, split: str | None) -> list[str]:
    if split is None:
        return sorted(
            os.path.splitext(os.path.basename(p))[0] for p in glob.glob(f"{root}/Annotations/*.xml")
        )
    split_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    require_path(split_file, f"VOC split {split!r} (ImageSets/Main/{split}.txt)")
    try:
        with open(split_file, encoding="utf-8-sig") as f:
            lines = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise DataError(f"{split_file}: not a text file of image ids ({e})") from None
    return [_image_id(root, line) for line in lines]


def _image_id(root: str, line: str) -> str:
    """The image id of one split-file line: the whole line when an annotation has that name (ids may hold
    spaces), else its first word (class-specific split files add a column: ``000005 -1``)."""
    if os.path.isfile(os.path.join(root, "Annotations", f"{line}.xml")):
        return line
    return line.split()[0]


def _size(size, key: str) -> int:
    """``<size><width>`` / ``<height>`` as an int; 0 when absent or empty (then read from the image)."""
    text = (size.findtext(key) or "").strip() if size is not None else ""
    if not text:
        return 0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"<size><{key}> {text!r} is not a number") from None
    if not (value.is_integer() and 0 <= value < 2**63):
        raise ValueError(f"<size><{key}> {text!r} is not a non-negative integer")
    return int(value)


def _parse(path: str):
    """Returns (filename, width, height, [(name, difficult, (xmin, ymin, xmax, ymax) raw strings)]).

    Raises:
        ET.ParseError, ValueError, LookupError: not well-formed XML, or a size that is not an integer.
    """
    tree = ET.parse(path).getroot()
    size = tree.find("size")
    width, height = _size(size, "width"), _size(size, "height")
    objects = []
    for obj in tree.iter("object"):
        box = obj.find("bndbox")
        raw = tuple(box.findtext(k) if box is not None else None for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(
            ((obj.findtext("name") or "").strip(), (obj.findtext("difficult") or "0").strip(), raw)
        )
    return tree.findtext("filename"), width, height, objects


def read_voc(
    root: str,
    split: str | None,
    report: SkipReport,
    class_names: Sequence[str] | None = None,
    verify: str = "header",
    exif_orientation: bool = True,
) -> tuple[list[dict], list[str]]:
    """Reads a VOC directory. Without ``class_names``, the classes are the sorted names found in every
    annotation file of the directory (all splits), so that every split gets the same class ids.

    Returns:
        (common examples, class names).
    """
    require_path(os.path.join(root, "Annotations"), "VOC Annotations directory")
    ids = _image_ids(root, split)
    parsed = {}
    for image_id in ids:
        xml_path = os.path.join(root, "Annotations", f"{image_id}.xml")
        if not os.path.isfile(xml_path):
            report.bad("missing_annotation", xml_path, f"image {image_id!r}", "annotation file not found")
            continue
        try:
            parsed[image_id] = _parse(xml_path)
        except XML_ERRORS as e:
            report.bad("bad_annotation", xml_path, f"image {image_id!r}", f"unreadable annotation ({e})")
    if class_names is None:
        names = set()
        for path in glob.glob(os.path.join(root, "Annotations", "*.xml")):
            with contextlib.suppress(*XML_ERRORS):  # reported above if it is in the split
                names.update(
                    (o.findtext("name") or "").strip() for o in ET.parse(path).getroot().iter("object")
                )
        class_names = sorted(n for n in names if n)
    builder = ExampleBuilder(class_names, report, verify, exif_orientation)

    for index, image_id in enumerate(ids):
        if image_id not in parsed:
            continue
        filename, width, height, objects = parsed[image_id]
        xml_path = os.path.join(root, "Annotations", f"{image_id}.xml")
        image_path = os.path.join(root, "JPEGImages", filename or f"{image_id}.jpg")
        if not os.path.isfile(image_path) and os.path.isfile(
            os.path.join(root, "JPEGImages", f"{image_id}.jpg")
        ):
            image_path = os.path.join(root, "JPEGImages", f"{image_id}.jpg")  # stale <filename>
        records = []
        for k, (name, difficult, raw) in enumerate(objects):
            record = f"object {k} ({name})"
            try:
                xmin, ymin, xmax, ymax = (float(v) for v in raw)
            except (TypeError, ValueError):
                message = f"bndbox {list(raw)} is not four numbers"
                report.bad("bad_box", xml_path, record, message, level="box")
                continue
            # Non-finite values are left to check_boxes, which names them so (inf == inf is no zero area).
            if all(map(math.isfinite, (xmin, ymin, xmax, ymax))) and (xmax == xmin or ymax == ymin):
                message = f"box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) has zero width or height"
                report.bad("box_zero_area", xml_path, record, message, level="box")
                continue
            records.append((record, name, (xmin - 1, ymin - 1, xmax, ymax), difficult == "1"))
        builder.build(image_path, index, records, xml_path, f"image {image_id!r}", width, height)
    return builder.examples, list(class_names)
