"""Do the exported files detect what the Keras model detects? Detection matching and the export's parity report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_retinanet.boxes import iou as box_iou
from keras_retinanet.conventions import DISPLAY_SCORE_THRESHOLD
from keras_retinanet.detectors import Detections


def _as_arrays(detections: Detections) -> dict[str, np.ndarray]:
    return {"boxes": detections.boxes, "scores": detections.scores, "classes": detections.classes}


def match_detections(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    min_score: float = 0.0,
    iou_threshold: float = 0.99,
    score_tolerance: float = 1e-3,
) -> dict[str, Any]:
    """Find every reference detection with score > ``min_score`` among the candidate's detections.

    Both dicts hold one image's valid detections: "boxes" (n, 4) xyxy, "scores" (n,), "classes" (n,).
    A reference detection is found when a candidate detection of the same class has IoU >= ``iou_threshold``
    and |score difference| <= ``score_tolerance``. Returns {"checked", "found", "missing", "min_iou",
    "max_score_diff"} with min_iou / max_score_diff over the best same-class candidate of each checked one.
    """
    keep = reference["scores"] > min_score
    ref_boxes, ref_scores, ref_classes = (reference[k][keep] for k in ("boxes", "scores", "classes"))
    iou = box_iou(ref_boxes, candidate["boxes"])
    found, min_iou, max_diff = 0, 1.0, 0.0
    for i in range(len(ref_boxes)):
        same = candidate["classes"] == ref_classes[i]
        if not same.any():
            min_iou, max_diff = 0.0, max(max_diff, float(ref_scores[i]))
            continue
        ious = np.where(same, iou[i], -1.0)
        diffs = np.abs(np.asarray(candidate["scores"], np.float64) - float(ref_scores[i]))
        j = int(np.argmax(ious))  # the statistics follow the best-overlapping box; any box may match both
        min_iou, max_diff = min(min_iou, float(ious[j])), max(max_diff, float(diffs[j]))
        found += bool(((ious >= iou_threshold) & (diffs <= score_tolerance)).any())
    checked = int(len(ref_boxes))
    return {
        "checked": checked,
        "found": found,
        "missing": checked - found,
        "min_iou": round(min_iou, 6) if checked else None,
        "max_score_diff": float(f"{max_diff:.3g}") if checked else None,
    }


def _merge_matches(results: list[dict[str, Any]]) -> dict[str, Any]:
    checked = sum(r["checked"] for r in results)
    ious = [r["min_iou"] for r in results if r["min_iou"] is not None]
    diffs = [r["max_score_diff"] for r in results if r["max_score_diff"] is not None]
    return {
        "images": len(results),
        "checked": checked,
        "found": sum(r["found"] for r in results),
        "missing": sum(r["missing"] for r in results),
        "min_iou": min(ious) if ious else None,
        "max_score_diff": max(diffs) if diffs else None,
    }


# The checks a format's files get (``ExportFormat.parity``): (report key suffix, IoU, score tolerance, whether every
# Keras detection is checked (else those above ``min_score``)).
PARITY_CHECKS = {
    "exact": (("", 0.99, 1e-4, True), ("_above_min_score", 0.99, 1e-4, False)),
    "tflite": (("", 0.99, 1e-3, False), ("_loose", 0.5, 0.1, False)),
}


def parity_report(
    model: Any,
    files: dict[str, tuple[Any, str]],
    images: Sequence[np.ndarray],
    min_score: float = DISPLAY_SCORE_THRESHOLD,
) -> dict[str, Any]:
    """Compare the exported files' detections with the Keras model's on the same images.

    Every model runs through its own detector, which resizes the images to its own input size: the Keras model
    to its ``image_size`` (the size it was trained at), each file to the size it was exported at. The images
    are real images already letterboxed to the model's ``image_size``, so where the sizes agree nobody resizes
    and the pixels are identical; a file exported at another size shows up here as missing detections, not as
    a silent AP loss.

    - ``"exact"`` (the SavedModel): ``<key>_vs_keras``, every Keras detection (any score) found in the file's
      output, IoU >= 0.99, score within 1e-4 (``..._above_min_score``: the same above ``min_score``).
    - ``"tflite"``: ``<key>_vs_keras``, every Keras detection above ``min_score`` found in the file's output
      (IoU >= 0.99, score within 1e-3; ``..._loose``: IoU >= 0.5, score within 0.1, the view for quantised
      files).

    Args:
        model: the RetinaNet.
        files: {report key: (detector of the file, check name in ``PARITY_CHECKS``)}, e.g.
            ``{"tflite_float32": (TFLiteDetector(path), "tflite")}``.
        images: (H, W, 3) uint8 RGB canvases of the model's ``image_size`` (``calibration.load_canvases``).
        min_score: the score above which TFLite detections are compared (the op has no per-level top-k).
    Returns:
        The report dict; each comparison is ``{"images", "checked", "found", "missing", "min_iou",
        "max_score_diff"}``.
    """
    from keras_retinanet.detectors import KerasDetector

    keras_list = [_as_arrays(d) for d in KerasDetector(model).detect(list(images))]
    report: dict[str, Any] = {
        "images": len(images),
        "min_score": min_score,
        "keras_image_size": list(model.image_size),
        "keras_detections": int(sum(len(d["scores"]) for d in keras_list)),
        "keras_detections_above_min_score": int(sum((d["scores"] > min_score).sum() for d in keras_list)),
    }
    # A full output's last rows sit at the cut-off, where a 1e-7 score change swaps which of two near-equal
    # boxes is kept: skip those within 1e-4 of the lowest kept score.
    max_det = int(model.decoder.max_detections)

    def floor(d):
        return float(d["scores"].min()) + 1e-4 if len(d["scores"]) >= max_det else 0.0

    for key, (detector, check) in files.items():
        found = [_as_arrays(d) for d in detector.detect(list(images))]
        for suffix, iou, tolerance, everything in PARITY_CHECKS[check]:
            pairs = zip(keras_list, found, strict=True)
            matches = [
                match_detections(k, c, floor(k) if everything else min_score, iou, tolerance)
                for k, c in pairs
            ]
            report[f"{key}_vs_keras{suffix}"] = _merge_matches(matches)
    return report
