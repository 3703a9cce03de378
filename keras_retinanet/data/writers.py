"""Writes a loaded :class:`~keras_retinanet.data.dataset.Dataset` as COCO, YOLO or Pascal VOC (``retinanet data
convert``); each writer returns the spec that reads its output back to the same boxes (within 1e-3 px) and names.

Layouts (``SPLIT`` is one split; more splits can be written into the same ``out`` folder):

- ``coco``: ``out/annotations/instances_SPLIT.json`` and ``out/SPLIT/``; category ids 1..K in class order,
  image ids kept, ignore boxes as ``iscrowd: 1``.
- ``yolo``: ``out/data.yaml`` (``names``, ``SPLIT: images/SPLIT``, no ``path``: the YAML's folder is the root),
  ``out/images/SPLIT/``, ``out/labels/SPLIT/*.txt`` (``class cx cy w h``, 6 decimals). Ignore boxes are left
  out and counted. An existing ``data.yaml`` gets the split added; its names must be the same.
- ``voc``: ``out/Annotations/*.xml``, ``out/JPEGImages/``, ``out/ImageSets/Main/SPLIT.txt``; 1-based inclusive
  coordinates with up to 3 decimals (``xmin = x1 + 1``, ``xmax = x2``); a box 1 px wide or less is a bad
  record; ignore boxes as ``<difficult>1``. Classes without boxes are not kept (VOC has no class list).

Images are copied as they are, sizes are those the model sees; file names get an index prefix where two share a
name or stem. Every file is staged in ``out/.retinanet-convert-SPLIT/`` with a manifest, then moved into place
(the split's index last); a file already in ``out`` is replaced only with ``overwrite`` (an identical one is
kept); a rerun finishes or restarts a killed convert; ``out/.convert.lock`` refuses a second convert at once
(docs/reliability.md).
"""

from __future__ import annotations

import filecmp
import functools
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import yaml

from keras_retinanet import atomic
from keras_retinanet.data.dataset import Dataset
from keras_retinanet.data.images import ImageError, inspect_image
from keras_retinanet.data.validation import DataError, SkipReport

FORMATS = ("coco", "yolo", "voc")
STAGING_PREFIX = ".retinanet-convert-"
MANIFEST = "manifest.json"
LOCK = ".convert.lock"
# A split name becomes a file and folder name: letters, digits and . _ - only, not starting with a dot.
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class _Files:
    """The files one convert writes, relative to ``out``: image copies and text, in the order they are moved
    into place (the split's index file last)."""

    def __init__(self) -> None:
        # (relative path, "copy" | "text", source path | text, whether it may replace an existing file)
        self.entries: list[tuple[str, str, str, bool]] = []

    def copy(self, relative: str, source: str) -> None:
        self.entries.append((relative, "copy", source, False))

    def text(self, relative: str, text: str, merged: bool = False) -> None:
        """``merged``: the text already holds the existing file's content (``data.yaml`` with a split added)."""
        self.entries.append((relative, "text", text, merged))


def check_split_name(split: str) -> str:
    if not _SPLIT_NAME.fullmatch(split):
        raise ValueError(
            f"--split {split!r}: a split name is one file name of letters, digits, '.', '_' or '-' (e.g. train, "
            "val2017); it may not hold a path"
        )
    return split


