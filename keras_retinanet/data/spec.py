"""Dataset spec strings: one string names a dataset everywhere the CLI asks for one (docs/datasets.md).

- ``voc:DIR[:SPLIT]``: Pascal VOC directory; no SPLIT: every annotation.
- ``coco:ANNOTATIONS.json[:IMAGE_DIR]``: COCO instances JSON; IMAGE_DIR defaults to the JSON's directory.
- ``csv:ANNOTATIONS.csv:CLASSES.csv``: fizyr keras-retinanet CSV and its ``class_name,id`` file.
- ``yolo:DATA.yaml[:SPLIT]``: Ultralytics layout; SPLIT defaults to train.
- ``tfds:NAME[:SPLIT]``: TensorFlow Datasets name, optionally ``NAME:VERSION``; SPLIT defaults to train and may
  be a slice (``train[:10%]``).
"""

from __future__ import annotations

import dataclasses
import re

FORMATS = ("voc", "coco", "csv", "yolo", "tfds")
_VERSION = re.compile(r"^[\d*]+(\.[\d*]+){0,2}$")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec. ``path`` is the directory / file / TFDS name; ``extra`` the optional second part
    (VOC split, COCO image directory, CSV classes file, YOLO split, TFDS split) or None."""

    format: str
    path: str
    extra: str | None = None

    def __str__(self) -> str:
        return f"{self.format}:{self.path}" + (f":{self.extra}" if self.extra else "")


def parse_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """Parses ``FORMAT:PATH[:EXTRA]`` (module docstring); a ValueError lists the accepted forms."""
    if isinstance(spec, DatasetSpec):
        return spec
    usage = (
        f"bad dataset spec {spec!r}; expected voc:DIR[:SPLIT], coco:ANNOTATIONS.json[:IMAGE_DIR], "
        "csv:ANNOTATIONS.csv:CLASSES.csv, yolo:DATA.yaml[:SPLIT] or tfds:NAME[:SPLIT]"
    )
    data_format, sep, rest = str(spec).partition(":")
    if not sep or data_format not in FORMATS or not rest:
        raise ValueError(usage)
    if data_format == "tfds":
        name, _, split = rest.partition(":")
        # A version belongs to the name (``mnist:3.0.1:test``); a split may hold ':' (``train[:10%]``).
        head, _, tail = split.partition(":")
        if _VERSION.match(head):
            name, split = f"{name}:{head}", tail
        return DatasetSpec(data_format, name, split or None)
    parts = rest.split(":")
    if len(parts) > 2 or not parts[0] or (data_format == "csv" and (len(parts) != 2 or not parts[1])):
        raise ValueError(usage)
    return DatasetSpec(data_format, parts[0], parts[1] if len(parts) == 2 and parts[1] else None)
