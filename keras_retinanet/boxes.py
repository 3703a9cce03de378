"""Box utilities on the package's one format, absolute ``xyxy`` float32 pixels (NumPy alone for arrays)."""

from __future__ import annotations

import numpy as np


def pairwise_iou(boxes1, boxes2):
    """(N, M) or (B, N, M) float32 IoU of (N, 4) or (B, N, 4) ``boxes1`` with (M, 4) or (B, M, 4) ``boxes2``
    (tensors); 0 where a box has no area."""
    from keras import ops
    from keras.utils import bounding_boxes as kbb

    boxes1 = ops.cast(boxes1, "float32")
    boxes2 = ops.cast(boxes2, "float32")
    return kbb.compute_iou(boxes1, boxes2, bounding_box_format="xyxy")


def iou(boxes1, boxes2) -> np.ndarray:
    """(N, M) float64 IoU of (N, 4) and (M, 4) boxes, as pycocotools computes it (no +1 on widths); 0 where
    both boxes have no area. The package's one NumPy IoU (tensors: :func:`pairwise_iou`)."""
    a = np.asarray(boxes1, np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_greedy(iou_matrix: np.ndarray, iou_threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of an (N, M) IoU matrix: pairs ``(row, column)`` with IoU >= threshold, highest
    IoU first, each row and each column at most once."""
    rows, cols = np.nonzero(iou_matrix >= iou_threshold)
    order = np.argsort(-iou_matrix[rows, cols], kind="stable")
    pairs, used_rows, used_cols = [], set(), set()
    for r, c in zip(rows[order], cols[order], strict=True):
        if r in used_rows or c in used_cols:
            continue
        used_rows.add(r)
        used_cols.add(c)
        pairs.append((int(r), int(c)))
    return pairs


def clip_boxes(boxes, height, width):
    """Clips (..., 4) xyxy boxes to the image [0, width] x [0, height]: the package's one box clipping.

    Args:
        boxes: (..., 4) absolute x1, y1, x2, y2; a NumPy array or a tensor.
        height, width: numbers, or arrays that broadcast against ``boxes[..., 0]`` ((B, 1) for B images).
    Returns:
        A NumPy array (float64 stays float64, else float32) for an array, else a float32 tensor; NaN stays.
    """
    if isinstance(boxes, np.ndarray):
        dtype = np.float64 if boxes.dtype == np.float64 else np.float32
        limit = np.stack(np.broadcast_arrays(width, height, width, height), axis=-1).astype(dtype)
        return np.clip(boxes.astype(dtype, copy=False), dtype(0.0), limit)
    from keras import ops

    height = ops.cast(height, "float32")
    width = ops.cast(width, "float32")
    limit = ops.stack([width, height, width, height], axis=-1)
    return ops.clip(ops.cast(boxes, "float32"), 0.0, limit)
