"""Writes a loaded :class:`~keras_retinanet.data.dataset.Dataset` as COCO, YOLO or Pascal VOC, so that a dataset
can move between labelling tools and trainers (``retinanet data convert``). Each writer's output reads back with
the matching spec (returned) to the same boxes (within 1e-3 px) and class names.

Layouts (``SPLIT`` is one split of the dataset; more splits can be written into the same ``out`` folder):

- ``coco``: ``out/annotations/instances_SPLIT.json`` and the images in ``out/SPLIT/`` (COCO 2017's layout).
  Category ids 1..K in class order; image ids kept; ignore boxes (VOC difficult) become ``iscrowd: 1``.
- ``yolo``: ``out/data.yaml`` (``names``, ``SPLIT: images/SPLIT``; no ``path``, so the YAML's folder is the root
  for this package and for Ultralytics), ``out/images/SPLIT/`` and ``out/labels/SPLIT/*.txt`` with
  ``class cx cy w h`` normalised to 6 decimals (1e-6 of the side: under 0.01 px below 10,000 px). YOLO has no
  ignore flag: ignore boxes are left out and counted. An existing ``data.yaml`` gets the split added; its names
  must be the same.
- ``voc``: ``out/Annotations/*.xml``, ``out/JPEGImages/``, ``out/ImageSets/Main/SPLIT.txt``. Coordinates are
  1-based inclusive (``xmin = x1 + 1``, ``xmax = x2``), written with up to 3 decimals rather than rounded to
  integers so that the boxes survive. VOC has no class list: classes without boxes are not kept, and the reader
  sorts the names. A box 1 px wide or less cannot be written (``xmax <= xmin`` reads back as zero-area): a bad
  record. Ignore boxes become ``<difficult>1``.

Images are copied as they are (EXIF and all); annotation sizes are those of the image as the model sees it, which
is what every reader here (and Ultralytics) uses. File names stay the source's, made unique by an index prefix
when two images share a name or stem.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import yaml

from keras_retinanet.data.dataset import Dataset
from keras_retinanet.data.images import ImageError, inspect_image
from keras_retinanet.data.validation import DataError, SkipReport

FORMATS = ("coco", "yolo", "voc")


def _unique_names(paths: Sequence[str]) -> list[str]:
    """Output file names: each path's base name, prefixed with its index where a name or stem repeats."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    repeated = {s for s in stems if stems.count(s) > 1} if len(set(stems)) < len(stems) else set()
    return [
        f"{k:06d}_{os.path.basename(p)}" if stem in repeated else os.path.basename(p)
        for k, (p, stem) in enumerate(zip(paths, stems, strict=True))
    ]


def _copy_images(dataset: Dataset, folder: str) -> list[str]:
    if dataset.encoded_images is not None:
        raise DataError(f"{dataset.name}: images without files (TFDS) cannot be converted; use a file format")
    os.makedirs(folder, exist_ok=True)
    names = _unique_names([ex["image_path"] for ex in dataset.examples])
    for ex, name in zip(dataset.examples, names, strict=True):
        shutil.copyfile(ex["image_path"], os.path.join(folder, name))
    return names


def _refuse_existing(path: str) -> None:
    if os.path.exists(path):
        raise FileExistsError(f"{path} already exists: choose another split name or output folder")


def _number(value: float, decimals: int) -> float | int:
    """``value`` rounded for writing; an integer when it is one (``12`` rather than ``12.0``)."""
    value = round(float(value), decimals)
    return int(value) if value.is_integer() else value


def write_coco(dataset: Dataset, out: str, split: str) -> str:
    """Writes ``out/annotations/instances_SPLIT.json`` and ``out/SPLIT/``; returns the spec that reads it."""
    annotation_file = os.path.join(out, "annotations", f"instances_{split}.json")
    _refuse_existing(annotation_file)
    image_dir = os.path.join(out, split)
    names = _copy_images(dataset, image_dir)
    images, annotations = [], []
    for ex, name in zip(dataset.examples, names, strict=True):
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
    os.makedirs(os.path.dirname(annotation_file), exist_ok=True)
    with open(annotation_file, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return f"coco:{annotation_file}:{image_dir}"


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


def write_yolo(dataset: Dataset, out: str, split: str) -> tuple[str, int]:
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
        if existing.get(split):
            raise FileExistsError(f"{data_yaml} already has a {split!r} split: choose another split name")
        with open(data_yaml, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    label_dir = os.path.join(out, "labels", split)
    _refuse_existing(label_dir)
    for ex in dataset.examples:
        _check_yolo_orientation(ex)
    names = _copy_images(dataset, os.path.join(out, "images", split))
    os.makedirs(label_dir)
    left_out = 0
    for ex, name in zip(dataset.examples, names, strict=True):
        width, height = ex["width"], ex["height"]
        lines = []
        for (x1, y1, x2, y2), cls, ignore in zip(ex["boxes"], ex["classes"], ex["ignore"], strict=True):
            if ignore:
                left_out += 1
                continue
            cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            w, h = (x2 - x1) / width, (y2 - y1) / height
            lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        with open(os.path.join(label_dir, os.path.splitext(name)[0] + ".txt"), "w", encoding="utf-8") as f:
            f.writelines(lines)  # an empty file: an image without objects
    config[split] = f"images/{split}"
    with open(data_yaml, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False, allow_unicode=True)
    return f"yolo:{data_yaml}:{split}", left_out


def write_voc(dataset: Dataset, out: str, split: str, skip_bad: bool = False) -> tuple[str, SkipReport]:
    """Writes ``out/Annotations``, ``out/JPEGImages`` and ``out/ImageSets/Main/SPLIT.txt``.

    Returns:
        (the spec that reads it, the boxes that could not be written: raises unless ``skip_bad``).
    Raises:
        DataError: a box 1 px wide or high or less (unless ``skip_bad``).
    """
    split_file = os.path.join(out, "ImageSets", "Main", f"{split}.txt")
    _refuse_existing(split_file)
    names = _unique_names([ex["image_path"] for ex in dataset.examples])
    for name in names:
        _refuse_existing(os.path.join(out, "Annotations", os.path.splitext(name)[0] + ".xml"))
    report = SkipReport(skip_bad)
    documents = []
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
        documents.append((os.path.splitext(name)[0], root))
    _copy_images(dataset, os.path.join(out, "JPEGImages"))
    os.makedirs(os.path.join(out, "Annotations"), exist_ok=True)
    for stem, root in documents:
        ET.indent(root)
        ET.ElementTree(root).write(os.path.join(out, "Annotations", f"{stem}.xml"), encoding="utf-8")
    os.makedirs(os.path.dirname(split_file), exist_ok=True)
    with open(split_file, "w", encoding="utf-8") as f:
        f.writelines(f"{stem}\n" for stem, _ in documents)
    return f"voc:{out}:{split}", report
