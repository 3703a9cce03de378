"""Per-class precision, recall and F1 at a score threshold, and the threshold that maximises F1.

True positives are an evaluated ``COCOeval``'s matches at IoU 0.5 (area "all", 100 detections); crowd / ignore
matches count neither way. At threshold s, ``precision = TP(s) / D(s)`` and ``recall = TP(s) / G`` over the
``D(s)`` detections scored >= s (``G``: the class's ground-truth boxes). The F1-optimal threshold is the score
where F1 peaks among cuts that never split equal scores; the highest such score on ties.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _class_matches(cocoeval, iou: float = 0.5) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    """{category id: (scores (D,) sorted high to low, true positive flags (D,), number of positives)}."""
    params = cocoeval.params
    t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - iou)))
    area_all = list(params.areaRng[list(params.areaRngLbl).index("all")])
    gathered: dict[int, tuple[list, list, int]] = {cat: ([], [], 0) for cat in params.catIds}
    for entry in cocoeval.evalImgs:
        if entry is None or list(entry["aRng"]) != area_all:
            continue
        scores, flags, positives = gathered[entry["category_id"]]
        keep = ~np.asarray(entry["dtIgnore"][t], bool)
        scores += list(np.asarray(entry["dtScores"])[keep])
        flags += list(np.asarray(entry["dtMatches"][t])[keep] > 0)
        gathered[entry["category_id"]] = (
            scores,
            flags,
            positives + int(np.sum(~np.asarray(entry["gtIgnore"], bool))),
        )
    result = {}
    for cat, (scores, flags, positives) in gathered.items():
        scores, flags = np.asarray(scores, np.float64), np.asarray(flags, bool)
        order = np.argsort(-scores, kind="mergesort")  # COCOeval's own order
        result[cat] = (scores[order], flags[order], positives)
    return result


def operating_points(cocoeval, class_names: Sequence[str], score_threshold: float) -> dict[str, dict]:
    """``{class name: {"positives": G, "detections": D(s), "precision", "recall" (at s; None when undefined),
    "f1_threshold", "f1_precision", "f1_recall", "f1"}}`` (``f1_*`` None without a true positive)."""
    points = {}
    for cat, (scores, flags, positives) in _class_matches(cocoeval).items():
        tp = np.cumsum(flags)
        count = int(np.sum(scores >= score_threshold))
        true_positives = int(tp[count - 1]) if count else 0
        point = {
            "positives": positives,
            "detections": count,
            "precision": true_positives / count if count else None,
            "recall": true_positives / positives if positives else None,
            "f1_threshold": None,
            "f1_precision": None,
            "f1_recall": None,
            "f1": None,
        }
        if positives and len(scores) and tp[-1] > 0:
            cuts = np.flatnonzero(np.append(scores[1:] < scores[:-1], True))  # last index of each score
            precision = tp[cuts] / (cuts + 1)
            recall = tp[cuts] / positives
            f1 = np.divide(
                2 * precision * recall, precision + recall, out=np.zeros(len(cuts)), where=tp[cuts] > 0
            )
            best = int(np.argmax(f1))
            point.update(
                f1_threshold=float(scores[cuts[best]]),
                f1_precision=float(precision[best]),
                f1_recall=float(recall[best]),
                f1=float(f1[best]),
            )
        points[str(class_names[cat - 1])] = point
    return points
