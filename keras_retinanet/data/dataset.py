"""The common dataset object every reader returns, and ``load_dataset(spec)``.

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
from keras_retinanet.data.spec import DatasetSpec, parse_spec
from keras_retinanet.data.validation import DEFAULT_OVERHANG_TOLERANCE, DataError, SkipReport, check_boxes


@dataclasses.dataclass
class Dataset:
    """A loaded, validated detection dataset.

    Attributes:
        examples: common example dicts (see the module docstring), bad records already removed.
        class_names: ordered class names; class id ``k`` is ``class_names[k]``.
        skipped: what was skipped or clipped, and why (:class:`SkipReport`).
        name: the spec it came from.
        encoded_images: for sources without image files (TFDS): a function returning a ``tf.data.Dataset``
            of encoded image bytes, one per example, in ``examples`` order. None when every example has a
            readable ``image_path``.
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
    """Shared per-image logic of the readers: image checks, box checks, class lookup.

    Args:
        class_names: ordered class names; names not in it are bad records (``unknown_class``).
        report: problems go here (raises unless skipping bad records).
        verify: image check level, see :func:`inspect_image`.
        exif_orientation: honour the EXIF orientation of JPEGs whose annotation uses the rotated size.
        overhang_tolerance: see :func:`check_boxes`.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        report: SkipReport,
        verify: str = "header",
        exif_orientation: bool = True,
        overhang_tolerance: float = DEFAULT_OVERHANG_TOLERANCE,
    ):
        self.class_names = list(class_names)
        self.class_index = {name: k for k, name in enumerate(self.class_names)}
        if len(self.class_index) != len(self.class_names):
            raise DataError(f"duplicate class names in {self.class_names}")
        self.report = report
        self.verify = verify
        self.exif_orientation = exif_orientation
        self.overhang_tolerance = overhang_tolerance

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
        """Checks one image and its objects; returns the common example, or None if the image is skipped.

        Args:
            image_path: image file (named in messages, read unless ``image_bytes`` is given).
            image_id: id stored in the example.
            objects: ``(record_name, class_name_or_id, (x1, y1, x2, y2), ignore)`` per box, absolute xyxy
                pixels. An int class is taken as a class id, a str is looked up in ``class_names``.
            source: annotation file named in box messages.
            record: the image's record name in messages (e.g. ``"image 17"``).
            width, height: size the annotation claims (checked against the image), or None.
            image_bytes: encoded image (TFDS) instead of a file.
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
                self.report.bad(
                    "size_mismatch",
                    image_path,
                    record,
                    f"annotation says {width}x{height} but the image is {stored[0]}x{stored[1]}",
                )
                return None

        names, classes, boxes, ignore = [], [], [], []
        for name, cls, box, ign in objects:
            if isinstance(cls, str):
                if cls not in self.class_index:
                    self.report.bad(
                        "unknown_class",
                        source,
                        name,
                        f"class {cls!r} is not in the class list {self.class_names}",
                        level="box",
                    )
                    continue
                cls = self.class_index[cls]
            elif not 0 <= int(cls) < len(self.class_names):
                self.report.bad("unknown_class", source, name, f"class id {cls} out of range", level="box")
                continue
            names.append(name)
            classes.append(int(cls))
            boxes.append(box)
            ignore.append(bool(ign))
        boxes, keep = check_boxes(
            np.asarray(boxes, np.float64).reshape(-1, 4),
            width,
            height,
            self.report,
            source,
            names,
            self.overhang_tolerance,
        )
        return {
            "image_path": str(image_path),
            "image_id": int(image_id),
            "boxes": boxes,
            "classes": np.asarray(classes, np.int32)[keep].reshape(-1),
            "ignore": np.asarray(ignore, bool)[keep].reshape(-1),
            "height": int(height),
            "width": int(width),
            "orientation": int(orientation),
        }


