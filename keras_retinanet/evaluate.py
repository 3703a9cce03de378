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


def _detection_arrays(det: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """Convert (N, 4) absolute ``x1, y1, x2, y2`` boxes to COCO ``x, y, width, height`` (float64)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


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
        for box, cls, ign in zip(xyxy_to_xywh(boxes), classes, ignore, strict=True):
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
        boxes, scores, classes = _detection_arrays(det)
        for box, score, cls in zip(xyxy_to_xywh(boxes), scores, classes, strict=True):
            item = {
                "image_id": int(image_id),
                "category_id": int(cls) + category_offset,
                "bbox": [round(float(v), 3) for v in box],
                "score": round(float(score), 5),
            }
            if class_names is not None:
                item["category_name"] = str(class_names[cls]) if cls < len(class_names) else str(cls)
            if file_names is not None:
                item["file_name"] = str(file_names[i])
            results.append(item)
    return results


def _coco_from_dict(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _results_coco(coco_gt, results: list[dict]):
    """COCO results object; like ``COCO.loadRes`` but also valid for an empty result list."""
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    return _coco_from_dict(
        {
            "info": {},
            "images": list(coco_gt.dataset["images"]),
            "categories": list(coco_gt.dataset["categories"]),
            "annotations": [],
        }
    )


def run_cocoeval(coco_gt, coco_dt):
    """Run ``COCOeval`` (bbox) with default parameters, capturing pycocotools' prints.

    Returns:
        ``(cocoeval, summary_text)``: the evaluated ``COCOeval`` object and what ``summarize()`` printed.
    """
    from pycocotools.cocoeval import COCOeval

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        cocoeval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        cocoeval.summarize()
    logger.debug("pycocotools:\n%s%s", buffer.getvalue(), summary.getvalue())
    return cocoeval, summary.getvalue()


def _mean_defined(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


def evaluate_detections(
    examples: Sequence[Mapping[str, Any]],
    detections: Sequence[Any],
    class_names: Sequence[str],
    pr_curve_dir: str | os.PathLike | None = None,
) -> dict:
    """COCO box metrics of ``detections`` against the ground truth in ``examples``.

    Args:
        examples: N common example dicts (ground truth; see the module docstring).
        detections: N per-image detections in the same order, boxes (D, 4) absolute xyxy in original pixels.
        class_names: the K class names; class id k is ``class_names[k]``.
        pr_curve_dir: when given, a precision-recall PNG per class is written there (``pr_<class>.png``).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100": float, "per_class": {name: {"AP", "AP50"}}}``,
        fractions in [0, 1] or -1.0 where undefined (pycocotools' convention).
    """
    if len(examples) != len(detections):
        raise ValueError(f"{len(examples)} examples but {len(detections)} detection entries")
    gt_dict = examples_to_coco(examples, class_names)
    coco_gt = _coco_from_dict(gt_dict)
    image_ids = [image["id"] for image in gt_dict["images"]]
    results = detections_to_coco_results(detections, image_ids, category_offset=1)
    for result in results:
        if not 1 <= result["category_id"] <= len(class_names):
            raise ValueError(
                f"detection class id {result['category_id'] - 1} outside 0..{len(class_names) - 1}"
            )
    coco_dt = _results_coco(coco_gt, results)
    cocoeval, _ = run_cocoeval(coco_gt, coco_dt)

    metrics: dict[str, Any] = {key: float(cocoeval.stats[index]) for key, index in _STATS_INDEX.items()}
    # precision: [T iou thresholds, R recall thresholds, K categories, A area ranges, M max dets]
    precision = cocoeval.eval["precision"]
    area_all = list(cocoeval.params.areaRngLbl).index("all")
    max_dets = list(cocoeval.params.maxDets).index(100)
    iou50 = int(np.argmin(np.abs(cocoeval.params.iouThrs - 0.5)))
    per_class = {}
    for k, cat_id in enumerate(cocoeval.params.catIds):
        p = precision[:, :, k, area_all, max_dets]
        per_class[str(class_names[cat_id - 1])] = {"AP": _mean_defined(p), "AP50": _mean_defined(p[iou50])}
    metrics["per_class"] = per_class
    if pr_curve_dir is not None:
        write_pr_curves(cocoeval, class_names, pr_curve_dir)
    return metrics


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A plain-text table of the metrics returned by :func:`evaluate_detections` (values in percent)."""

    def fmt(value: float) -> str:
        return "   n/a" if value is None or value < 0 else f"{100.0 * value:6.2f}"

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


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "class"


def write_pr_curves(cocoeval, class_names: Sequence[str], out_dir: str | os.PathLike) -> list[str]:
    """Write one precision-recall PNG per class from an evaluated ``COCOeval``.

    Curves at IoU 0.5 and 0.75 (area "all", 100 detections), drawn with OpenCV. Classes without ground truth
    get no file. Returns the written paths.
    """
    import cv2

    os.makedirs(out_dir, exist_ok=True)
    precision = cocoeval.eval["precision"]
    recall_thresholds = np.asarray(cocoeval.params.recThrs)
    iou_thresholds = np.asarray(cocoeval.params.iouThrs)
    area_all = list(cocoeval.params.areaRngLbl).index("all")
    max_dets = list(cocoeval.params.maxDets).index(100)
    width, height, margin = 640, 480, 60
    plot_w, plot_h = width - 2 * margin, height - 2 * margin
    paths = []
    for k, cat_id in enumerate(cocoeval.params.catIds):
        name = str(class_names[cat_id - 1])
        curves = precision[:, :, k, area_all, max_dets]
        if np.all(curves < 0):
            continue
        canvas = np.full((height, width, 3), 255, np.uint8)

        def to_px(r: float, p: float) -> tuple[int, int]:
            return int(margin + r * plot_w), int(height - margin - p * plot_h)

        for tick in np.linspace(0, 1, 6):
            cv2.line(canvas, to_px(tick, 0), to_px(tick, 1), (225, 225, 225), 1)
            cv2.line(canvas, to_px(0, tick), to_px(1, tick), (225, 225, 225), 1)
            cv2.putText(
                canvas,
                f"{tick:.1f}",
                (to_px(tick, 0)[0] - 12, height - margin + 20),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
            cv2.putText(
                canvas,
                f"{tick:.1f}",
                (margin - 40, to_px(0, tick)[1] + 5),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
        cv2.rectangle(canvas, to_px(0, 1), to_px(1, 0), (0, 0, 0), 1)
        cv2.putText(
            canvas,
            "recall",
            (width // 2 - 25, height - 15),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.55,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        cv2.putText(
            canvas, "precision", (5, margin - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA
        )
        legend_y = margin - 35
        for iou, colour in ((0.5, (200, 90, 30)), (0.75, (40, 140, 40))):  # BGR
            t = int(np.argmin(np.abs(iou_thresholds - iou)))
            curve = curves[t]
            if np.all(curve < 0):
                continue
            points = np.array(
                [to_px(r, max(p, 0.0)) for r, p in zip(recall_thresholds, curve, strict=True)], np.int32
            )
            cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
            ap = _mean_defined(curve)
            label = f"IoU {iou:.2f}: AP {100 * ap:.1f}"
            cv2.putText(
                canvas,
                label,
                (width - margin - 190, legend_y),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                colour,
                1,
                cv2.LINE_AA,
            )
            legend_y += 18
        cv2.putText(canvas, name, (margin, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
        path = os.path.join(os.fspath(out_dir), f"pr_{_safe_name(name)}.png")
        if not cv2.imwrite(path, canvas):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def evaluate_model(
    model: Any,
    data: Any,
    class_names: Sequence[str] | None = None,
    batch_size: int = 8,
    image_size: tuple[int, int] | None = None,
    score_threshold: float = 0.05,
    max_detections: int = 100,
    pr_curve_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Run a model over a data set and return :func:`evaluate_detections`'s metrics.

    Args:
        model: anything :func:`keras_retinanet.inference.load_detector` accepts: a ``RetinaNet``, a
            ``.keras`` file, a SavedModel directory, a ``.tflite`` file, or an already built ``Detector``.
        data: a data set object with ``.examples`` and ``.class_names`` (``keras_retinanet.data``), a spec
            string for ``keras_retinanet.data.load_dataset`` (loaded with the model's class list), or a list
            of common example dicts.
        class_names: the data set's class names when ``data`` is a plain list (default: the model's).
        batch_size, image_size, score_threshold, max_detections: passed to the detector.
        pr_curve_dir: optional folder for per-class precision-recall PNGs.
        progress: show a tqdm progress bar.

    Detections are mapped to the data set's classes by name when the model's class names are a
    reordering of the data set's; otherwise class ids are used as they are.
    """
    from keras_retinanet import inference

    detector = inference.load_detector(
        model,
        image_size=image_size,
        score_threshold=score_threshold,
        max_detections=max_detections,
    )
    examples, data_names = resolve_examples(data, class_names, detector.class_names)
    if data_names is None:
        data_names = list(detector.class_names or [])
    if not data_names:
        raise ValueError("class names unknown: pass class_names or a data set with class names")
    remap = class_remapping(detector.class_names, data_names)
    paths = [str(example["image_path"]) for example in examples]
    # The pipeline applies each example's EXIF orientation to the pixels; the boxes refer to that image.
    orientations = [int(example.get("orientation", 1) or 1) for example in examples]
    detections = inference.predict_paths(
        detector,
        paths,
        batch_size=batch_size,
        progress=progress,
        desc="evaluate",
        strict=True,
        orientations=orientations,
    )
    if remap is not None:
        detections = [det.remap_classes(remap) for det in detections]
    return evaluate_detections(examples, detections, data_names, pr_curve_dir=pr_curve_dir)


def resolve_examples(
    data: Any, class_names: Sequence[str] | None = None, model_class_names: Sequence[str] | None = None
) -> tuple[list, list | None]:
    """``(examples, class_names)`` from a data set object, a spec string or a list of example dicts.

    Args:
        data: a data set with ``.examples`` / ``.class_names`` (its names are used), a spec string (loaded
            with ``model_class_names`` as the class list when given, so class ids follow the model's, as in
            training), or a list of example dicts (``class_names`` names their class ids).
    """
    if isinstance(data, (str, os.PathLike)):
        from keras_retinanet.data import load_dataset

        data = load_dataset(
            os.fspath(data), class_names=list(model_class_names) if model_class_names else None
        )
    if hasattr(data, "examples"):
        names = getattr(data, "class_names", None) or class_names
        return list(data.examples), (list(names) if names is not None else None)
    examples = list(data)
    if examples and not isinstance(examples[0], Mapping):
        raise TypeError("data must be a data set with .examples, a spec string, or a list of example dicts")
    return examples, (list(class_names) if class_names is not None else None)


def class_remapping(model_names: Sequence[str] | None, data_names: Sequence[str]) -> np.ndarray | None:
    """Map model class ids to data set class ids by name, or None when no remapping is needed/possible.

    Returns an int array ``m`` of length K_model with ``m[model_id] = data_id`` (-1: class not in the data).
    """
    if not model_names or list(model_names) == list(data_names):
        return None
    index = {name: i for i, name in enumerate(data_names)}
    if not set(model_names) & set(index):
        logger.warning(
            "the model's class names %s share nothing with the data set's %s; using class ids as they are",
            list(model_names)[:5],
            list(data_names)[:5],
        )
        return None
    missing = [name for name in model_names if name not in index]
    if missing:
        logger.warning("model classes not in the data set (their detections are dropped): %s", missing)
    return np.array([index.get(name, -1) for name in model_names], np.int64)
