"""Assigns anchors to ground-truth boxes (positive / negative / ignored): by fixed IoU thresholds (the paper) or
by ATSS's adaptive ones (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection via
Adaptive Training Sample Selection", CVPR 2020)."""

from __future__ import annotations

import keras
from keras import ops

POSITIVE = 1
NEGATIVE = 0
IGNORED = -1


@keras.saving.register_keras_serializable(package="keras_retinanet")
class Matcher:
    """IoU matcher of the RetinaNet paper, or ATSS's.

    ``matching="iou"``: an anchor whose best IoU with a valid box is >= ``positive_threshold`` is positive (matched
    to that box), < ``negative_threshold`` negative, in between ignored; ``allow_low_quality_matches``
    (torchvision) also makes each box's best anchors positive.

    ``matching="atss"``: for each box, the anchors at the ``atss_topk`` locations per level nearest its centre are
    candidates; those whose IoU reaches the candidates' mean + std (unbiased) and whose centre lies inside the
    box are positive (an anchor positive for several boxes goes to the best), every other anchor negative.
    """

    def __init__(
        self,
        positive_threshold: float = 0.5,
        negative_threshold: float = 0.4,
        allow_low_quality_matches: bool = False,
        matching: str = "iou",
        atss_topk: int = 9,
    ):
        if matching not in ("iou", "atss"):
            raise ValueError(f"Matcher matching must be 'iou' or 'atss', got {matching!r}")
        if isinstance(atss_topk, bool) or not isinstance(atss_topk, int) or atss_topk < 1:
            raise ValueError(f"Matcher atss_topk must be an integer >= 1, got {atss_topk!r}")
        self.matching = matching
        self.atss_topk = atss_topk
        if negative_threshold > positive_threshold:
            raise ValueError(
                f"negative_threshold ({negative_threshold}) must not exceed positive_threshold "
                f"({positive_threshold})"
            )
        self.positive_threshold = float(positive_threshold)
        self.negative_threshold = float(negative_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, iou, valid, anchors=None, boxes=None, level_sizes=None, anchors_per_location=1):
        """Matches anchors to boxes.

        Args:
            iou: (..., N, M) IoU of N anchors with M ground-truth boxes.
            valid: (..., M) bool, False for padding boxes (they never match).
            anchors, boxes, level_sizes, anchors_per_location: for ``matching="atss"`` only: the (N, 4) and
                (..., M, 4) xyxy anchors and boxes, the anchors of each level and of each location.
        Returns:
            matched_index: (..., N) int32 index of each anchor's best box (0 when there is no valid box).
            state: (..., N) int32, ``POSITIVE`` (1), ``NEGATIVE`` (0) or ``IGNORED`` (-1).
        """
        valid = ops.cast(valid, "bool")
        # Padding boxes get IoU -1 so they never win the argmax and never pass a threshold.
        iou = ops.where(valid[..., None, :], iou, -1.0)
        num_boxes = ops.shape(iou)[-1]
        if isinstance(num_boxes, int) and num_boxes == 0:
            shape = ops.shape(iou)[:-1]
            return ops.zeros(shape, "int32"), ops.zeros(shape, "int32")
        if self.matching == "atss":
            if anchors is None or boxes is None or level_sizes is None:
                raise ValueError("Matcher(matching='atss') needs the anchors, the boxes and the level sizes")
            return self._match_atss(iou, valid, anchors, boxes, level_sizes, anchors_per_location)
        best_iou = ops.max(iou, axis=-1)
        matched_index = _first_best(iou, best_iou)
        positive = best_iou >= self.positive_threshold
        if self.allow_low_quality_matches:
            best_iou_per_box = ops.max(iou, axis=-2, keepdims=True)
            is_best_for_a_box = (iou == best_iou_per_box) & (best_iou_per_box > 0.0)
            positive = positive | ops.any(is_best_for_a_box, axis=-1)
        negative = (best_iou < self.negative_threshold) & ~positive
        state = ops.where(positive, POSITIVE, ops.where(negative, NEGATIVE, IGNORED))
        return matched_index, ops.cast(state, "int32")

    def _match_atss(self, iou, valid, anchors, boxes, level_sizes, anchors_per_location):
        anchor_centres = (anchors[:, :2] + anchors[:, 2:]) / 2.0  # (N, 2)
        box_centres = (boxes[..., :2] + boxes[..., 2:]) / 2.0  # (..., M, 2)
        # The anchors of a location are consecutive and share its centre (AnchorGenerator's order), so the
        # nearest locations are found once per location: anchors_per_location times less work than per anchor.
        location_centres = anchor_centres[::anchors_per_location]  # (L, 2)
        offsets = location_centres[:, None, :] - box_centres[..., None, :, :]  # (..., L, M, 2)
        squared_distance = ops.sum(offsets * offsets, axis=-1)  # (..., L, M)
        candidates, start = [], 0
        for size in level_sizes:
            locations = size // anchors_per_location
            level = squared_distance[..., start : start + locations, :]
            # Ties at the k-th smallest distance are candidates too.
            candidates.append(level <= _kth_smallest(level, min(self.atss_topk, locations))[..., None, :])
            start += locations
        candidate = ops.repeat(ops.concatenate(candidates, axis=-2), anchors_per_location, axis=-2)
        candidate = candidate & valid[..., None, :]
        count = ops.sum(ops.cast(candidate, "float32"), axis=-2)  # (..., M)
        mean = ops.sum(ops.where(candidate, iou, 0.0), axis=-2) / ops.maximum(count, 1.0)
        squares = ops.where(candidate, ops.square(iou - mean[..., None, :]), 0.0)
        std = ops.sqrt(ops.sum(squares, axis=-2) / ops.maximum(count - 1.0, 1.0))
        x, y = anchor_centres[:, 0][:, None], anchor_centres[:, 1][:, None]  # (N, 1)
        inside = (x > boxes[..., None, :, 0]) & (x < boxes[..., None, :, 2])
        inside = inside & (y > boxes[..., None, :, 1]) & (y < boxes[..., None, :, 3])
        chosen = candidate & inside & (iou >= (mean + std)[..., None, :])
        chosen_iou = ops.where(chosen, iou, -1.0)
        best_iou = ops.max(chosen_iou, axis=-1)
        matched_index = _first_best(chosen_iou, best_iou)
        state = ops.where(best_iou > -1.0, POSITIVE, NEGATIVE)
        return matched_index, ops.cast(state, "int32")

    def get_config(self) -> dict:
        names = (
            "positive_threshold",
            "negative_threshold",
            "allow_low_quality_matches",
            "matching",
            "atss_topk",
        )
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_config(cls, config: dict) -> Matcher:
        config = dict(config)
        if "kind" in config:  # files saved before 0.4 named the matching rule "kind"
            config["matching"] = config.pop("kind")
        return cls(**config)


def _first_best(values, best):
    """(..., N) int32: the first index along the last axis of ``values`` (..., N, M) that equals ``best``
    (..., N), as argmax would give, but 2-3x faster than argmax on CPU."""
    num = ops.shape(values)[-1]
    index = ops.arange(num, dtype="int32")
    return ops.min(ops.where(values == best[..., None], index, num), axis=-1)


def _kth_smallest(values, k: int):
    """(..., M): the k-th smallest of ``values`` (..., L, M) along L, counting repeats, as ``top_k`` would give
    (k passes of min-and-remove: XLA compiles ``top_k`` to a slow sort on CPU)."""
    remaining = values
    taken = ops.zeros_like(values[..., 0, :])
    kth = taken
    for _ in range(k):
        smallest = ops.min(remaining, axis=-2)
        kth = ops.where(taken < k, smallest, kth)
        at_smallest = remaining <= smallest[..., None, :]
        taken = taken + ops.sum(ops.cast(at_smallest, values.dtype), axis=-2)
        remaining = ops.where(at_smallest, float("inf"), remaining)
    return kth