def load_dataset(
    spec: str | DatasetSpec,
    skip_bad: bool = False,
    class_names: Sequence[str] | None = None,
    data_dir: str | None = None,
    verify: str = "header",
    exif_orientation: bool = True,
    allow_outside_paths: bool = False,
) -> Dataset:
    """Loads and validates a dataset named by a spec string.

    Args:
        spec: ``voc:DIR[:SPLIT]``, ``coco:ANNOTATIONS.json[:IMAGE_DIR]``, ``csv:ANNOTATIONS.csv:CLASSES.csv``
            or ``tfds:NAME[:SPLIT]`` (see :mod:`keras_retinanet.data.spec`).
        skip_bad: skip bad records and report them in ``dataset.skipped`` instead of raising
            :class:`~keras_retinanet.data.validation.DataError`.
        class_names: fix the class list and order (e.g. a trained model's ``class_names``, so that an
            evaluation split maps names exactly as training did). Default: the dataset's own list.
        data_dir: TFDS data directory (ignored by the file formats).
        verify: ``"header"`` (default; format, size and truncation from the file header, ~1 ms/image),
            ``"decode"`` (also fully decodes every image) or ``"none"``.
        exif_orientation: apply EXIF orientation to images whose annotation uses the displayed size.
        allow_outside_paths: read COCO images whose ``file_name`` leads outside the image folder
            (``../x.jpg``, absolute paths); otherwise each is a bad record naming it.
    Returns:
        :class:`Dataset` with at least one class and one image.
    Raises:
        DataError: the first bad record (unless ``skip_bad``); a file that cannot be read at all (not JSON, not
            a COCO file, a bad classes file); no classes; no images (none listed, or every one skipped).
        FileNotFoundError: no annotation file or directory.
        ValueError: a malformed spec.
    """
    spec = parse_spec(spec)
    report = SkipReport(skip_bad)
    options = {"verify": verify, "exif_orientation": exif_orientation}
    if spec.kind == "voc":
        from keras_retinanet.data.voc import read_voc

        examples, names = read_voc(spec.path, spec.extra, report, class_names, **options)
        encoded = None
    elif spec.kind == "coco":
        from keras_retinanet.data.coco import read_coco

        examples, names = read_coco(
            spec.path, spec.extra, report, class_names, allow_outside_paths=allow_outside_paths, **options
        )
        encoded = None
    elif spec.kind == "csv":
        from keras_retinanet.data.csv_reader import read_csv

        examples, names = read_csv(spec.path, spec.extra, report, class_names, **options)
        encoded = None
    else:
        from keras_retinanet.data.tfds_reader import read_tfds

        examples, names, encoded = read_tfds(
            spec.path, spec.extra or "train", report, class_names, data_dir=data_dir, verify=verify
        )
    _require_content(spec, names, examples, report)
    return Dataset(examples, list(names), report, str(spec), encoded)


def _require_content(
    spec: DatasetSpec, class_names: Sequence[str], examples: list, report: SkipReport
) -> None:
    """An empty dataset is an error here, in words, rather than a Keras one later ("Received filters=0")."""
    if not examples and not report.problems:
        raise DataError(f"{spec}: no images (the split, 'images' list or annotation file is empty)")
    if not examples:
        counts = ", ".join(f"{reason} {count}" for reason, count in sorted(report.counts().items()))
        raise DataError(
            f"{spec}: no images left: every image was skipped ({counts}; first: {report.problems[0]})"
        )
    if not class_names:
        where = {
            "voc": "no <object><name> in any Annotations/*.xml",
            "coco": "'categories' is empty or holds only parent categories without annotations",
            "csv": "the classes file lists none",
            "tfds": "its objects/label feature has no names",
        }[spec.kind]
        raise DataError(f"{spec}: no classes ({where})")


def require_path(path: str, what: str) -> None:
    """Raises FileNotFoundError naming ``what`` when ``path`` does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
