"""Turns raw RetinaNet outputs into detections: score threshold, per-level top-k, decode, NMS."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

from keras_retinanet.boxes import clip_boxes
from keras_retinanet.model.box_coder import BoxCoder


@keras.saving.register_keras_serializable(package="keras_retinanet")
class DetectionDecoder:
    """Detectron's RetinaNet inference: per level, keep the ``topk_per_level`` (anchor, class) pairs whose
    sigmoid score exceeds ``score_threshold``; decode their boxes; run NMS per class (or across classes);
    keep the best ``max_detections``.

    Args:
        nms_iou_threshold: boxes of the same class overlapping more than this are suppressed.
        class_agnostic: suppress overlapping boxes whatever their classes.
    """

    def __init__(
        self,
        score_threshold: float = 0.05,
        topk_per_level: int = 1000,
        nms_iou_threshold: float = 0.5,
        max_detections: int = 100,
        class_agnostic: bool = False,
    ):
        self.score_threshold = float(score_threshold)
        self.topk_per_level = int(topk_per_level)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.max_detections = int(max_detections)
        self.class_agnostic = bool(class_agnostic)
        for name in ("score_threshold", "nms_iou_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name):g} is not from 0 to 1")
        for name in ("topk_per_level", "max_detections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} must be at least 1")

    def select_candidates(self, logits, deltas, anchors, level_sizes: Sequence[int]):
        """Per-level top-k of the flattened (anchor, class) scores of (B, N, K) logits, (B, N, 4) deltas and
        (N, 4) xyxy anchors, ``level_sizes`` anchors on each level.

        Returns:
            scores (B, C), classes (B, C) int32, candidate deltas (B, C, 4) and anchors (B, C, 4), where C is
            the sum over levels of min(topk_per_level, N_l * K). Scores below the threshold are set to 0.
        """
        num_classes = logits.shape[-1]
        scores, classes, cand_deltas, cand_anchors = [], [], [], []
        start = 0
        for size in level_sizes:
            level_logits = ops.cast(logits[:, start : start + size], "float32")
            top_logits, anchor_index, class_index = self._level_top_k(level_logits, size, num_classes)
            # Ranking by logit is ranking by score (the sigmoid is monotonic), so the sigmoid runs on the k
            # candidates only, not on all N_l * K.
            top_scores = ops.sigmoid(top_logits)
            classes.append(class_index)
            scores.append(ops.where(top_scores > self.score_threshold, top_scores, 0.0))
            cand_deltas.append(tf.gather(deltas[:, start : start + size], anchor_index, batch_dims=1))
            cand_anchors.append(ops.take(anchors[start : start + size], anchor_index, axis=0))
            start += size
        return (
            ops.concatenate(scores, axis=1),
            ops.concatenate(classes, axis=1),
            ops.concatenate(cand_deltas, axis=1),
            ops.concatenate(cand_anchors, axis=1),
        )

    def _level_top_k(self, level_logits, size: int, num_classes: int):
        """The top ``k = min(topk_per_level, size * K)`` (anchor, class) logits of one level: (B, k) logits,
        anchor indices into the level, class ids (int32).

        Two exact stages instead of one slow top-k over (B, size * K): the k anchors with the highest
        best-class logit, then the top k of their (k, K) logits. A tensor ``size`` (unknown image size) pads
        the level with -inf logits up to k anchors.
        """
        batch = ops.shape(level_logits)[0]
        if not isinstance(size, int):
            k = self.topk_per_level
            missing = tf.maximum(k - tf.shape(level_logits)[1], 0)
            level_logits = tf.pad(level_logits, [[0, 0], [0, missing], [0, 0]], constant_values=-float("inf"))
            logits, anchor_index, class_index = self._level_top_k(level_logits, k + 1, num_classes)
            return logits, tf.minimum(anchor_index, tf.maximum(size - 1, 0)), class_index
        k = min(self.topk_per_level, size * num_classes)
        if size <= k:
            flat = ops.reshape(level_logits, (batch, size * num_classes))
            top_logits, top_index = ops.top_k(flat, k=k, sorted=False)
            return top_logits, top_index // num_classes, ops.cast(top_index % num_classes, "int32")
        _, first_anchors = ops.top_k(ops.max(level_logits, axis=-1), k=k, sorted=False)  # (B, k)
        first_logits = tf.gather(level_logits, first_anchors, batch_dims=1)  # (B, k, K)
        flat = ops.reshape(first_logits, (batch, k * num_classes))
        top_logits, top_index = ops.top_k(flat, k=k, sorted=False)
        anchor_index = ops.take_along_axis(first_anchors, top_index // num_classes, axis=1)
        return top_logits, anchor_index, ops.cast(top_index % num_classes, "int32")

    def __call__(
        self, logits, deltas, anchors, level_sizes: Sequence[int], box_coder: BoxCoder, image_shape=None
    ):
        """Decodes a batch: (B, N, K) logits, (B, N, 4) deltas, (N, 4) xyxy anchors, anchors per level; boxes
        clipped to ``image_shape`` (H, W) if given.

        Returns:
            dict ``boxes`` (B, M, 4) float32 xyxy pixels of the network input, ``scores`` (B, M) float32,
            ``classes`` (B, M) int32, ``num_detections`` (B,) int32; M = ``max_detections``; rows past
            ``num_detections`` are zero boxes with score 0 and class -1.
        """
        scores, classes, cand_deltas, cand_anchors = self.select_candidates(
            logits, deltas, anchors, level_sizes
        )
        boxes = box_coder.decode(cand_anchors, cand_deltas)
        if image_shape is not None:
            boxes = clip_boxes(boxes, image_shape[0], image_shape[1])
        if self.class_agnostic:
            index, num = tf.image.non_max_suppression_padded(
                boxes,
                scores,
                max_output_size=self.max_detections,
                iou_threshold=self.nms_iou_threshold,
                score_threshold=self.score_threshold,
                pad_to_max_output_size=True,
            )
            take = lambda values: ops.take_along_axis(values, index, axis=1)  # noqa: E731
            return self._padded(
                ops.take_along_axis(boxes, index[..., None], axis=1), take(scores), take(classes), num
            )
        # Each candidate carries one class: spread its score into a (C, K) matrix for combined NMS.
        class_scores = ops.one_hot(classes, logits.shape[-1], dtype="float32") * scores[..., None]
        nmsed = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :],
            class_scores,
            max_output_size_per_class=self.max_detections,
            max_total_size=self.max_detections,
            iou_threshold=self.nms_iou_threshold,
            score_threshold=self.score_threshold,
            pad_per_class=False,
            clip_boxes=False,
        )
        classes = ops.cast(nmsed.nmsed_classes, "int32")
        return self._padded(nmsed.nmsed_boxes, nmsed.nmsed_scores, classes, nmsed.valid_detections)

    def _padded(self, boxes, scores, classes, num) -> dict:
        """The decoder's dict, rows past ``num`` set to zero boxes, score 0 and class -1."""
        num = ops.cast(num, "int32")
        valid = ops.arange(self.max_detections)[None, :] < num[:, None]
        return {
            "boxes": ops.where(valid[..., None], boxes, 0.0),
            "scores": ops.where(valid, scores, 0.0),
            "classes": ops.where(valid, classes, -1),
            "num_detections": num,
        }

    def get_config(self) -> dict:
        names = ("score_threshold", "topk_per_level", "nms_iou_threshold", "max_detections", "class_agnostic")
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_config(cls, config: dict) -> DetectionDecoder:
        return cls(**config)
