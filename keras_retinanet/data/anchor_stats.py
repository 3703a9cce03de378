"""Dataset statistics and anchor coverage, and an optimiser over anchor scales / ratios.

A ground-truth box is covered when its best IoU with any anchor reaches the matcher's positive threshold. Boxes
are measured as the network sees them (resized to fit ``image_size``, aspect kept, no augmentation).
:func:`best_anchor_iou` is brute force; :func:`best_anchor_iou_fast` gives the same (tests/data/test_anchor_stats.py)
from the grid cell nearest each box centre, per level and anchor shape, fast enough for the optimiser.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

SIZE_BUCKETS = (("small", 0.0, 32.0), ("medium", 32.0, 96.0), ("large", 96.0, math.inf))


def size_bucket(boxes: np.ndarray) -> np.ndarray:
    """COCO size names ("small" < 32^2, "medium" < 96^2, else "large" px^2) of (M, 4) xyxy boxes."""
    side = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))
    names = np.empty(len(boxes), dtype=object)
    for name, low, high in SIZE_BUCKETS:
        names[(side >= low) & (side < high)] = name
    return names


def network_boxes(dataset, image_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (K, 4) float32 xyxy network pixels, classes (K,) int32) of all non-ignored boxes, scaled as the
    pipeline resizes their image into ``image_size`` (H, W)."""
    boxes, classes = [], []
    for ex in dataset.examples:
        keep = ~ex["ignore"]
        scale = min(image_size[0] / ex["height"], image_size[1] / ex["width"])
        # Same rounding as augment.resize_crop_pad: per-axis factors of the rounded resized size.
        sy = max(1, round(ex["height"] * scale)) / ex["height"]
        sx = max(1, round(ex["width"] * scale)) / ex["width"]
        boxes.append(ex["boxes"][keep] * np.array([sx, sy, sx, sy], np.float32))
        classes.append(ex["classes"][keep])
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int32)
    return np.concatenate(boxes).astype(np.float32), np.concatenate(classes).astype(np.int32)


def best_anchor_iou(
    boxes: np.ndarray, anchor_generator, image_size: Sequence[int], chunk: int = 256
) -> np.ndarray:
    """(K,) float32 best IoU of each of ``boxes`` (K, 4) xyxy network pixels with the anchors of
    ``anchor_generator`` for a (H, W) input (brute force)."""
    from keras import ops

    from keras_retinanet.boxes import pairwise_iou

    anchors = anchor_generator(image_shape=tuple(image_size))
    best = [
        ops.convert_to_numpy(ops.max(pairwise_iou(boxes[i : i + chunk], anchors), axis=-1))
        for i in range(0, len(boxes), chunk)
    ]
    return np.concatenate(best).astype(np.float32) if best else np.zeros(0, np.float32)


def best_anchor_iou_fast(boxes: np.ndarray, anchor_generator, image_size: Sequence[int]) -> np.ndarray:
    """Same result as :func:`best_anchor_iou`, from the nearest grid cell per level and anchor shape."""
    boxes = np.asarray(boxes, np.float64)
    best = np.zeros(len(boxes))
    if not len(boxes):
        return best.astype(np.float32)
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for level, stride, (fh, fw) in zip(
        anchor_generator.levels,
        anchor_generator.strides,
        anchor_generator.feature_shapes(image_size),
        strict=True,
    ):
        cell = np.asarray(anchor_generator.cell_anchors(level), np.float64)  # (A, 4) around a cell centre
        ax1, ay1, ax2, ay2 = (cell[None, :, k] for k in range(4))
        # Grid centre that puts each anchor's own centre closest to the box centre, per axis.
        cx = (boxes[:, 0:1] + boxes[:, 2:3]) / 2 - (ax1 + ax2) / 2
        cy = (boxes[:, 1:2] + boxes[:, 3:4]) / 2 - (ay1 + ay2) / 2
        offset = anchor_generator.offset
        gx, gy = (
            (np.clip(np.round(c / stride - offset), 0, n - 1) + offset) * stride
            for c, n in ((cx, fw), (cy, fh))
        )
        iw = np.minimum(boxes[:, 2:3], gx + ax2) - np.maximum(boxes[:, 0:1], gx + ax1)
        ih = np.minimum(boxes[:, 3:4], gy + ay2) - np.maximum(boxes[:, 1:2], gy + ay1)
        inter = np.maximum(iw, 0) * np.maximum(ih, 0)
        union = box_area[:, None] + (ax2 - ax1) * (ay2 - ay1) - inter
        best = np.maximum(best, np.max(inter / np.maximum(union, 1e-9), axis=1))
    return best.astype(np.float32)


@dataclasses.dataclass
class Coverage:
    """Anchor coverage: overall, per class and per size bucket (share of boxes with best IoU >= threshold)."""

    overall: float
    per_class: dict[str, float]
    per_size: dict[str, float]
    mean_best_iou: float
    counts_per_class: dict[str, int]
    counts_per_size: dict[str, int]

    def objective(self) -> float:
        """Class-balanced coverage (every class counts equally), mean best IoU as a small tie-breaker."""
        values = [v for name, v in self.per_class.items() if self.counts_per_class[name]]
        return (float(np.mean(values)) if values else 0.0) + 0.05 * self.mean_best_iou


