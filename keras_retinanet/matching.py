"""Assigns anchors to ground-truth boxes by IoU (positive / negative / ignored)."""

from __future__ import annotations

import keras
from keras import ops

POSITIVE = 1
NEGATIVE = 0
IGNORED = -1


@keras.saving.register_keras_serializable(package="keras_retinanet")
class Matcher:
    """IoU matcher of the RetinaNet paper.

    An anchor whose best IoU with a valid ground-truth box is >= ``positive_threshold`` is positive (matched
    to that box), < ``negative_threshold`` is negative, and in between is ignored. With
    ``allow_low_quality_matches`` (torchvision, detectron2), every anchor whose IoU equals the best IoU of some
    ground-truth box also becomes positive, so every box gets at least one anchor.

    Args:
        positive_threshold: IoU at or above which an anchor is positive (0.5).
        negative_threshold: IoU below which an anchor is negative (0.4).
        allow_low_quality_matches: promote each box's best anchors to positives.
    """

    def __init__(
        self,
        positive_threshold: float = 0.5,
        negative_threshold: float = 0.4,
        allow_low_quality_matches: bool = False,
    ):
        if negative_threshold > positive_threshold:
            raise ValueError(
                f"negative_threshold ({negative_threshold}) must not exceed positive_threshold "
                f"({positive_threshold})"
            )
        self.positive_threshold = float(positive_threshold)
        self.negative_threshold = float(negative_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, iou, valid):
        """Matches anchors to boxes.

        Args:
            iou: (..., N, M) IoU of N anchors with M ground-truth boxes.
            valid: (..., M) bool, False for padding boxes (they never match).
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
        best_iou = ops.max(iou, axis=-1)
        # The first box with the best IoU, as argmax would give, but 2-3x faster than argmax on CPU.
        box_index = ops.arange(num_boxes, dtype="int32")
        matched_index = ops.min(ops.where(iou == best_iou[..., None], box_index, num_boxes), axis=-1)
        positive = best_iou >= self.positive_threshold
        if self.allow_low_quality_matches:
            best_iou_per_box = ops.max(iou, axis=-2, keepdims=True)
            is_best_for_a_box = (iou == best_iou_per_box) & (best_iou_per_box > 0.0)
            positive = positive | ops.any(is_best_for_a_box, axis=-1)
        negative = (best_iou < self.negative_threshold) & ~positive
        state = ops.where(positive, POSITIVE, ops.where(negative, NEGATIVE, IGNORED))
        return matched_index, ops.cast(state, "int32")

    def get_config(self) -> dict:
        return {
            "positive_threshold": self.positive_threshold,
            "negative_threshold": self.negative_threshold,
            "allow_low_quality_matches": self.allow_low_quality_matches,
        }

    @classmethod
    def from_config(cls, config: dict) -> Matcher:
        return cls(**config)
