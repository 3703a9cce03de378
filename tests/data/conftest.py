"""Fixtures for the data tests: copies of the shared sets in tmp dirs and tiny images written by the tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

CHESS_NEGATIVE_TEST_IMAGE_ID = 27  # the test-split image without boxes (SOURCE.md)


def write_image(path: Path, height: int = 48, width: int = 64, channels: int = 3, seed: int = 0) -> Path:
    """Writes a small random JPEG or PNG (by suffix) with OpenCV; ``channels`` 1, 3 or 4 (PNG)."""
    import cv2

    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
    return path


@pytest.fixture
def chess_split(tmp_path, shared_datasets):
    """Factory: ``chess_split("test", limit=None)`` copies a chess640 split (JSON + images) into tmp_path and
    returns the JSON path. With ``limit``, only the first ``limit`` images (and their annotations) are kept,
    plus always the negative image of the test split."""

    def copy(split: str = "test", limit: int | None = None) -> Path:
        source = shared_datasets / "chess640" / split
        data = json.loads((source / "_annotations.coco.json").read_text())
        if limit is not None:
            keep = {img["id"] for img in data["images"][:limit]}
            if split == "test":
                keep.add(CHESS_NEGATIVE_TEST_IMAGE_ID)
            data["images"] = [img for img in data["images"] if img["id"] in keep]
            data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        root = tmp_path / "chess" / split
        root.mkdir(parents=True)
        for img in data["images"]:
            shutil.copy(source / img["file_name"], root / img["file_name"])
        path = root / "_annotations.coco.json"
        path.write_text(json.dumps(data))
        return path

    return copy


def write_voc(root: Path, objects_per_image: dict, size=(64, 48), split: str = "train") -> Path:
    """Writes a VOC folder: ``{image_id: [(name, (xmin, ymin, xmax, ymax), difficult), ...]}`` with random
    JPEGs of ``size`` = (width, height)."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objects in objects_per_image.items():
        write_image(root / "JPEGImages" / f"{image_id}.jpg", size[1], size[0])
        xml = [
            f"<annotation><filename>{image_id}.jpg</filename>",
            f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>",
        ]
        for name, (x1, y1, x2, y2), difficult in objects:
            xml.append(
                f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox>"
                f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            )
        xml.append("</annotation>")
        (root / "Annotations" / f"{image_id}.xml").write_text("".join(xml))
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(objects_per_image) + "\n")
    return root
