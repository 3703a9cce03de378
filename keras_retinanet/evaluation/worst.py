"""The images a model gets most wrong, drawn with their ground truth and its predictions side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_retinanet.evaluation.coco import detection_arrays, truth_arrays
from keras_retinanet.imaging import rescale

MIN_SIDE, MAX_SIDE = 400, 800
"""Each half of a picture is scaled so that its longer side is within these pixels (small images grow, so that
labels stay readable; large ones shrink)."""


def worst_indices(counts: np.ndarray, count: int) -> list[int]:
    """Indices of the ``count`` largest non-zero ``counts`` (most first; ties in data set order)."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    return [int(i) for i in order[:count] if counts[i] > 0]


def side_by_side(
    image: np.ndarray,
    example: Mapping[str, Any],
    detection: Any,
    class_names: Sequence[str],
    score_threshold: float,
) -> np.ndarray:
    """(H', W', 3) uint8 RGB: the ground truth of ``example`` drawn on the left, the ``detection`` boxes scored >=
    ``score_threshold`` on the right (both xyxy pixels of ``image``, (H, W, 3) uint8 RGB), each half captioned;
    the image is scaled first (longer side within ``MIN_SIDE``..``MAX_SIDE``)."""
    import cv2

    from keras_retinanet.visualize import draw_detections

    gt_boxes, gt_classes, _ = truth_arrays(example)
    boxes, scores, classes = detection_arrays(detection)
    keep = scores >= score_threshold
    scale = float(np.clip(max(image.shape[:2]), MIN_SIDE, MAX_SIDE)) / max(image.shape[:2])
    if scale != 1.0:
        image = rescale(image, scale)
        gt_boxes, boxes = gt_boxes * scale, boxes * scale
    halves = [
        (
            draw_detections(image, gt_boxes, None, gt_classes, class_names),
            f"ground truth: {len(gt_boxes)} boxes",
        ),
        (
            draw_detections(image, boxes[keep], scores[keep], classes[keep], class_names),
            f"predictions >= {score_threshold:g}: {int(keep.sum())}",
        ),
    ]
    panels = []
    for drawn, caption in halves:
        header = np.full((28, drawn.shape[1], 3), 255, np.uint8)
        cv2.putText(header, caption, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.vstack([header, drawn]))
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    return np.hstack([panels[0], gap, panels[1]])
