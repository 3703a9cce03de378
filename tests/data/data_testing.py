"""Fixtures for the data tests: copies of the shared sets in tmp dirs and tiny images written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHESS_NEGATIVE_TEST_IMAGE_ID = 27  # the test-split image without boxes (SOURCE.md)


def write_image(path: Path, height: int = 48, width: int = 64, channels: int = 3, seed: int = 0) -> Path:
    """Writes a small random JPEG or PNG (by suffix) with OpenCV; ``channels`` 1, 3 or 4 (PNG)."""
    import cv2

    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
    return path


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
