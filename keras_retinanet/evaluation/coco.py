"""COCO-style box evaluation: the package's examples and detections as COCO dicts, scored by pycocotools.

- Ground truth: common example dicts of ``keras_retinanet.data`` (``boxes`` (M, 4) absolute xyxy pixels,
  ``classes`` (M,) in 0..K-1, optional ``ignore`` (M,) bool, ``height``, ``width``).
- Detections: one entry per example (same order), a mapping or object with ``boxes`` (D, 4) absolute xyxy
  original pixels, ``scores`` (D,) and ``classes`` (D,); padding rows (class < 0) are dropped.

Ignore boxes (VOC ``difficult``, COCO ``iscrowd``) and degenerate ones (zero width or height) go to pycocotools
as ``iscrowd=1``: never a miss, and a detection matching only one is neither a true nor a false positive.
Metrics are pycocotools' fractions in [0, 1], ``-1.0`` where undefined (no small objects, a class without
ground truth).
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
from keras_retinanet.evaluation.pr_curves import class_precision, write_pr_curves

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


def truth_arrays(example: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (M, 4) float64 xyxy, classes (M,) int64, ignore (M,) bool)`` of a common example."""
    boxes = np.asarray(example.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
    classes = np.asarray(example.get("classes", np.zeros(0)), np.int64).reshape(-1)
    ignore = example.get("ignore")
    ignore = np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool).reshape(-1)
    return boxes, classes, ignore


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) absolute xyxy -> COCO's x, y, width, height."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)


def examples_to_coco(examples: Sequence[Mapping[str, Any]], class_names: Sequence[str]) -> dict:
    """A COCO ground-truth dataset dict (``images``, ``annotations`` with bbox ``[x, y, w, h]``, ``categories``).

    Image ids are ``1..N`` in example order (duplicated or zero reader ids cannot confuse pycocotools; the
    reader's id is kept as ``"source_id"``), category ids ``1..K`` for class ids ``0..K-1``, annotation ids
    from 1 (pycocotools treats id 0 as "unmatched").
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
        boxes, classes, ignore = truth_arrays(example)
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
    """``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"[, "category_name"][, "file_name"]}]`` of
    per-image detections (module docstring), plain Python numbers.

    ``category_offset`` is added to the class id (1 matches :func:`examples_to_coco`, 0 keeps 0-based ids).
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
    """``(evaluated COCOeval (bbox), what summarize() printed)``, pycocotools' prints captured.

    ``iou_thresholds``: None for COCO's ten (0.5:0.95); else only these, area "all" only and no summary ("").
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
    :func:`evaluate_detections`, ids as in :func:`examples_to_coco`, ``iou_thresholds`` as in
    :func:`run_cocoeval`)."""
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
    """COCO box metrics of N ``detections`` against N ``examples`` (module docstring); a precision-recall PNG per
    class into ``pr_curve_dir`` when given; ``cocoeval``: :func:`coco_evaluation` of these, when known.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100": float, "per_class": {name: {"AP", "AP50"}}}``,
        fractions in [0, 1] or -1.0 where undefined (pycocotools' convention).
    """
    if cocoeval is None:
        cocoeval = coco_evaluation(examples, detections, class_names)
    metrics: dict[str, Any] = {key: float(cocoeval.stats[index]) for key, index in _STATS_INDEX.items()}
    iou50 = int(np.argmin(np.abs(cocoeval.params.iouThrs - 0.5)))
    metrics["per_class"] = {
        name: {"AP": mean_defined(p), "AP50": mean_defined(p[iou50])}
        for name, p in class_precision(cocoeval, class_names).items()
    }
    if pr_curve_dir is not None:
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
