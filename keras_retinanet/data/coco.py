"""COCO ``instances``-style JSON reader.

- ``bbox`` ``[x, y, w, h]`` becomes xyxy; an annotation without one takes the extent of its ``segmentation``
  (polygons, or an RLE by ``pycocotools.mask.toBbox``), else it is a bad record (``bad_box``).
- ``iscrowd`` boxes are kept with ``ignore=True`` (ignore regions, as in pycocotools); an ``ignore`` field is
  not read (pycocotools overwrites it with ``iscrowd`` too).
- Image ids are the JSON's own (so pycocotools can evaluate against the same file).
- Category ids become contiguous class ids in id order, so that every split shares them; a category that is only
  a parent (another's ``supercategory``) and has no annotation is a placeholder, not a class (Roboflow's).
- Every field's JSON type is checked; a bad image or annotation is a bad record, a bad category or a non-list
  ``images`` / ``categories`` / ``annotations`` makes the file unreadable (class ids would shift otherwise).
- A ``file_name`` leading outside the image folder is a bad record (``path_outside_image_dir``) unless
  ``allow_outside_paths``.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Sequence

from keras_retinanet.data.dataset import ExampleBuilder, require_path
from keras_retinanet.data.validation import DataError, SkipReport

# JSON ids beyond int64 cannot travel through tf.data or pycocotools' numpy arrays.
MAX_ID = 2**63 - 1


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_id(value) -> bool:
    return _is_int(value) and 0 <= value <= MAX_ID


def _size(value) -> int | None:
    """A COCO image's ``width`` / ``height``: None when unknown (absent, null or 0), else a positive int.
    Raises ValueError for anything else."""
    if value is None or (_is_number(value) and value == 0):
        return None
    if _is_int(value) and 0 < value <= MAX_ID:
        return value
    if isinstance(value, float) and value.is_integer() and 0 < value <= MAX_ID:
        return int(value)
    raise ValueError(f"{value!r} is not a positive integer")


def _categories(data: dict, annotation_file: str) -> list[dict]:
    """The ``categories`` entries, checked: dicts with a unique id and a unique, non-empty string name."""
    categories = data["categories"]
    if not isinstance(categories, list):
        raise DataError(f"{annotation_file}: 'categories' is {type(categories).__name__}, not a list")
    ids, names = {}, {}
    for k, category in enumerate(categories):
        where = f"{annotation_file}: categories[{k}]"
        if not isinstance(category, dict):
            raise DataError(f"{where}: {category!r} is not an object")
        cid, name = category.get("id"), category.get("name")
        if not _is_id(cid):
            raise DataError(f"{where}: id {cid!r} is not a non-negative integer")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{where} (id={cid}): name {name!r} is not a non-empty string")
        if cid in ids:
            raise DataError(f"{where}: id {cid} is used twice (also by categories[{ids[cid]}])")
        if name in names:
            raise DataError(
                f"{where} (id={cid}): name {name!r} is used twice (also by categories[{names[name]}])"
            )
        ids[cid], names[name] = k, k
    return categories


def coco_class_names(data: dict) -> tuple[list[str], dict[int, str]]:
    """(class names, {category_id: name}) by the rule in the module docstring; ``data["categories"]`` checked."""
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    annotations = data.get("annotations")
    annotations = annotations if isinstance(annotations, list) else []
    used = {a.get("category_id") for a in annotations if isinstance(a, dict) and _is_id(a.get("category_id"))}
    parents = {c.get("supercategory") for c in categories if isinstance(c.get("supercategory"), str)}
    kept = [c for c in categories if not (c["name"] in parents and c["id"] not in used)]
    return [c["name"] for c in kept], {c["id"]: c["name"] for c in categories}


def _image(img, image_dir: str, allow_outside_paths: bool = False) -> tuple[int, str, int | None, int | None]:
    """(id, path, width, height) of an ``images`` entry; raises ValueError naming the bad field."""
    if not isinstance(img, dict):
        raise ValueError(f"{img!r} is not an object")
    image_id, name = img.get("id"), img.get("file_name")
    if not _is_id(image_id):
        raise ValueError(f"id {image_id!r} is not a non-negative integer")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"file_name {name!r} is not a non-empty string")
    size = []
    for key in ("width", "height"):
        try:
            size.append(_size(img.get(key)))
        except ValueError as e:
            raise ValueError(f"{key} {e}") from None
    path = os.path.join(image_dir, name)
    if not allow_outside_paths:
        check_inside(path, image_dir, f"file_name {name!r}")
    return image_id, path, *size


def check_inside(path: str, folder: str, what: str) -> None:
    """Raises ``ValueError`` when ``path`` (``..`` resolved, symbolic links not followed: a linked image
    folder is fine) lies outside ``folder``."""
    folder = os.path.normpath(os.path.abspath(folder))
    resolved = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([folder, resolved]) != folder:
        raise OutsidePathError(
            f"{what} leads outside the image folder {folder} (to {resolved}); pass --allow-outside-paths to "
            "read images there"
        )


class OutsidePathError(ValueError):
    """An image path that leads outside the dataset's image folder."""


