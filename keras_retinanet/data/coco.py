"""COCO ``instances``-style JSON reader.

- Boxes ``[x, y, w, h]`` (0-based pixels) become xyxy; ``iscrowd`` boxes are kept with ``ignore=True``.
- Image ids are the JSON's own ids (so pycocotools can evaluate against the same file).
- Category ids become contiguous class ids in the order of their ids. A category that is only a parent
  (another category names it as its ``supercategory``) and has no annotation of its own is a placeholder,
  not a class: it is left out on purpose (Roboflow exports name the dataset this way, e.g. chess "pieces").
  Every other category is a class, also with zero boxes in this file, so that all splits of a dataset share
  the same class ids.
- An annotation whose ``image_id`` is not in ``images`` is a bad record (``annotation_without_image``); an
  image without annotations is kept as a negative example.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Sequence

from keras_retinanet.data.dataset import ExampleBuilder, require_path
from keras_retinanet.data.validation import DataError, SkipReport


def coco_class_names(data: dict) -> tuple[list[str], dict[int, str]]:
    """(class names, {category_id: name}) following the rule in the module docstring."""
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    used = {a.get("category_id") for a in data.get("annotations", [])}
    parents = {c.get("supercategory") for c in categories}
    kept = [c for c in categories if not (c["name"] in parents and c["id"] not in used)]
    return [c["name"] for c in kept], {c["id"]: c["name"] for c in categories}


def read_coco(
    annotation_file: str,
    image_dir: str | None,
    report: SkipReport,
    class_names: Sequence[str] | None = None,
    verify: str = "header",
    exif_orientation: bool = True,
) -> tuple[list[dict], list[str]]:
    """Reads a COCO JSON file; images are looked up in ``image_dir`` (default: the JSON's directory).

    Returns:
        (common examples in the order of ``images``, class names).
    """
    require_path(annotation_file, "COCO annotation file")
    image_dir = image_dir or os.path.dirname(os.path.abspath(annotation_file))
    try:
        with open(annotation_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        # Nothing to skip to: the whole file is unreadable, whatever skip_bad says.
        raise DataError(f"{annotation_file}: not valid JSON ({e})") from None
    for key in ("images", "categories"):
        if not isinstance(data, dict) or key not in data:
            raise DataError(f"{annotation_file}: no {key!r} list: not a COCO instances file")
    default_names, category_names = coco_class_names(data)
    class_names = list(class_names) if class_names is not None else default_names
    builder = ExampleBuilder(class_names, report, verify, exif_orientation)

    images = {img["id"]: img for img in data["images"]}
    per_image = collections.defaultdict(list)
    for k, ann in enumerate(data.get("annotations", [])):
        record = f"annotation id={ann.get('id', k)}"
        if ann.get("image_id") not in images:
            report.bad(
                "annotation_without_image",
                annotation_file,
                record,
                f"image_id {ann.get('image_id')} is not in 'images'",
                level="box",
            )
            continue
        category = ann.get("category_id")
        if category not in category_names:
            report.bad(
                "unknown_class",
                annotation_file,
                record,
                f"category_id {category} is not in 'categories'",
                level="box",
            )
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            report.bad("bad_box", annotation_file, record, f"bbox {bbox} is not [x, y, w, h]", level="box")
            continue
        x, y, w, h = (float(v) for v in bbox)
        name = category_names[category]
        per_image[ann["image_id"]].append(
            (f"{record} ({name})", name, (x, y, x + w, y + h), bool(ann.get("iscrowd", 0)))
        )

    examples = []
    for image_id, img in images.items():
        path = os.path.join(image_dir, img.get("file_name", ""))
        example = builder.build(
            path,
            image_id,
            per_image.get(image_id, []),
            annotation_file,
            f"image id={image_id}",
            img.get("width"),
            img.get("height"),
        )
        if example is not None:
            examples.append(example)
    return examples, class_names