def _unique_names(paths: Sequence[str]) -> list[str]:
    """Output file names: each path's base name, prefixed with its index where a name or stem repeats."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    repeated = {s for s in stems if stems.count(s) > 1} if len(set(stems)) < len(stems) else set()
    return [
        f"{k:06d}_{os.path.basename(p)}" if stem in repeated else os.path.basename(p)
        for k, (p, stem) in enumerate(zip(paths, stems, strict=True))
    ]


def _image_names(dataset: Dataset) -> list[str]:
    if dataset.encoded_images is not None:
        raise DataError(f"{dataset.name}: images without files (TFDS) cannot be converted; use a file format")
    return _unique_names([ex["image_path"] for ex in dataset.examples])


def _number(value: float, decimals: int) -> float | int:
    """``value`` rounded for writing; an integer when it is one (``12`` rather than ``12.0``)."""
    value = round(float(value), decimals)
    return int(value) if value.is_integer() else value


def _same_content(path: str, kind: str, payload: str) -> bool:
    if kind == "copy":
        return filecmp.cmp(payload, path, shallow=False)
    with open(path, "rb") as f:
        return f.read() == payload.encode("utf-8")


def _write_staged(
    dataset: Dataset, format_name: str, out: str, split: str, files: _Files, overwrite: bool
) -> None:
    """Stages ``files`` in ``out/.retinanet-convert-SPLIT/`` and moves them into ``out`` (module docstring)."""
    request = {"source": dataset.name, "format": format_name, "split": split, "images": len(dataset)}
    staging = os.path.join(out, STAGING_PREFIX + split)
    manifest_path = os.path.join(staging, MANIFEST)
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest["request"] != request:
            raise FileExistsError(
                f"{staging} holds a convert that was interrupted ({manifest['request']['source']} to "
                f"{manifest['request']['format']}): rerun that command to finish it, or delete that folder"
            )
        print(
            f"finishing the convert that was interrupted: {len(manifest['files'])} files staged in {staging}"
        )
        _move_into_place(out, staging, manifest["files"])
        return
    if os.path.isdir(staging):
        print(f"removing {staging}: the incomplete staging of a convert killed before it finished")
        shutil.rmtree(staging)
    entries = []
    for relative, kind, payload, merged in files.entries:
        destination = os.path.join(out, relative)
        if os.path.isfile(destination) and _same_content(destination, kind, payload):
            continue  # the same photo from another split, the source image itself, or a finished rerun
        if os.path.lexists(destination) and not (overwrite or merged):
            raise FileExistsError(
                f"{destination} already exists with other content (this convert did not write it): choose "
                "another output folder or split name, or pass --overwrite to replace it"
            )
        entries.append((relative, kind, payload, merged))
    for relative, kind, payload, _ in entries:
        target = os.path.join(staging, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if kind == "copy":
            shutil.copyfile(payload, target)
        else:
            with open(target, "w", encoding="utf-8") as f:
                f.write(payload)
    moved = [relative for relative, *_ in entries]
    if not moved:
        print(f"nothing to write: {out} already holds this split, file for file")
    atomic.write_json(manifest_path, {"request": request, "files": moved})
    atomic.kill_point("convert:staged")
    _move_into_place(out, staging, moved)


def _move_into_place(out: str, staging: str, files: Sequence[str]) -> None:
    for relative in files:
        source = os.path.join(staging, relative)
        if os.path.exists(source):  # else moved before a kill
            os.makedirs(os.path.dirname(os.path.join(out, relative)), exist_ok=True)
            os.replace(source, os.path.join(out, relative))
            atomic.kill_point("convert:moved")
    shutil.rmtree(staging)


def _under_lock(writer):
    """Runs ``writer(dataset, out, split, ...)`` with a checked split name, holding ``out``'s convert lock: what it
    reads there (an existing ``data.yaml``) cannot change before it has written."""

    @functools.wraps(writer)
    def locked_writer(dataset: Dataset, out: str, split: str, *args, **kwargs):
        check_split_name(split)
        with atomic.locked_folder(out, LOCK, "another retinanet data convert"):
            return writer(dataset, out, split, *args, **kwargs)

    return locked_writer


@_under_lock
def write_coco(dataset: Dataset, out: str, split: str, overwrite: bool = False) -> str:
    """Writes ``out/annotations/instances_SPLIT.json`` and ``out/SPLIT/``; returns the spec that reads it."""
    annotation_file = os.path.join("annotations", f"instances_{split}.json")
    names = _image_names(dataset)
    files = _Files()
    images, annotations = [], []
    for ex, name in zip(dataset.examples, names, strict=True):
        files.copy(os.path.join(split, name), ex["image_path"])
        images.append({"id": ex["image_id"], "file_name": name, "width": ex["width"], "height": ex["height"]})
        for (x1, y1, x2, y2), cls, ignore in zip(ex["boxes"], ex["classes"], ex["ignore"], strict=True):
            w, h = float(x2) - float(x1), float(y2) - float(y1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": ex["image_id"],
                    "category_id": int(cls) + 1,
                    "bbox": [_number(v, 4) for v in (x1, y1, w, h)],
                    "area": _number(w * h, 4),
                    "iscrowd": int(ignore),
                    "segmentation": [],
                }
            )
    # supercategory "" names no category, so no class is taken for a parent placeholder on reading.
    categories = [{"id": k + 1, "name": n, "supercategory": ""} for k, n in enumerate(dataset.class_names)]
    files.text(
        annotation_file, json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    _write_staged(dataset, "coco", out, split, files, overwrite)
    return f"coco:{os.path.join(out, annotation_file)}:{os.path.join(out, split)}"


def _check_yolo_orientation(ex: dict) -> None:
    # YOLO readers normalise by the image as shown (EXIF applied); an example read without its EXIF rotation
    # would come back rotated.
    if ex["orientation"] != 1:
        return
    try:
        orientation = inspect_image(ex["image_path"]).orientation
    except ImageError:
        return
    if orientation != 1:
        raise DataError(
            f"{ex['image_path']}: its EXIF orientation {orientation} was not applied by the source annotation, "
            "but YOLO readers apply it: re-save the image without EXIF orientation first"
        )


@_under_lock
def write_yolo(dataset: Dataset, out: str, split: str, overwrite: bool = False) -> tuple[str, int]:
    """Writes ``out/images/SPLIT``, ``out/labels/SPLIT`` and adds SPLIT to ``out/data.yaml``.

    Returns:
        (the spec that reads it, the number of ignore boxes left out).
    """
    data_yaml = os.path.join(out, "data.yaml")
    config = {"names": dict(enumerate(dataset.class_names))}
    if os.path.exists(data_yaml):
        from keras_retinanet.data.yolo import read_data_yaml

        existing = read_data_yaml(data_yaml)
        if existing["names"] != list(dataset.class_names):
            raise DataError(
                f"{data_yaml}: its names {existing['names']} differ from this dataset's {dataset.class_names}"
            )
        with open(data_yaml, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    names = _image_names(dataset)
    label_names = [os.path.splitext(name)[0] + ".txt" for name in names]
    if config.get(split) and not overwrite:
        # data.yaml is merged, not replaced: a split written before from other images would silently mix.
        label_dir = os.path.join(out, "labels", split)
        if set(os.listdir(label_dir) if os.path.isdir(label_dir) else []) != set(label_names):
            raise FileExistsError(
                f"{data_yaml} already has a {split!r} split with other images: choose another split name, or "
                "pass --overwrite to write over it"
            )
    for ex in dataset.examples:
        _check_yolo_orientation(ex)
    files = _Files()
    left_out = 0
    for ex, name, label_name in zip(dataset.examples, names, label_names, strict=True):
        files.copy(os.path.join("images", split, name), ex["image_path"])
        width, height = ex["width"], ex["height"]
        lines = []
        for (x1, y1, x2, y2), cls, ignore in zip(ex["boxes"], ex["classes"], ex["ignore"], strict=True):
            if ignore:
                left_out += 1
                continue
            cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            w, h = (x2 - x1) / width, (y2 - y1) / height
            lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        # an empty file: an image without objects
        files.text(os.path.join("labels", split, label_name), "".join(lines))
    config[split] = f"images/{split}"
    files.text("data.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True), merged=True)
    _write_staged(dataset, "yolo", out, split, files, overwrite)
    return f"yolo:{data_yaml}:{split}", left_out


@_under_lock
def write_voc(
    dataset: Dataset, out: str, split: str, skip_bad: bool = False, overwrite: bool = False
) -> tuple[str, SkipReport]:
    """Writes ``out/Annotations``, ``out/JPEGImages`` and ``out/ImageSets/Main/SPLIT.txt``.

    Returns:
        (the spec that reads it, the boxes that could not be written: raises unless ``skip_bad``).
    Raises:
        DataError: a box 1 px wide or high or less (unless ``skip_bad``).
    """
    split_file = os.path.join("ImageSets", "Main", f"{split}.txt")
    names = _image_names(dataset)
    report = SkipReport(skip_bad)
    files = _Files()
    stems = []
    for ex, name in zip(dataset.examples, names, strict=True):
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "JPEGImages"
        ET.SubElement(root, "filename").text = name
        size = ET.SubElement(root, "size")
        for key, value in (("width", ex["width"]), ("height", ex["height"]), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        ET.SubElement(root, "segmented").text = "0"
        for k, (box, cls, ignore) in enumerate(zip(ex["boxes"], ex["classes"], ex["ignore"], strict=True)):
            class_name = dataset.class_names[int(cls)]
            x1, y1, x2, y2 = (float(v) for v in box)
            if x2 - x1 <= 1 or y2 - y1 <= 1:
                report.bad(
                    "box_too_small_for_voc",
                    ex["image_path"],
                    f"box {k} ({class_name})",
                    f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is 1 px wide or high or less: VOC's 1-based "
                    "inclusive coordinates would make it zero-area",
                    level="box",
                )
                continue
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = class_name
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = str(int(ignore))
            bndbox = ET.SubElement(obj, "bndbox")
            for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                ET.SubElement(bndbox, key).text = f"{_number(value, 3)}"
        stem = os.path.splitext(name)[0]
        stems.append(stem)
        ET.indent(root)
        files.copy(os.path.join("JPEGImages", name), ex["image_path"])
        files.text(os.path.join("Annotations", f"{stem}.xml"), ET.tostring(root, encoding="unicode") + "\n")
    files.text(split_file, "".join(f"{stem}\n" for stem in stems))
    _write_staged(dataset, "voc", out, split, files, overwrite)
    return f"voc:{out}:{split}", report