def _segmentation_box(segmentation) -> tuple[float, float, float, float]:
    """xyxy extent of a COCO ``segmentation``: polygons ``[[x1, y1, x2, y2, ...], ...]`` or an RLE
    ``{"counts": str or [int], "size": [h, w]}``; raises ValueError for anything else."""
    if isinstance(segmentation, list) and segmentation:
        if not all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_is_number(v) for v in p)
            for p in segmentation
        ):
            raise ValueError(
                "no bbox, and segmentation is not a list of polygons [x1, y1, x2, y2, x3, y3, ...]"
            )
        xs = [float(v) for p in segmentation for v in p[0::2]]
        ys = [float(v) for p in segmentation for v in p[1::2]]
        return min(xs), min(ys), max(xs), max(ys)
    if isinstance(segmentation, dict) and {"counts", "size"} <= segmentation.keys():
        from pycocotools import mask

        size, counts = segmentation["size"], segmentation["counts"]
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
            raise ValueError(f"no bbox, and the RLE size {size!r} is not [height, width]")
        try:
            if isinstance(counts, list):  # uncompressed RLE (CVAT writes masks so)
                rle = mask.frPyObjects(segmentation, *size)
            elif isinstance(counts, str):
                rle = {"size": size, "counts": counts.encode()}
            else:
                raise TypeError(f"counts is {type(counts).__name__}")
            x, y, w, h = (float(v) for v in mask.toBbox(rle))
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"no bbox, and the RLE segmentation cannot be decoded ({e})") from None
        return x, y, x + w, y + h
    raise ValueError("no bbox, and no segmentation (polygons or RLE) to take it from")


def _box(ann: dict) -> tuple[float, float, float, float]:
    """xyxy of an annotation's ``bbox`` ``[x, y, w, h]``, or of its segmentation when it has no bbox; raises
    ValueError when neither gives a box."""
    bbox = ann.get("bbox")
    if bbox is None or bbox == []:
        return _segmentation_box(ann.get("segmentation"))
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise ValueError(f"bbox {bbox!r} is not [x, y, width, height] (four numbers)")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except OverflowError:  # an integer beyond float range: non-finite, as check_boxes reports it
        x = y = w = h = float("inf")
    return x, y, x + w, y + h


def _load_instances(annotation_file: str) -> dict:
    """The JSON object of a COCO instances file, its lists checked; raises DataError naming the file."""
    try:
        with open(annotation_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        # Nothing to skip to: the whole file is unreadable, whatever skip_bad says.
        raise DataError(f"{annotation_file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{annotation_file}: the top level is {type(data).__name__}, not a COCO instances object"
        )
    for key in ("images", "categories"):
        if key not in data:
            raise DataError(f"{annotation_file}: no {key!r} list: not a COCO instances file")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{annotation_file}: {key!r} is {type(data[key]).__name__}, not a list")
    return data


def _read_images(
    data: dict, annotation_file: str, image_dir: str, allow_outside_paths: bool, report: SkipReport
) -> tuple[dict, set]:
    """``({image id: (path, width, height)}, ids of bad image records)``; bad records go to ``report``."""
    images, skipped_images = {}, set()
    for k, img in enumerate(data["images"]):
        image_id = img.get("id") if isinstance(img, dict) else None
        record = f"image id={image_id}" if _is_id(image_id) else f"images[{k}]"
        try:
            image_id, path, width, height = _image(img, image_dir, allow_outside_paths)
        except ValueError as e:
            if _is_id(image_id):
                skipped_images.add(image_id)
            reason = "path_outside_image_dir" if isinstance(e, OutsidePathError) else "bad_image_record"
            report.bad(reason, annotation_file, record, str(e))
            continue
        if image_id in images or image_id in skipped_images:
            skipped_images.add(image_id)
            report.bad("bad_image_record", annotation_file, f"{record} (images[{k}])", "id used twice")
            continue
        images[image_id] = (path, width, height)
    return images, skipped_images


def read_coco(
    annotation_file: str,
    image_dir: str | None,
    report: SkipReport,
    class_names: Sequence[str] | None = None,
    verify: str = "header",
    exif_orientation: bool = True,
    allow_outside_paths: bool = False,
) -> tuple[list[dict], list[str]]:
    """Reads a COCO JSON file, images from ``image_dir`` (default: the JSON's directory).

    Returns:
        (common examples in the order of ``images``, class names).
    Raises:
        DataError: a bad record (unless ``report`` skips them), or a file that is not a COCO instances file.
    """
    require_path(annotation_file, "COCO annotation file")
    image_dir = image_dir or os.path.dirname(os.path.abspath(annotation_file))
    data = _load_instances(annotation_file)
    _categories(data, annotation_file)
    default_names, category_names = coco_class_names(data)
    class_names = list(class_names) if class_names is not None else default_names
    builder = ExampleBuilder(class_names, report, verify, exif_orientation)

    images, skipped_images = _read_images(data, annotation_file, image_dir, allow_outside_paths, report)

    per_image = collections.defaultdict(list)
    for k, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            message = f"{ann!r} is not an object"
            report.bad("bad_annotation", annotation_file, f"annotations[{k}]", message, "box")
            continue
        record = f"annotation id={ann['id']}" if _is_id(ann.get("id")) else f"annotations[{k}]"
        image_id = ann.get("image_id")
        if _is_id(image_id) and image_id in skipped_images:
            continue  # its image is a bad record, already reported: its boxes go with it
        if not _is_id(image_id) or image_id not in images:
            message = f"image_id {image_id!r} is not in 'images'"
            report.bad("annotation_without_image", annotation_file, record, message, level="box")
            continue
        category = ann.get("category_id")
        if not _is_id(category) or category not in category_names:
            message = f"category_id {category!r} is not in 'categories'"
            report.bad("unknown_class", annotation_file, record, message, level="box")
            continue
        try:
            box = _box(ann)
        except ValueError as e:
            report.bad("bad_box", annotation_file, record, str(e), level="box")
            continue
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):  # also False / True
            report.bad("bad_box", annotation_file, record, f"iscrowd {crowd!r} is not 0 or 1", level="box")
            continue
        name = category_names[category]
        per_image[image_id].append((f"{record} ({name})", name, box, bool(crowd)))

    for image_id, (path, width, height) in images.items():
        builder.build(
            path, image_id, per_image[image_id], annotation_file, f"image id={image_id}", width, height
        )
    return builder.examples, class_names
