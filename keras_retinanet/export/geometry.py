"""The image geometry that decides an exported file's accuracy besides its weights: the shape the model was
trained at, the shape it is exported at, and how each runtime brings an image to that shape (MediaPipe and
``TFLiteDetector`` stretch it; measured costs in docs/export.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence

# How far the images' aspect ratio may be from the input's before the stretch distorts them: the shorter side
# is rounded to a multiple of 32 pixels, which moves a 4:3 ratio by under 5% at 288 pixels and more.
ASPECT_TOLERANCE = 0.05

RUNTIME_RESIZE = {
    "tflite": "MediaPipe Tasks and TFLiteDetector stretch each image to the input (no letterbox)",
    "saved_model": "the graph letterboxes each image into the input and maps boxes back to its pixels",
    "keras": "letterbox into the training shape (KerasDetector, retinanet evaluate and predict)",
}


def export_geometry(
    train_shape: Sequence[int],
    export_shape: Sequence[int],
    data_aspect_ratio: float | None = None,
    use_group_norm: bool = True,
) -> dict:
    """The shapes, each runtime's resize, and one-line warnings where a phone would not see what the model
    learned on. Shapes are (H, W); ``data_aspect_ratio``: median width / height of the app's images, if known;
    ``use_group_norm``: the heads have GroupNorm, whose statistics change most with the input's shape."""
    (train_h, train_w), (height, width) = train_shape, export_shape
    warnings = []
    if (height, width) != (train_h, train_w):
        measured = (
            "GroupNorm heads lost a third of their AP on BCCD-quick"
            if use_group_norm
            else "heads without GroupNorm lost 0.2 AP points on BCCD-quick"
        )
        warnings.append(
            f"exporting at {height}x{width}, but the model was trained at {train_h}x{train_w}: it meets a scale "
            f"and padding it did not learn ({measured}); train at the phone's shape (the default --image-shape "
            "data) or export at the training shape"
        )
    if data_aspect_ratio and abs(math.log(data_aspect_ratio * height / width)) > math.log(
        1 + ASPECT_TOLERANCE
    ):
        warnings.append(
            f"the images' aspect ratio ({data_aspect_ratio:.2f}) is not the input's ({width / height:.2f}): "
            "MediaPipe stretches them out of shape (8.5 AP points lost on BCCD-quick); train with the default "
            "--image-shape data and export at the model's shape, or export with --image-size data"
        )
    return {
        "train_shape": [int(train_h), int(train_w)],
        "export_shape": [int(height), int(width)],
        "data_aspect_ratio": round(data_aspect_ratio, 4) if data_aspect_ratio else None,
        "input_aspect_ratio": round(width / height, 4),
        "runtime_resize": dict(RUNTIME_RESIZE),
        "warnings": warnings,
    }


def describe_geometry(geometry: dict) -> str:
    """One line for the export's summary."""
    train, export = geometry["train_shape"], geometry["export_shape"]
    ratio = geometry["data_aspect_ratio"]
    images = f", images {ratio:.2f} wide/high" if ratio else ""
    return (
        f"geometry: trained at {train[0]}x{train[1]}, exported at {export[0]}x{export[1]} "
        f"({geometry['input_aspect_ratio']:.2f}){images}; MediaPipe stretches each image to the input"
    )
