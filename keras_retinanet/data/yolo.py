"""YOLO txt reader in the Ultralytics dataset layout (https://docs.ultralytics.com/datasets/detect/), as
Roboflow, CVAT and Label Studio export it::

    data.yaml           path: ../datasets/x   # dataset root; absent: the YAML's directory
                        train: images/train   # a folder, a .txt list of image paths, or a list of either
                        val: images/val
                        names: [cat, dog]     # or {0: cat, 1: dog}; optional nc must equal len(names)
    images/train/a.jpg
    labels/train/a.txt  # one "class cx cy w h" line per box, normalised to 0..1 by the image's width/height

An image's label file is its path with the last ``/images/`` made ``/labels/`` and the suffix ``.txt``; missing
or empty: a negative example. A line of more than five values is a polygon; its box is the vertices' extent.
A relative ``path`` is taken from the YAML's directory; a split entry starting with ``../`` that does not exist
is retried without it (Roboflow's layout, as Ultralytics does). Bad label lines are bad records naming the file
and line; a bad YAML makes the whole dataset unreadable.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence

import yaml

from keras_retinanet.data.dataset import ExampleBuilder, require_path
from keras_retinanet.data.images import ImageError, inspect_image
from keras_retinanet.data.validation import DataError, SkipReport

SPLITS = ("train", "val", "test")
# Ultralytics' IMG_FORMATS that may sit in an images folder; formats the pipeline cannot decode are listed
# anyway, so that they are reported as bad records rather than silently left out.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".dng", ".mpo")
# Normalised corners this close outside 0..1 are taken as on the edge (rounded label values, see read_yolo).
ROUNDING = 1e-5


class _Yaml12BoolLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: only true/false, so that classes named no, off, yes or on
    stay names (YAML 1.1, PyYAML's default, reads them as False/True)."""


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_data_yaml(yaml_file: str) -> dict:
    """The YAML as a mapping, with ``names`` checked and turned into a list (``names[k]`` is class ``k``).

    Raises:
        DataError: not YAML, not a mapping, no ``names``, names that are not ids 0..N-1 or not unique strings,
            or an ``nc`` that disagrees.
    """
    require_path(yaml_file, "YOLO data YAML")
    try:
        with open(yaml_file, encoding="utf-8-sig") as f:
            data = yaml.load(f, Loader=_Yaml12BoolLoader)  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{yaml_file}: not a readable YAML file ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise DataError(f"{yaml_file}: the top level is {type(data).__name__}, not a mapping with 'names'")
    names = data.get("names")
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DataError(f"{yaml_file}: 'names' keys {list(names)} are not integer class ids") from None
        if ids != list(range(len(names))):
            raise DataError(f"{yaml_file}: 'names' ids {ids} are not 0..{len(names) - 1} (YOLO class ids)")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list):
        raise DataError(
            f"{yaml_file}: 'names' is {type(names).__name__}, not a list or an id -> name mapping"
        )
    names = [
        str(n).strip() if isinstance(n, (str, int, float)) and not isinstance(n, bool) else n for n in names
    ]
    for k, name in enumerate(names):
        if isinstance(name, bool):
            raise DataError(
                f"{yaml_file}: names[{k}] is the YAML boolean {name}: quote it ('{name}') for a name"
            )
        if not isinstance(name, str) or not name:
            raise DataError(f"{yaml_file}: names[{k}] {name!r} is not a non-empty name")
    if len(set(names)) != len(names):
        raise DataError(f"{yaml_file}: 'names' has duplicates: {names}")
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise DataError(f"{yaml_file}: nc {nc!r} but 'names' lists {len(names)} classes")
    data["names"] = names
    return data


def _root(yaml_file: str, data: dict) -> str:
    here = os.path.dirname(os.path.abspath(yaml_file))
    path = data.get("path")
    if path in (None, ""):
        return here
    if not isinstance(path, str):
        raise DataError(f"{yaml_file}: 'path' {path!r} is not a string")
    return os.path.normpath(os.path.join(here, os.path.expanduser(path)))


def _resolve(root: str, entry: str) -> str:
    path = os.path.normpath(os.path.join(root, os.path.expanduser(entry)))
    if not os.path.exists(path) and entry.startswith("../"):
        retry = os.path.normpath(os.path.join(root, entry[3:]))
        if os.path.exists(retry):
            return retry
    return path


