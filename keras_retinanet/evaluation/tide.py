"""The TIDE error breakdown: how much AP50 each kind of detection error costs.

Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020 (section 2.2), as its
reference implementation (``tidecv``) where the paper is silent; foreground IoU ``t_f = 0.5``, background
``t_b = 0.1``. True positives are ``COCOeval``'s matches at ``t_f``. Every other detection gets the first type
that fits, IoU being its largest overlap with a ground-truth box of the kind named:

- ``Loc``: ``t_b <= IoU <= t_f`` with a box of its class; ``Cls``: ``IoU >= t_f`` with another class's box;
- ``Dupe``: ``IoU >= t_f`` with a box of its class that a higher-scored detection matched;
- ``Bkg``: ``IoU <= t_b`` with every box; ``Both``: anything else.

``Miss``: a ground-truth box that no detection matched and no ``Cls`` or ``Loc`` error could fix.

An error type costs ``AP50(after fixing every error of that type) - AP50``, per class and overall (mean over
classes with ground truth). Fixing ``Cls`` / ``Loc``: the highest-scored error aimed at an unmatched box takes
its class and coordinates; the others of the type are removed. ``Dupe``, ``Bkg``, ``Both``: removed. ``Miss``:
those boxes are removed (a class whose every box is missed has no AP then, -1.0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_retinanet.boxes import iou as box_iou
from keras_retinanet.evaluation.coco import (
    coco_evaluation,
    coco_from_dict,
    mean_defined,
    results_to_coco,
    run_cocoeval,
)
from keras_retinanet.evaluation.pr_curves import class_precision

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")  # in the paper's order

ERROR_NAMES = {
    "Cls": "classification",
    "Loc": "localisation",
    "Both": "classification and localisation",
    "Dupe": "duplicate",
    "Bkg": "background",
    "Miss": "missed",
}

FOREGROUND_IOU = 0.5
BACKGROUND_IOU = 0.1


@dataclasses.dataclass
class ErrorBreakdown:
    """What :func:`error_breakdown` returns; AP values are fractions, -1.0 where undefined (no ground truth).

    Attributes:
        ap50: AP at IoU ``foreground_iou``, mean over classes with ground truth.
        delta: {error type: AP50 after fixing that type - ap50}; ``per_class_*``: the same per class name.
        counts: {error type: number of errors} (a detection error counts for the detection's class, ``Miss`` for
            the box's class).
        detection_errors: {COCO detection id: error type}; missed: COCO ids of the missed ground-truth boxes.
    """

    ap50: float
    per_class_ap50: dict[str, float]
    delta: dict[str, float]
    per_class_delta: dict[str, dict[str, float]]
    counts: dict[str, int]
    per_class_counts: dict[str, dict[str, int]]
    detection_errors: dict[int, str]
    missed: list[int]
    foreground_iou: float = FOREGROUND_IOU
    background_iou: float = BACKGROUND_IOU


def _xyxy(annotations: list[dict]) -> np.ndarray:
    """(N, 4) xyxy boxes of N COCO annotations (their ``bbox`` is xywh)."""
    boxes = np.array([a["bbox"] for a in annotations], np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def _ap50(cocoeval, class_names: Sequence[str]) -> tuple[float, dict[str, float]]:
    """(mean AP at the run's single IoU threshold, {class: AP}) of a ``run_cocoeval(..., [iou])`` result."""
    per_class = {name: mean_defined(p[0]) for name, p in class_precision(cocoeval, class_names).items()}
    defined = [v for v in per_class.values() if v > -1]
    return (float(np.mean(defined)) if defined else -1.0), per_class


def _true_positives(base: Any) -> tuple[dict[int, int], set[int]]:
    """``({detection id: ground-truth id} of the true positives, detections COCOeval considered)``."""
    matched: dict[int, int] = {}  # detection id -> ground-truth id (true positives)
    considered: set[int] = set()  # detections COCOeval looked at (top 100 per image and class), not ignored
    for entry in base.evalImgs:
        if entry is None:
            continue
        for j, dt_id in enumerate(entry["dtIds"]):
            if entry["dtIgnore"][0, j]:
                continue
            considered.add(int(dt_id))
            if entry["dtMatches"][0, j] > 0:
                matched[int(dt_id)] = int(entry["dtMatches"][0, j])
    return matched, considered


def _classify_false_positives(
    coco_gt: Any,
    coco_dt: Any,
    matched: dict[int, int],
    considered: set[int],
    foreground_iou: float,
    background_iou: float,
) -> tuple[dict[int, str], dict[int, int], dict[int, tuple[float, int]]]:
    """(detection id -> TIDE error type of each considered false positive, Cls / Loc error -> the ground-truth
    id it was aimed at, unmatched ground-truth id -> (score, detection id) of the best error aimed at it)."""
    used_gt = set(matched.values())
    errors: dict[int, str] = {}
    targets: dict[int, int] = {}  # Cls / Loc error -> the ground-truth box it was aimed at
    best: dict[int, tuple[float, int]] = {}  # unmatched box -> (score, id) of the best error aimed at it
    for image_id in coco_gt.getImgIds():
        truths = [a for a in coco_gt.imgToAnns[image_id] if not a["iscrowd"]]
        false_positives = [
            d for d in coco_dt.imgToAnns.get(image_id, []) if d["id"] in considered and d["id"] not in matched
        ]
        if not false_positives:
            continue
        if not truths:
            errors.update((d["id"], "Bkg") for d in false_positives)
            continue
        iou = box_iou(_xyxy(false_positives), _xyxy(truths))
        gt_class = np.array([a["category_id"] for a in truths])
        gt_used = np.array([a["id"] in used_gt for a in truths])
        for row, det in zip(iou, false_positives, strict=True):
            same = row * (gt_class == det["category_id"])
            other = row * (gt_class != det["category_id"])
            if background_iou <= same.max() <= foreground_iou:
                kind, target = "Loc", truths[int(same.argmax())]
            elif other.max() >= foreground_iou:
                kind, target = "Cls", truths[int(other.argmax())]
            elif (same * gt_used).max() >= foreground_iou:
                kind, target = "Dupe", None
            elif row.max() <= background_iou:
                kind, target = "Bkg", None
            else:
                kind, target = "Both", None
            errors[det["id"]] = kind
            if target is not None:
                targets[det["id"]] = target["id"]
                if target["id"] not in used_gt and best.get(target["id"], (-1.0, 0))[0] < det["score"]:
                    best[target["id"]] = (det["score"], det["id"])
    return errors, targets, best


def error_breakdown(
    examples: Sequence[Mapping[str, Any]],
    detections: Sequence[Any],
    class_names: Sequence[str],
    foreground_iou: float = FOREGROUND_IOU,
    background_iou: float = BACKGROUND_IOU,
) -> ErrorBreakdown:
    """TIDE's main error types and the AP50 each costs (module docstring); ``examples``, ``detections`` and
    ``class_names`` as ``evaluate_detections`` takes them, ``foreground_iou`` / ``background_iou`` TIDE's ``t_f``
    and ``t_b``."""
    names = [str(n) for n in class_names]
    base = coco_evaluation(examples, detections, names, iou_thresholds=[foreground_iou])
    coco_gt, coco_dt = base.cocoGt, base.cocoDt
    matched, considered = _true_positives(base)
    used_gt = set(matched.values())
    errors, targets, best = _classify_false_positives(
        coco_gt, coco_dt, matched, considered, foreground_iou, background_iou
    )
    missed = [
        a["id"]
        for a in coco_gt.dataset["annotations"]
        if not a["iscrowd"] and a["id"] not in used_gt | set(best)
    ]

    ap50, per_class_ap50 = _ap50(base, names)
    delta, per_class_delta = {}, {name: {} for name in names}
    for kind in ERROR_TYPES:
        fixed_gt, fixed_results = _fix(coco_gt, coco_dt, kind, errors, targets, best, set(missed))
        fixed_gt_coco = coco_from_dict(fixed_gt)
        fixed, _ = run_cocoeval(
            fixed_gt_coco, results_to_coco(fixed_gt_coco, fixed_results), iou_thresholds=[foreground_iou]
        )
        fixed_ap, fixed_per_class = _ap50(fixed, names)
        delta[kind] = fixed_ap - ap50
        for name in names:
            before, after = per_class_ap50[name], fixed_per_class.get(name, -1.0)
            per_class_delta[name][kind] = after - before if before > -1 and after > -1 else -1.0

    category_name = {c["id"]: str(c["name"]) for c in coco_gt.dataset["categories"]}
    counts = {kind: 0 for kind in ERROR_TYPES}
    per_class_counts = {name: {kind: 0 for kind in ERROR_TYPES} for name in names}
    for dt_id, kind in errors.items():
        counts[kind] += 1
        per_class_counts[category_name[coco_dt.anns[dt_id]["category_id"]]][kind] += 1
    for gt_id in missed:
        counts["Miss"] += 1
        per_class_counts[category_name[coco_gt.anns[gt_id]["category_id"]]]["Miss"] += 1
    return ErrorBreakdown(
        ap50,
        per_class_ap50,
        delta,
        per_class_delta,
        counts,
        per_class_counts,
        errors,
        missed,
        foreground_iou,
        background_iou,
    )


def _fix(coco_gt, coco_dt, kind, errors, targets, best, missed) -> tuple[dict, list[dict]]:
    """(ground-truth dataset dict, results list) with every error of ``kind`` fixed (module docstring)."""
    results = []
    for det in coco_dt.dataset["annotations"]:
        result = {key: det[key] for key in ("image_id", "category_id", "bbox", "score")}
        if errors.get(det["id"]) == kind:
            if kind not in ("Cls", "Loc"):
                continue
            target = targets[det["id"]]
            if best.get(target, (0.0, None))[1] != det["id"]:
                continue  # aimed at a matched box, or a better-scored error takes this box
            truth = coco_gt.anns[target]
            result.update(category_id=truth["category_id"], bbox=list(truth["bbox"]))
        results.append(result)
    dataset = dict(coco_gt.dataset)
    if kind == "Miss":
        dataset["annotations"] = [a for a in dataset["annotations"] if a["id"] not in missed]
    return dataset, results
