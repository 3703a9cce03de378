"""CSV reader in fizyr keras-retinanet's format, so its users can bring their data unchanged.

Annotations: one box per row, ``path,x1,y1,x2,y2,class_name`` (absolute pixels, xyxy); ``path,,,,,`` is an
image without objects (a negative example). Relative paths are relative to the CSV file's directory. Rows of
one image need not be adjacent. Classes: ``class_name,id`` rows; ids need not be contiguous, class ids follow
their order.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

from keras_retinanet.data.dataset import ExampleBuilder, require_path
from keras_retinanet.data.validation import DataError, SkipReport


def _rows(path: str):
    """(line number, row) of the non-empty rows of a CSV file; DataError when it is not a readable CSV text."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(enumerate(csv.reader(f), 1))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV text file ({e})") from None
    return [(line, row) for line, row in rows if row and "".join(row).strip()]


def read_classes_csv(path: str) -> list[str]:
    """Class names ordered by their id from a ``class_name,id`` file.

    Raises:
        DataError: a row that is not ``class_name,id`` (an integer id, a non-empty name), or a name or id used
            twice; naming the file and the line. A classes file is never partly usable.
    """
    require_path(path, "CSV classes file")
    pairs, lines = [], {}
    for line, row in _rows(path):
        name = row[0].strip() if len(row) == 2 else ""
        try:
            cid = int(row[1]) if len(row) == 2 else None
        except ValueError:
            cid = None
        if cid is None or not name:
            raise DataError(f"{path}: line {line}: expected 'class_name,id' (an integer id), got {row}")
        for key, value in (("name", name), ("id", cid)):
            if (key, value) in lines:
                raise DataError(
                    f"{path}: line {line}: class {key} {value!r} is used twice (also on line {lines[key, value]})"
                )
            lines[key, value] = line
        pairs.append((cid, name))
    return [n for _, n in sorted(pairs)]


def read_csv(
    annotation_file: str,
    classes_file: str,
    report: SkipReport,
    class_names: Sequence[str] | None = None,
    verify: str = "header",
    exif_orientation: bool = True,
) -> tuple[list[dict], list[str]]:
    """Reads fizyr-style CSV annotations. Returns (common examples in first-appearance order, class names)."""
    require_path(annotation_file, "CSV annotation file")
    class_names = list(class_names) if class_names is not None else read_classes_csv(classes_file)
    builder = ExampleBuilder(class_names, report, verify, exif_orientation)
    base = os.path.dirname(os.path.abspath(annotation_file))
    images: dict[str, list] = {}
    for line, row in _rows(annotation_file):
        record = f"line {line}"
        if len(row) != 6:
            message = f"expected 'path,x1,y1,x2,y2,class_name', got {len(row)} columns"
            report.bad("bad_row", annotation_file, record, message, level="box")
            continue
        path, *coords, name = (v.strip() for v in row)
        if not path:
            report.bad("bad_row", annotation_file, record, "the image path is empty", level="box")
            continue
        path = path if os.path.isabs(path) else os.path.join(base, path)
        objects = images.setdefault(path, [])
        if not any(coords) and not name:
            continue  # an image without objects
        try:
            box = tuple(float(v) for v in coords)
        except ValueError:
            message = f"coordinates {coords} are not numbers"
            report.bad("bad_box", annotation_file, record, message, level="box")
            continue
        objects.append((f"{record} ({name})", name, box, False))
    for index, (path, objects) in enumerate(images.items()):
        builder.build(path, index, objects, annotation_file, f"image {os.path.basename(path)!r}")
    return builder.examples, class_names