def split_images(yaml_file: str, data: dict, split: str) -> list[str]:
    """Image paths of one split, in a stable order: folders sorted (recursively), list files in their order.

    Raises:
        DataError: the split is not in the YAML, or an entry is not a string; FileNotFoundError: a folder or list
            file that does not exist.
    """
    entries = data.get(split)
    if entries in (None, "", []):
        present = [s for s in data if s in SPLITS and data[s]]
        raise DataError(f"{yaml_file}: no {split!r} split (splits given: {', '.join(present) or 'none'})")
    root = _root(yaml_file, data)
    images = []
    for entry in entries if isinstance(entries, list) else [entries]:
        if not isinstance(entry, str):
            raise DataError(f"{yaml_file}: {split} entry {entry!r} is not a path")
        path = _resolve(root, entry)
        require_path(path, f"YOLO {split!r} images folder or list file ({entry})")
        if os.path.isdir(path):
            found = glob.glob(os.path.join(glob.escape(path), "**", "*"), recursive=True)
            images += sorted(p for p in found if p.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(p))
        else:
            base = os.path.dirname(path)
            try:
                with open(path, encoding="utf-8") as f:
                    lines = [line.strip() for line in f]
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not a text file of image paths ({e})") from None
            images += [os.path.normpath(os.path.join(base, line)) for line in lines if line]
    return images


def label_path(image_path: str) -> str:
    """``.../images/x/a.jpg`` -> ``.../labels/x/a.txt`` (the last ``images`` folder of the path)."""
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = image_path.rpartition(images)
    path = head + labels + tail if sep else image_path
    return os.path.splitext(path)[0] + ".txt"


def _label_lines(path: str, names: Sequence[str], report: SkipReport) -> list[tuple]:
    """``(record, class_name, (cx, cy, w, h) normalised)`` per good line; bad lines go to ``report``."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # a BOM, as Windows editors write it, is not a class id
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        report.bad("bad_annotation", path, "label file", f"not a text file ({e})")
        return []
    objects = []
    for number, line in enumerate(lines, 1):
        values = line.split()
        if not values:
            continue
        record = f"line {number}"
        if len(values) < 5 or (len(values) > 5 and (len(values) < 7 or len(values) % 2 == 0)):
            message = f"expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...', got {len(values)} values"
            report.bad("bad_row", path, record, message, level="box")
            continue
        try:
            coords = [float(v) for v in values[1:]]
        except ValueError:
            report.bad("bad_box", path, record, f"coordinates {values[1:]} are not numbers", level="box")
            continue
        try:
            cls = int(values[0])
        except ValueError:
            cls = -1
        if not 0 <= cls < len(names):
            message = f"class {values[0]!r} is not an integer id in 0..{len(names) - 1}"
            report.bad("unknown_class", path, record, message, level="box")
            continue
        if len(coords) == 4:
            cx, cy, w, h = coords
        else:  # polygon: its extent
            xs, ys = coords[0::2], coords[1::2]
            cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
            w, h = max(xs) - min(xs), max(ys) - min(ys)
        objects.append((f"{record} ({names[cls]})", names[cls], (cx, cy, w, h)))
    return objects


def _display_size(image_path: str, verify: str, exif_orientation: bool) -> tuple[int, int] | None:
    """(width, height) the labels are normalised by: the image as shown (EXIF-rotated, as Ultralytics'
    ``exif_size``), or None when unknown (the example builder then reports the image)."""
    if verify == "none":
        return None
    try:
        info = inspect_image(image_path, verify="header")
    except ImageError:
        return None
    return info.display_size if exif_orientation else (info.width, info.height)


def read_yolo(
    yaml_file: str,
    split: str | None,
    report: SkipReport,
    class_names: Sequence[str] | None = None,
    verify: str = "header",
    exif_orientation: bool = True,
) -> tuple[list[dict], list[str]]:
    """Reads one split (default ``train``) of a YOLO dataset.

    Returns:
        (common examples in image order, class names: the YAML's ``names`` unless ``class_names`` is given,
        then label ids are mapped by name).
    """
    data = read_data_yaml(yaml_file)
    names = data["names"]
    class_names = list(class_names) if class_names is not None else names
    builder = ExampleBuilder(class_names, report, verify, exif_orientation)
    for index, image_path in enumerate(split_images(yaml_file, data, split or "train")):
        labels = label_path(image_path)
        objects = _label_lines(labels, names, report) if os.path.isfile(labels) else []
        size = _display_size(image_path, verify, exif_orientation) if objects else None
        records = []
        if size is not None:
            width, height = size
            for record, name, (cx, cy, w, h) in objects:
                corners = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
                # A box on the image edge written with 6 decimals (Roboflow, Ultralytics, data convert) can end
                # 1e-6 past it: rounding, not an overhang to count as clipped.
                corners = [min(max(v, 0.0), 1.0) if -ROUNDING < v < 1 + ROUNDING else v for v in corners]
                box = (corners[0] * width, corners[1] * height, corners[2] * width, corners[3] * height)
                records.append((record, name, box, False))
        # Without a size the image itself is bad: the builder reports it (its boxes go with it).
        builder.build(image_path, index, records, labels, f"image {os.path.basename(image_path)!r}")
    return builder.examples, class_names
