"""Drawing detections with OpenCV on (H, W, 3) uint8 RGB images (``imwrite`` wants BGR: :func:`rgb_to_bgr`)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from keras_retinanet.boxes import clip_boxes
from keras_retinanet.conventions import class_name

# 20 well separated colours (RGB): Tableau 10 plus its light variants, reordered so that neighbours differ.
_HEX_PALETTE = (
    "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf"
    " aec7e8 ffbb78 98df8a ff9896 c5b0d5 c49c94 f7b6d2 c7c7c7 dbdb8d 9edae5"
)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(tuple(bytes.fromhex(h)) for h in _HEX_PALETTE.split())


def class_colour(class_id: int) -> tuple[int, int, int]:
    """RGB colour of a class id (stable, cycles through :data:`PALETTE`)."""
    return PALETTE[int(class_id) % len(PALETTE)]


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (RGB), by relative luminance."""
    r, g, b = background
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """Swap the channel order of an (H, W, 3) image (RGB <-> BGR)."""
    return np.ascontiguousarray(image[..., ::-1])


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray | None,
    classes: np.ndarray,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.0,
    thickness: int | None = None,
    font_scale: float | None = None,
) -> np.ndarray:
    """Draw boxes with "name score" labels on a copy of ``image``: a new (H, W, 3) uint8 RGB image.

    Args:
        image: (H, W, 3) uint8 RGB image (a grayscale (H, W) image is converted).
        boxes: (D, 4) absolute ``x1, y1, x2, y2`` pixels of ``image``.
        scores: (D,) scores in [0, 1] or None (labels without a score).
        classes: (D,) int class ids; rows with a negative id (padding) are skipped.
        thickness, font_scale: line thickness in pixels and OpenCV font scale (default: from the image size).
    """
    canvas = np.array(image, dtype=np.uint8, copy=True)
    if canvas.ndim == 2:
        canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB)
    canvas = np.ascontiguousarray(canvas)
    height, width = canvas.shape[:2]
    size = max(1, min(height, width))
    thickness = thickness or max(1, round(size / 300))
    font_scale = font_scale or max(0.35, size / 1000)
    font = cv2.FONT_HERSHEY_SIMPLEX
    text_thickness = max(1, thickness // 2)

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    scores_arr = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    # The best drawn last, on top.
    for i in np.arange(len(boxes)) if scores_arr is None else np.argsort(scores_arr):
        cls = int(classes[i])
        if cls < 0 or not np.all(np.isfinite(boxes[i])):
            continue
        if scores_arr is not None and scores_arr[i] < score_threshold:
            continue
        rounded = np.round(np.asarray(boxes[i], np.float64))
        # Pixel indices: the last row and column are height - 1 and width - 1.
        x1, y1, x2, y2 = (int(v) for v in clip_boxes(rounded, height - 1, width - 1))
        colour = class_colour(cls)
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness)
        name = class_name(cls, class_names)
        label = name if scores_arr is None else f"{name} {scores_arr[i]:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(label, font, font_scale, text_thickness)
        pad = max(1, thickness)
        # Label above the box, or inside it when there is no room above.
        top = y1 - text_h - baseline - 2 * pad
        if top < 0:
            top = y1
        left = int(min(max(x1, 0), max(width - text_w - 2 * pad, 0)))
        bottom = top + text_h + baseline + 2 * pad
        cv2.rectangle(canvas, (left, int(top)), (left + text_w + 2 * pad, int(bottom)), colour, cv2.FILLED)
        cv2.putText(
            canvas,
            label,
            (left + pad, int(bottom - baseline - pad)),
            font,
            font_scale,
            _text_colour(colour),
            text_thickness,
            cv2.LINE_AA,
        )
    return canvas
