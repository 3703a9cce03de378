"""The detection confusion matrix (classes + background) at one IoU and one score threshold.

Per image, detections scored >= ``score_threshold`` are matched to ground-truth boxes whatever their classes,
greedily by IoU (>= ``iou_threshold``), each at most once, as Ultralytics and mmdetection do. A matched pair adds
one to ``matrix[true class, predicted class]``, an unmatched box to ``matrix[true class, K]`` (missed), an
unmatched detection to ``matrix[K, predicted class]`` (background). Ignore boxes take part in the matching, but
neither they nor the detections matched to them are counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_retinanet.boxes import iou, match_greedy
from keras_retinanet.conventions import DISPLAY_SCORE_THRESHOLD
from keras_retinanet.evaluation.coco import detection_arrays, truth_arrays


@dataclasses.dataclass
class ConfusionResult:
    """What :func:`confusion_matrix` returns.

    Attributes:
        matrix: (K + 1, K + 1) int64 counts, rows true class, columns predicted class, index K background.
        false_positives: (N,) per image, detections that are not a box of their class.
        missed: (N,) per image, ground-truth boxes not found as their class.
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
    """The confusion matrix of the module docstring; ``examples`` and ``detections`` as ``evaluate_detections``
    takes them, ``num_classes`` K."""
    if len(examples) != len(detections):
        raise ValueError(f"{len(examples)} examples but {len(detections)} detection entries")
    background = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    false_positives = np.zeros(len(examples), np.int64)
    missed = np.zeros(len(examples), np.int64)
    for index, (example, det) in enumerate(zip(examples, detections, strict=True)):
        gt_boxes, gt_classes, ignore = truth_arrays(example)
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