def coverage(
    best_iou: np.ndarray, classes: np.ndarray, boxes: np.ndarray, class_names: Sequence[str], threshold: float
) -> Coverage:
    """Summarises best IoUs (K,) into a :class:`Coverage`."""
    hit = best_iou >= threshold

    def shares(groups: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, int]]:
        share = {
            name: float(hit[mask].mean()) if mask.any() else float("nan") for name, mask in groups.items()
        }
        return share, {name: int(mask.sum()) for name, mask in groups.items()}

    per_class, counts_class = shares({name: classes == k for k, name in enumerate(class_names)})
    sizes = size_bucket(boxes)
    per_size, counts_size = shares({name: sizes == name for name, _, _ in SIZE_BUCKETS})
    overall = float(hit.mean()) if len(hit) else float("nan")
    mean_iou = float(best_iou.mean()) if len(best_iou) else 0.0
    return Coverage(overall, per_class, per_size, mean_iou, counts_class, counts_size)


@dataclasses.dataclass
class AnchorShapes:
    """Anchor sizes per level (pixels), scales and aspect ratios (height / width): ``AnchorGenerator``'s."""

    sizes: list[float]
    scales: list[float]
    aspect_ratios: list[float]

    def generator(self, anchor_generator):
        """A copy of ``anchor_generator`` (levels, offset, rounding kept) with these shapes."""
        from keras_retinanet.model.anchors import AnchorGenerator

        config = {**anchor_generator.get_config(), "name": None}
        return AnchorGenerator(
            **{**config, "sizes": self.sizes, "scales": self.scales, "aspect_ratios": self.aspect_ratios}
        )


# The size factor search of optimize_anchors: every level's size times 2^k, k in [-2, 1] in 1/16 octaves.
SIZE_FACTOR_EXPONENTS = np.linspace(-2.0, 1.0, 49)


def optimize_anchors(
    boxes: np.ndarray,
    classes: np.ndarray,
    class_names: Sequence[str],
    anchor_generator,
    image_size: Sequence[int],
    threshold: float = 0.5,
    iterations: int = 300,
    seed: int = 0,
    max_boxes: int = 5000,
    fit_sizes: bool = True,
) -> AnchorShapes:
    """The :class:`AnchorShapes` (sorted) that raise the class-balanced coverage (:meth:`Coverage.objective`),
    with the number of scales and ratios, the levels and the offset kept (the heads keep their shapes).

    1. ``fit_sizes``: one factor for every level's size, the best of :data:`SIZE_FACTOR_EXPONENTS` (ties go to
       the factor nearest 1).
    2. Scales and ratios: seeded random search in log space (scales in [2^-1, 2^2], ratios in [1/4, 4]), then
       coordinate refinement with shrinking steps.

    A candidate replaces the current values only when strictly better.
    """
    rng = np.random.default_rng(seed)
    if len(boxes) > max_boxes:
        pick = rng.choice(len(boxes), max_boxes, replace=False)
        boxes, classes = boxes[pick], classes[pick]
    config = anchor_generator.get_config()
    sizes = [float(s) for s in config["sizes"]]
    n_scales = len(config["scales"])

    def score(shapes: AnchorShapes) -> float:
        best = best_anchor_iou_fast(boxes, shapes.generator(anchor_generator), image_size)
        return coverage(best, classes, boxes, class_names, threshold).objective()

    def shapes_of(log_params: np.ndarray, level_sizes: list[float]) -> AnchorShapes:
        params = np.exp2(log_params)
        return AnchorShapes(
            level_sizes,
            sorted(float(v) for v in params[:n_scales]),
            sorted(float(v) for v in params[n_scales:]),
        )

    current = np.log2(np.array(list(config["scales"]) + list(config["aspect_ratios"]), np.float64))
    best_score = score(shapes_of(current, sizes))
    if fit_sizes:
        # Nearest to 1 first, so that on a tie the smallest change wins.
        for exponent in sorted(SIZE_FACTOR_EXPONENTS, key=abs):
            candidate = [s * float(2.0**exponent) for s in config["sizes"]]
            s = score(shapes_of(current, candidate))
            if s > best_score:
                sizes, best_score = candidate, s

    low = np.array([-1.0] * n_scales + [-2.0] * (len(current) - n_scales))
    high = np.array([2.0] * len(current))
    best_params = current
    for _ in range(iterations // 2):
        candidate = rng.uniform(low, high)
        s = score(shapes_of(candidate, sizes))
        if s > best_score:
            best_params, best_score = candidate, s
    step = 0.25
    evaluations = iterations // 2
    while evaluations < iterations and step > 0.01:
        improved = False
        for i in range(len(best_params)):
            for direction in (-1.0, 1.0):
                candidate = best_params.copy()
                candidate[i] = np.clip(candidate[i] + direction * step, low[i], high[i])
                s = score(shapes_of(candidate, sizes))
                evaluations += 1
                if s > best_score:
                    best_params, best_score, improved = candidate, s, True
        if not improved:
            step /= 2
    return shapes_of(best_params, sizes)
