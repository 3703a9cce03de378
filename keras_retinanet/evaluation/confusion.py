"""The detection confusion matrix (classes + background) at one IoU and one score threshold.

Per image, detections scored at least ``score_threshold`` are matched to ground-truth boxes whatever their
classes: pairs with IoU >= ``iou_threshold`` are taken greedily, highest IoU first, each box and each detection at
most once (as Ultralytics and mmdetection draw theirs). Then:

- a matched pair adds one to ``matrix[true class, predicted class]`` (off the diagonal: a confusion);
- a ground-truth box left unmatched adds one to ``matrix[true class, K]`` (missed: predicted "background");
- a detection left unmatched adds one to ``matrix[K, predicted class]`` (a false positive on background).

Rows are the true class (row K: background), columns the predicted class (column K: background); ``matrix[K, K]``
stays 0. Ignore boxes (VOC ``difficult``, COCO ``iscrowd``) take part in the matching, but neither they nor the
detections matched to them are counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_retinanet.boxes import iou, match_greedy
from keras_retinanet.conventions import DISPLAY_SCORE_THRESHOLD
from keras_retinanet.evaluation.coco import detection_arrays


@dataclasses.dataclass
class ConfusionResult:
    """What :func:`confusion_matrix` returns.

    Attributes:
        matrix: (K + 1, K + 1) int64 counts, rows true class, columns predicted class, index K background.
        false_positives: (N,) per image, detections that are not a box of their class (matched to another class
            or to nothing).
        missed: (N,) per image, ground-truth boxes not found as their class.
        iou_threshold, score_threshold: the thresholds used.
    """

    matrix: np.ndarray
    false_positives: np.ndarray
    missed: np.ndarray
    iou_threshold: float
    score_threshold: float

    def normalised(self) -> np.ndarray:
        """(K + 1, K + 1) float: each row divided by its sum (the share of a true class's boxes predicted as each
        class); 0 for rows without counts."""
        totals = self.matrix.sum(axis=1, keepdims=True)
        return np.divide(self.matrix, totals, out=np.zeros(self.matrix.shape), where=totals > 0)


def confusion_matrix(
    examples: Sequence[Mapping[str, Any]],
    detections: Sequence[Any],
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = DISPLAY_SCORE_THRESHOLD,
) -> ConfusionResult:
    """The confusion matrix of the module docstring.

    Args:
        examples: N common example dicts: ``boxes`` (M, 4) xyxy pixels, ``classes`` (M,) in 0..K-1, optional
            ``ignore`` (M,) bool.
        detections: N per-image detections (``boxes`` (D, 4) xyxy pixels of the same image, ``scores``,
            ``classes``), as ``evaluate_detections`` takes them.
        num_classes: K.
    """
    if len(examples) != len(detections):
        raise ValueError(f"{len(examples)} examples but {len(detections)} detection entries")
    background = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    false_positives = np.zeros(len(examples), np.int64)
    missed = np.zeros(len(examples), np.int64)
    for index, (example, det) in enumerate(zip(examples, detections, strict=True)):
        gt_boxes = np.asarray(example.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
        gt_classes = np.asarray(example.get("classes", np.zeros(0)), np.int64).reshape(-1)
        ignore = example.get("ignore")
        ignore = np.zeros(len(gt_boxes), bool) if ignore is None else np.asarray(ignore, bool).reshape(-1)
        valid = gt_classes >= 0
        gt_boxes, gt_classes, ignore = gt_boxes[valid], gt_classes[valid], ignore[valid]
        boxes, scores, classes = detection_arrays(det)
        keep = scores >= score_threshold
        boxes, classes = boxes[keep], classes[keep]
        pairs = np.array(match_greedy(iou(gt_boxes, boxes), iou_threshold), np.int64).reshape(-1, 2)
        lone_gt, lone_det = np.ones(len(gt_boxes), bool), np.ones(len(boxes), bool)
        lone_gt[pairs[:, 0]], lone_det[pairs[:, 1]] = False, False
        pairs = pairs[~ignore[pairs[:, 0]]]
        true, predicted = gt_classes[pairs[:, 0]], classes[pairs[:, 1]]
        lone_true, lone_predicted = gt_classes[lone_gt & ~ignore], classes[lone_det]
        np.add.at(matrix, (true, predicted), 1)
        np.add.at(matrix, (lone_true, background), 1)
        np.add.at(matrix, (background, lone_predicted), 1)
        confused = int((true != predicted).sum())
        false_positives[index] = confused + len(lone_predicted)
        missed[index] = confused + len(lone_true)
    return ConfusionResult(matrix, false_positives, missed, float(iou_threshold), float(score_threshold))
