"""COCO-style box evaluation with pycocotools.

The numbers come from ``pycocotools.cocoeval.COCOeval`` itself; this module only converts the package's data
structures into COCO dictionaries and reads the results back.

Inputs:

- Ground truth: the common example dicts produced by every reader in ``keras_retinanet.data``:
  ``{"image_id": int, "boxes": float32 (M, 4) absolute xyxy pixels, "classes": int32 (M,) in 0..K-1,
  "ignore": bool (M,), "height": int, "width": int, ...}``.
- Detections: one entry per example (same order), each a mapping (or an object with attributes) holding
  ``"boxes"`` float (D, 4) absolute xyxy in the *original* image pixels, ``"scores"`` float (D,) and
  ``"classes"`` int (D,) in 0..K-1. Padding rows (class < 0) are dropped.

Ignore boxes (VOC ``difficult``, COCO ``iscrowd``) are handed to pycocotools as ``iscrowd=1``, exactly as
COCO treats crowd regions: they are never counted as misses, and a detection that overlaps one (intersection
over the detection's area >= the IoU threshold) and matches nothing else is neither a true nor a false
positive.
Degenerate ground-truth boxes (zero width or height) can never be matched, so they are treated as ignore
boxes too (and counted in a debug log message).

The result is a dict with exactly the keys ``AP, AP50, AP75, APs, APm, APl, AR100, per_class``, values as
pycocotools reports them: fractions in [0, 1], and ``-1.0`` where the metric is undefined (e.g. ``APs`` when
the data set has no small objects, or a class with no ground-truth box). ``per_class`` maps each class name to
``{"AP": float, "AP50": float}``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from keras_retinanet.conventions import class_name

logger = logging.getLogger(__name__)

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
"""Scalar metric keys of the dict returned by :func:`evaluate_detections`, in pycocotools' order."""

# Index of each scalar metric in ``COCOeval.stats`` (see COCOeval.summarize).
_STATS_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a mapping or an object with attributes."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def detection_arrays(det: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(boxes (D, 4) float64 xyxy, scores (D,), classes (D,) int64)`` with padding rows removed."""
    boxes = np.asarray(_field(det, "boxes", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(_field(det, "scores", np.zeros((0,))), dtype=np.float64).reshape(-1)
    classes = np.asarray(_field(det, "classes", np.zeros((0,))), dtype=np.float64).reshape(-1)
    num = _field(det, "num_detections", None)
    if num is not None:
        n = int(np.asarray(num).reshape(-1)[0])
        boxes, scores, classes = boxes[:n], scores[:n], classes[:n]
    if not (len(boxes) == len(scores) == len(classes)):
        raise ValueError(
            f"detections have inconsistent lengths: boxes {len(boxes)}, scores {len(scores)}, "
            f"classes {len(classes)}"
        )
    keep = (classes >= 0) & np.isfinite(scores) & np.all(np.isfinite(boxes), axis=1)
    return boxes[keep], scores[keep], classes[keep].astype(np.int64)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) absolute xyxy -> COCO's x, y, width, height."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)


def examples_to_coco(examples: Sequence[Mapping[str, Any]], class_names: Sequence[str]) -> dict:
    """Build a COCO ground-truth dataset dict from common examples.

    Images get the ids ``1..N`` in the order of ``examples`` (so that duplicated or zero reader ids cannot
    confuse pycocotools); the reader's ``image_id`` is kept as ``"source_id"``. Categories get the ids
    ``1..K`` for class ids ``0..K-1``. Annotation ids start at 1 (pycocotools treats id 0 as "unmatched").

    Args:
        examples: common example dicts, see the module docstring. ``ignore`` is optional (all False).
        class_names: the K ordered class names.

    Returns:
        A dict with ``images``, ``annotations`` (bbox ``[x, y, w, h]``, ``area = w * h``, ``iscrowd``) and
        ``categories``, ready for ``pycocotools.coco.COCO``.
    """
    num_classes = len(class_names)
    images, annotations = [], []
    degenerate = 0
    for index, example in enumerate(examples):
        image_id = index + 1
        height, width = example.get("height"), example.get("width")
        images.append(
            {
                "id": image_id,
                "source_id": int(example.get("image_id", index)),
                "file_name": str(example.get("image_path", "")),
                "height": int(height) if height is not None else 0,
                "width": int(width) if width is not None else 0,
            }
        )
        boxes = np.asarray(example.get("boxes", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
        classes = np.asarray(example.get("classes", np.zeros((0,))), dtype=np.int64).reshape(-1)
        ignore = example.get("ignore")
        ignore = np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool).reshape(-1)
        if not (len(boxes) == len(classes) == len(ignore)):
            raise ValueError(
                f"example {index} ({images[-1]['file_name']}): boxes/classes/ignore lengths differ"
            )
        for box, cls, ign in zip(_xywh(boxes), classes, ignore, strict=True):
            if cls < 0:  # padding
                continue
            if cls >= num_classes:
                raise ValueError(
                    f"example {index} ({images[-1]['file_name']}): class id {cls} >= number of classes "
                    f"{num_classes}"
                )
            crowd = bool(ign)
            if box[2] <= 0 or box[3] <= 0:
                degenerate += 1
                crowd = True
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(max(box[2], 0.0) * max(box[3], 0.0)),
                    "iscrowd": int(crowd),
                }
            )
    if degenerate:
        logger.debug("%d degenerate ground-truth boxes (zero width or height) treated as ignore", degenerate)
    categories = [{"id": k + 1, "name": str(name)} for k, name in enumerate(class_names)]
    return {"info": {}, "images": images, "annotations": annotations, "categories": categories}


