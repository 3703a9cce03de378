"""The common dataset object every reader returns, and the builder of its examples.

Common example (one Python dict per image)::

    {"image_path": str, "image_id": int,
     "boxes": float32 (M, 4) absolute xyxy pixels, 0-based continuous (a full image is (0, 0, W, H)),
     "classes": int32 (M,) in 0..K-1, "ignore": bool (M,) (VOC difficult / COCO iscrowd),
     "height": int, "width": int,          # of the image as the model sees it (after EXIF orientation)
     "orientation": int}                   # EXIF orientation 1..8 the pipeline applies to the pixels
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Sequence

import numpy as np

from keras_retinanet.data.images import ImageError, inspect_image
from keras_retinanet.data.validation import DataError, SkipReport, check_boxes


@dataclasses.dataclass
class Dataset:
    """A loaded, validated detection dataset.

    Attributes:
        examples: common example dicts (module docstring), bad records already removed.
        class_names: class id ``k`` is ``class_names[k]``.
        skipped: what was skipped or clipped, and why.
        name: the spec it came from.
        encoded_images: for sources without image files (TFDS): a function returning a ``tf.data.Dataset``
            of encoded image bytes in ``examples`` order; else None.
    """

    examples: list[dict]
    class_names: list[str]
    skipped: SkipReport
    name: str = ""
    encoded_images: Callable | None = None

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def boxes_per_class(self, include_ignored: bool = True) -> dict[str, int]:
        """``{class_name: number of boxes}`` (every class listed, also with 0 boxes)."""
        counts = collections.Counter()
        for ex in self.examples:
            classes = ex["classes"] if include_ignored else ex["classes"][~ex["ignore"]]
            counts.update(int(c) for c in classes)
        return {name: counts.get(k, 0) for k, name in enumerate(self.class_names)}

    @property
    def max_boxes(self) -> int:
        """Largest number of boxes in one image (the padded size used by the pipeline)."""
        return max((len(ex["boxes"]) for ex in self.examples), default=0)


class ExampleBuilder:
    """Shared per-image logic of the readers: image checks (``verify``: see :func:`inspect_image`), box checks,
    class lookup (a name not in ``class_names`` is a bad record); problems go to ``report``. With
    ``exif_orientation``, JPEGs whose annotation uses the rotated size get their EXIF orientation."""

    def __init__(
        self,
        class_names: Sequence[str],
        report: SkipReport,
        verify: str = "header",
        exif_orientation: bool = True,
    ):
        self.class_names = list(class_names)
        self.class_index = {name: k for k, name in enumerate(self.class_names)}
        if len(self.class_index) != len(self.class_names):
            raise DataError(f"duplicate class names in {self.class_names}")
        self.report = report
        self.verify = verify
        self.exif_orientation = exif_orientation
        self.examples: list[dict] = []  # every example built, in order

    def build(
        self,
        image_path: str,
        image_id: int,
        objects: Sequence[tuple],
        source: str,
        record: str,
        width: int | None = None,
        height: int | None = None,
        image_bytes: bytes | None = None,
    ) -> dict | None:
        """Checks one image and its objects; returns the common example (also appended to ``examples``), or None
        if the image is skipped.

        Args:
            image_path: image file (named in messages, read unless ``image_bytes`` is given).
            objects: ``(record_name, class_name_or_id, (x1, y1, x2, y2), ignore)`` per box, absolute xyxy
                pixels; an int class is a class id, a str is looked up in ``class_names``.
            source: annotation file named in box messages; ``record``: the image's name in messages.
            width, height: size the annotation claims (checked against the image), or None.
        """
        try:
            info = inspect_image(image_bytes if image_bytes is not None else image_path, verify=self.verify)
        except ImageError as e:
            self.report.bad(e.reason, image_path, record, str(e))
            return None
        orientation = 1
        if self.verify == "none":
            if not (width and height):
                self.report.bad("size_unknown", source, record, "image size unknown and verify='none'")
                return None
        else:
            stored, shown = (info.width, info.height), info.display_size
            if not (width and height):
                width = height = None
            # Annotation tools show the EXIF-rotated image, so boxes of an oriented JPEG are in the displayed
            # frame unless the annotation's size says otherwise (then the stored pixels are used as they are).
            if (
                self.exif_orientation
                and info.orientation != 1
                and (width is None or (width, height) == shown)
            ):
                orientation, (width, height) = info.orientation, shown
            elif width is None:
                width, height = stored
            elif (width, height) != stored:
                message = f"annotation says {width}x{height} but the image is {stored[0]}x{stored[1]}"
                self.report.bad("size_mismatch", image_path, record, message)
                return None

        names, classes, boxes, ignore = [], [], [], []
        for name, cls, box, ign in objects:
            if isinstance(cls, str):
                if cls not in self.class_index:
                    message = f"class {cls!r} is not in the class list {self.class_names}"
                    self.report.bad("unknown_class", source, name, message, level="box")
                    continue
                cls = self.class_index[cls]
            elif not 0 <= int(cls) < len(self.class_names):
                self.report.bad("unknown_class", source, name, f"class id {cls} out of range", level="box")
                continue
            names.append(name)
            classes.append(int(cls))
            boxes.append(box)
            ignore.append(bool(ign))
        boxes, keep = check_boxes(boxes, width, height, self.report, source, names)
        self.examples.append(
            {
                "image_path": str(image_path),
                "image_id": int(image_id),
                "boxes": boxes,
                "classes": np.asarray(classes, np.int32)[keep].reshape(-1),
                "ignore": np.asarray(ignore, bool)[keep].reshape(-1),
                "height": int(height),
                "width": int(width),
                "orientation": int(orientation),
            }
        )
        return self.examples[-1]


def require_path(path: str, what: str) -> None:
    """Raises FileNotFoundError naming ``what`` when ``path`` does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
