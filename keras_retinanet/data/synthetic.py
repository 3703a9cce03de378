"""A synthetic COCO detection dataset made in-process (so the main job and its tests need no download):
coloured circles, squares and triangles on textured backgrounds, the same files for the same seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ("circle", "square", "triangle")


def _draw(image: np.ndarray, shape: str, x1: int, y1: int, size: int, colour: tuple[int, int, int]) -> None:
    if shape == "circle":
        cv2.circle(image, (x1 + size // 2, y1 + size // 2), size // 2, colour, -1, cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(image, (x1, y1), (x1 + size - 1, y1 + size - 1), colour, -1)
    else:
        points = np.array(
            [[x1 + size // 2, y1], [x1, y1 + size - 1], [x1 + size - 1, y1 + size - 1]], np.int32
        )
        cv2.fillPoly(image, [points], colour, cv2.LINE_AA)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    low = rng.integers(0, 120, 3)
    gradient = np.linspace(0.0, 1.0, width)[None, :, None] * rng.integers(0, 100, 3)[None, None, :]
    noise = rng.normal(0, 12, (height, width, 3))
    return np.clip(low[None, None, :] + gradient + noise, 0, 255).astype(np.uint8)


def make_synthetic_coco(
    output_dir: str | Path,
    num_images: int = 200,
    image_size: int | tuple[int, int] = 256,
    min_size: int = 16,
    max_objects: int = 6,
    empty_fraction: float = 0.1,
    seed: int = 0,
) -> str:
    """Writes ``output_dir/images/*.jpg`` and ``output_dir/annotations.json`` (COCO); returns its dataset spec
    ``"coco:OUTPUT/annotations.json:OUTPUT/images"``.

    ``image_size`` is one side or (height, width). Object sides run from ``min_size`` to half the shorter image
    side (log-uniform); an object is redrawn when it would hide more than half of an earlier one; boxes are the
    exact extents drawn. Every class gets a box where ``max_objects`` allows (``retinanet train`` refuses a class
    without boxes): a set where chance left one out is written again with its first objects one of each class.
    """
    arguments = (output_dir, num_images, image_size, min_size, max_objects, empty_fraction, seed)
    spec, labels = _write(*arguments, first_labels=())
    if labels and set(labels) != set(range(len(CLASS_NAMES))):
        spec, labels = _write(*arguments, first_labels=range(len(CLASS_NAMES)))
    return spec


def _write(output_dir, num_images, image_size, min_size, max_objects, empty_fraction, seed, first_labels):
    """The set of :func:`make_synthetic_coco`, the first objects labelled ``first_labels``; returns its spec
    and every object's label."""
    first_labels = list(first_labels)
    output = Path(output_dir)
    (output / "images").mkdir(parents=True, exist_ok=True)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image = _background(rng, height, width)
        boxes: list[list[int]] = []
        count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
        if count:  # room for the labels still to give, as far as max_objects allows
            count = min(max_objects, max(count, len(first_labels) - len(annotations)))
        for _ in range(count):
            for _attempt in range(10):
                size = int(
                    round(math.exp(rng.uniform(math.log(min_size), math.log(min(height, width) // 2))))
                )
                if height == width:
                    x1, y1 = (int(v) for v in rng.integers(0, width - size + 1, 2))
                else:
                    x1, y1 = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
                box = [x1, y1, x1 + size, y1 + size]
                if all(_covered_share(box, other) <= 0.5 for other in boxes):
                    break
            else:
                continue
            label = int(rng.integers(0, len(CLASS_NAMES)))  # drawn always: the random stream stays the same
            if len(annotations) < len(first_labels):
                label = first_labels[len(annotations)]
            colour = tuple(int(c) for c in rng.integers(130, 256, 3))
            _draw(image, CLASS_NAMES[label], x1, y1, size, colour)
            boxes.append(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1, y1, size, size],
                    "area": size * size,
                    "iscrowd": 0,
                }
            )
        name = f"synthetic_{image_id:05d}.jpg"
        cv2.imwrite(
            str(output / "images" / name),
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 95],
        )
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)]
    path = output / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return f"coco:{path}:{output / 'images'}", [a["category_id"] - 1 for a in annotations]


def _covered_share(box: list[int], earlier: list[int]) -> float:
    """Share of ``earlier`` that ``box`` would cover."""
    width = max(0, min(box[2], earlier[2]) - max(box[0], earlier[0]))
    height = max(0, min(box[3], earlier[3]) - max(box[1], earlier[1]))
    return width * height / ((earlier[2] - earlier[0]) * (earlier[3] - earlier[1]))