def detections_to_coco_results(
    detections: Iterable[Any],
    image_ids: Sequence[int],
    category_offset: int = 0,
    class_names: Sequence[str] | None = None,
    file_names: Sequence[str] | None = None,
) -> list[dict]:
    """Convert per-image detections to a COCO results list.

    Args:
        detections: one entry per image with ``boxes`` (D, 4) xyxy pixels, ``scores`` (D,), ``classes`` (D,).
        image_ids: the ``image_id`` written for each entry.
        category_offset: added to the class id to make ``category_id`` (1 to match :func:`examples_to_coco`,
            0 to keep the model's 0-based class ids).
        class_names: when given, each result also carries ``category_name``.
        file_names: when given, each result also carries ``file_name``.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score", ...}, ...]`` with plain Python numbers.
    """
    results = []
    for i, (det, image_id) in enumerate(zip(detections, image_ids, strict=True)):
        boxes, scores, classes = detection_arrays(det)
        for box, score, cls in zip(_xywh(boxes), scores, classes, strict=True):
            item = {
                "image_id": int(image_id),
                "category_id": int(cls) + category_offset,
                "bbox": [round(float(v), 3) for v in box],
                "score": round(float(score), 5),
            }
            if class_names is not None:
                item["category_name"] = class_name(int(cls), class_names)
            if file_names is not None:
                item["file_name"] = str(file_names[i])
            results.append(item)
    return results


def coco_from_dict(dataset: dict):
    """A ``pycocotools.coco.COCO`` built from a dataset dict (no file), its index printed nowhere."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def results_to_coco(coco_gt, results: list[dict]):
    """COCO results object; like ``COCO.loadRes`` but also valid for an empty result list."""
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    return coco_from_dict(
        {
            "info": {},
            "images": list(coco_gt.dataset["images"]),
            "categories": list(coco_gt.dataset["categories"]),
            "annotations": [],
        }
    )


def run_cocoeval(coco_gt, coco_dt, iou_thresholds: Sequence[float] | None = None):
    """Run ``COCOeval`` (bbox), capturing pycocotools' prints.

    Args:
        iou_thresholds: None for COCO's ten (0.5:0.95); else only these, with area range "all" only and no
            summary (for analyses that need one IoU, e.g. the error breakdown at 0.5).

    Returns:
        ``(cocoeval, summary_text)``: the evaluated ``COCOeval`` object and what ``summarize()`` printed ("" when
        ``iou_thresholds`` is given).
    """
    from pycocotools.cocoeval import COCOeval

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        cocoeval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if iou_thresholds is not None:
            cocoeval.params.iouThrs = np.asarray(iou_thresholds, np.float64)
            cocoeval.params.areaRng = [cocoeval.params.areaRng[0]]
            cocoeval.params.areaRngLbl = ["all"]
        cocoeval.evaluate()
        cocoeval.accumulate()
    if iou_thresholds is not None:
        return cocoeval, ""
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        cocoeval.summarize()
    logger.debug("pycocotools:\n%s%s", buffer.getvalue(), summary.getvalue())
    return cocoeval, summary.getvalue()


def mean_defined(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


def coco_evaluation(
    examples: Sequence[Mapping[str, Any]],
    detections: Sequence[Any],
    class_names: Sequence[str],
    iou_thresholds: Sequence[float] | None = None,
):
    """The evaluated ``COCOeval`` of ``detections`` against ``examples`` (arguments as in
    :func:`evaluate_detections`; ``iou_thresholds`` as in :func:`run_cocoeval`).

    Image ids are ``1..N`` in the order of ``examples``, category ids ``1..K`` for class ids ``0..K-1``; the
    ground truth and the results are ``cocoeval.cocoGt`` and ``cocoeval.cocoDt``.
    """
    if len(examples) != len(detections):
        raise ValueError(f"{len(examples)} examples but {len(detections)} detection entries")
    gt_dict = examples_to_coco(examples, class_names)
    coco_gt = coco_from_dict(gt_dict)
    image_ids = [image["id"] for image in gt_dict["images"]]
    results = detections_to_coco_results(detections, image_ids, category_offset=1)
    for result in results:
        if not 1 <= result["category_id"] <= len(class_names):
            raise ValueError(
                f"detection class id {result['category_id'] - 1} outside 0..{len(class_names) - 1}"
            )
    cocoeval, _ = run_cocoeval(coco_gt, results_to_coco(coco_gt, results), iou_thresholds)
    return cocoeval


def evaluate_detections(
    examples: Sequence[Mapping[str, Any]],
    detections: Sequence[Any],
    class_names: Sequence[str],
    pr_curve_dir: str | os.PathLike | None = None,
    cocoeval: Any = None,
) -> dict:
    """COCO box metrics of ``detections`` against the ground truth in ``examples``.

    Args:
        examples: N common example dicts (ground truth; see the module docstring).
        detections: N per-image detections in the same order, boxes (D, 4) absolute xyxy in original pixels.
        class_names: the K class names; class id k is ``class_names[k]``.
        pr_curve_dir: when given, a precision-recall PNG per class is written there (``pr_<class>.png``).
        cocoeval: the result of :func:`coco_evaluation` for these arguments, when the caller has it already.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100": float, "per_class": {name: {"AP", "AP50"}}}``,
        fractions in [0, 1] or -1.0 where undefined (pycocotools' convention).
    """
    if cocoeval is None:
        cocoeval = coco_evaluation(examples, detections, class_names)
    metrics: dict[str, Any] = {key: float(cocoeval.stats[index]) for key, index in _STATS_INDEX.items()}
    # precision: [T iou thresholds, R recall thresholds, K categories, A area ranges, M max dets]
    precision = cocoeval.eval["precision"]
    area_all = list(cocoeval.params.areaRngLbl).index("all")
    max_dets = list(cocoeval.params.maxDets).index(100)
    iou50 = int(np.argmin(np.abs(cocoeval.params.iouThrs - 0.5)))
    per_class = {}
    for k, cat_id in enumerate(cocoeval.params.catIds):
        p = precision[:, :, k, area_all, max_dets]
        per_class[str(class_names[cat_id - 1])] = {"AP": mean_defined(p), "AP50": mean_defined(p[iou50])}
    metrics["per_class"] = per_class
    if pr_curve_dir is not None:
        from keras_retinanet.evaluation.pr_curves import write_pr_curves

        write_pr_curves(cocoeval, class_names, pr_curve_dir)
    return metrics


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A plain-text table of the metrics returned by :func:`evaluate_detections` (fractions in [0, 1])."""

    def fmt(value: float) -> str:
        return "   n/a" if value is None or value < 0 else f"{value:6.3f}"

    lines = ["metric      value"]
    lines += [f"{key:<8} {fmt(metrics[key])}" for key in METRIC_KEYS]
    per_class = metrics.get("per_class") or {}
    if per_class:
        width = max(12, max(len(name) for name in per_class))
        lines += ["", f"{'class':<{width}}     AP   AP50"]
        lines += [
            f"{name:<{width}} {fmt(values['AP'])} {fmt(values['AP50'])}" for name, values in per_class.items()
        ]
    return "\n".join(lines)
