"""The evaluation report: where a model fails, as a Markdown page with its pictures (``retinanet evaluate --report``).

``write_report(DIR, examples, detections, class_names)`` writes::

    DIR/
      report.md              metrics, per-class table, confusion matrix, error breakdown, worst images
      report.json            every number of the page
      confusion_matrix.png   classes + background, counts and row-normalised (``confusion.py``)
      tide_errors.png        AP50 each TIDE error type costs, overall and per class (``tide.py``)
      pr_curves/pr_*.png     precision-recall curves per class (``pr_curves.py``)
      worst/                 the images with the most false positives / missed boxes, ground truth beside
                             predictions (``worst.py``)
      class_thresholds.json  per-class F1-optimal score thresholds (``operating_points.py``), for
                             ``--class-thresholds`` of ``retinanet predict`` / ``export`` and ``load_detector``
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from keras_retinanet.conventions import DISPLAY_SCORE_THRESHOLD
from keras_retinanet.evaluation.coco import METRIC_KEYS, coco_evaluation, evaluate_detections

REPORT_FILE = "report.md"
THRESHOLDS_FILE = "class_thresholds.json"


def _fraction(value: float | None) -> str:
    return "n/a" if value is None or value < 0 else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None or value <= -1 else f"{value:+.4f}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]


def write_report(
    out_dir: str | os.PathLike,
    examples: Sequence[Mapping[str, Any]],
    detections: Sequence[Any],
    class_names: Sequence[str],
    score_threshold: float = DISPLAY_SCORE_THRESHOLD,
    iou_threshold: float = 0.5,
    worst_count: int = 8,
    about: Mapping[str, str] | None = None,
) -> dict:
    """Write the report folder of the module docstring; returns what ``report.json`` holds.

    Args:
        out_dir: the folder (created; files of an earlier report are replaced).
        examples, detections, class_names: as ``evaluate_detections`` takes them (``image_path`` for the worst
            images). Keep the low-scored detections: AP and the error breakdown need them.
        score_threshold: the operating point of the confusion matrix, the per-class precision / recall and the
            worst images; ``iou_threshold``: the IoU of the confusion matrix and the worst images.
        worst_count: N images with the most false positives, and N with the most missed boxes.
        about: ``{label: text}`` shown at the top (model, data set).
    """
    from keras_retinanet.detectors.class_thresholds import write_class_thresholds
    from keras_retinanet.evaluation.confusion import confusion_matrix
    from keras_retinanet.evaluation.operating_points import operating_points
    from keras_retinanet.evaluation.plots import plot_confusion_matrix, plot_error_breakdown
    from keras_retinanet.evaluation.tide import ERROR_NAMES, ERROR_TYPES, error_breakdown

    names = [str(n) for n in class_names]
    out_dir = _prepare_folder(out_dir)

    cocoeval = coco_evaluation(examples, detections, names)
    metrics = evaluate_detections(
        examples, detections, names, pr_curve_dir=os.path.join(out_dir, "pr_curves"), cocoeval=cocoeval
    )
    points = operating_points(cocoeval, names, score_threshold)
    confusion = confusion_matrix(examples, detections, len(names), iou_threshold, score_threshold)
    plot_confusion_matrix(
        confusion.matrix,
        confusion.normalised(),
        names,
        os.path.join(out_dir, "confusion_matrix.png"),
        title=f"IoU >= {iou_threshold:g}, score >= {score_threshold:g}",
    )
    errors = error_breakdown(examples, detections, names)
    plot_error_breakdown(
        errors.delta,
        errors.per_class_delta,
        ERROR_TYPES,
        os.path.join(out_dir, "tide_errors.png"),
        title=f"TIDE error breakdown (AP50 {_fraction(errors.ap50)})",
    )
    thresholds = {name: p["f1_threshold"] for name, p in points.items() if p["f1_threshold"] is not None}
    write_class_thresholds(
        os.path.join(out_dir, THRESHOLDS_FILE),
        thresholds,
        chosen_by="F1 at IoU 0.5 on the evaluated data set",
        # No true positive at any score: these classes keep the global score threshold.
        without_threshold=[name for name in names if name not in thresholds],
        data=(about or {}).get("data", ""),
        model=(about or {}).get("model", ""),
    )

    worst = _draw_worst(out_dir, examples, detections, names, confusion, score_threshold, worst_count)

    summary = {
        "about": dict(about or {}),
        "images": len(examples),
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
        "metrics": metrics,
        "per_class": points,
        "confusion_matrix": {
            "labels": [*names, "background"],
            "counts": confusion.matrix.tolist(),
            "rows": "true class",
            "columns": "predicted class",
        },
        "tide": {
            "foreground_iou": errors.foreground_iou,
            "background_iou": errors.background_iou,
            "ap50": errors.ap50,
            "delta_ap50": errors.delta,
            "counts": errors.counts,
            "per_class_delta_ap50": errors.per_class_delta,
            "per_class_counts": errors.per_class_counts,
        },
        "class_thresholds": thresholds,
        "worst": worst,
    }
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    pr_pictures = sorted(os.listdir(os.path.join(out_dir, "pr_curves")))
    page = _markdown(summary, names, ERROR_TYPES, ERROR_NAMES, pr_pictures)
    with open(os.path.join(out_dir, REPORT_FILE), "w", encoding="utf-8") as f:
        f.write(page)
    return summary


def _prepare_folder(out_dir: str | os.PathLike) -> str:
    """Creates the report folder and its picture folders, emptied of an earlier report's pictures (a report of
    fewer classes or images leaves none stale)."""
    out_dir = os.fspath(out_dir)
    for folder in ("", "pr_curves", "worst"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    for folder in ("pr_curves", "worst"):
        for name in os.listdir(os.path.join(out_dir, folder)):
            if name.endswith((".png", ".jpg")):
                os.remove(os.path.join(out_dir, folder, name))
    return out_dir


def _draw_worst(
    out_dir: str,
    examples: Sequence[Mapping[str, Any]],
    detections: Sequence[Any],
    names: list[str],
    confusion: Any,
    score_threshold: float,
    worst_count: int,
) -> dict[str, list[dict]]:
    """The images with the most false positives and the most missed boxes, drawn from the files the ground
    truth names into ``worst/``: ``{"false_positives" | "missed": [{"image", "count", "picture"[, "error"]}]}``."""
    import cv2

    from keras_retinanet.evaluation.pr_curves import safe_file_name
    from keras_retinanet.evaluation.worst import side_by_side, worst_indices
    from keras_retinanet.imaging import ImageReadError, read_image
    from keras_retinanet.visualize import rgb_to_bgr

    worst: dict[str, list[dict]] = {"false_positives": [], "missed": []}
    for kind, counts in (("false_positives", confusion.false_positives), ("missed", confusion.missed)):
        for rank, index in enumerate(worst_indices(counts, worst_count), start=1):
            example = examples[index]
            path = example.get("image_path")
            entry = {"image": str(path), "count": int(counts[index]), "picture": None}
            if path:
                try:
                    image = read_image(path, example.get("orientation"))
                except ImageReadError as err:
                    entry["error"] = str(err)
                else:
                    stem = safe_file_name(os.path.splitext(os.path.basename(str(path)))[0])
                    picture = os.path.join("worst", f"{kind}_{rank:02d}_{stem}.jpg")
                    drawn = side_by_side(image, example, detections[index], names, score_threshold)
                    if not cv2.imwrite(os.path.join(out_dir, picture), rgb_to_bgr(drawn)):
                        raise OSError(f"could not write {os.path.join(out_dir, picture)}")
                    entry["picture"] = picture
            worst[kind].append(entry)

    return worst


def _markdown(summary: dict, names: list[str], error_types, error_names, pr_pictures: list[str]) -> str:
    metrics, points, tide = summary["metrics"], summary["per_class"], summary["tide"]
    score, iou = summary["score_threshold"], summary["iou_threshold"]
    lines = ["# Evaluation report", ""]
    lines += [f"- {label}: `{text}`" for label, text in summary["about"].items()]
    lines += [f"- images: {summary['images']}", ""]

    lines += ["## COCO metrics (pycocotools)", ""]
    lines += _table(["metric", *METRIC_KEYS], [["value", *(_fraction(metrics[key]) for key in METRIC_KEYS)]])

    lines += ["", "## Per class", ""]
    lines += [
        f"AP and AP50 as COCO computes them. Precision and recall count the detections scored >= {score:g} "
        "(true positive: matched at IoU 0.5 by COCOeval). The F1-optimal threshold maximises F1 on this data; "
        f"it is written to [{THRESHOLDS_FILE}]({THRESHOLDS_FILE}).",
        "",
    ]
    rows = []
    for name in names:
        p, ap = points.get(name, {}), metrics["per_class"].get(name, {})
        threshold = "n/a" if p.get("f1_threshold") is None else f"{p['f1_threshold']:.3f}"
        values = (ap.get("AP"), ap.get("AP50"), p.get("precision"), p.get("recall"))
        f1 = (p.get("f1_precision"), p.get("f1_recall"), p.get("f1"))
        rows.append([name, p.get("positives", 0), *map(_fraction, values), threshold, *map(_fraction, f1)])
    header = ["class", "boxes", "AP", "AP50", f"precision @{score:g}", f"recall @{score:g}"]
    lines += _table([*header, "F1-optimal threshold", "precision", "recall", "F1"], rows)

    lines += ["", f"## Confusion matrix (IoU >= {iou:g}, score >= {score:g})", ""]
    lines += [
        "Rows: true class, columns: predicted class. The background row counts detections that match no box; "
        "the background column counts boxes no detection matched. Right: each row divided by its sum.",
        "",
        "![confusion matrix](confusion_matrix.png)",
    ]

    lines += ["", "## Error breakdown (TIDE)", ""]
    lines += [
        "Bolya et al., *TIDE: A General Toolbox for Identifying Object Detection Errors*, ECCV 2020: foreground "
        f"IoU {tide['foreground_iou']:g}, background IoU {tide['background_iou']:g}. dAP50 is AP50 after fixing "
        f"every error of one type minus AP50 ({_fraction(tide['ap50'])}); AP50 from pycocotools on the "
        "corrected sets. All detections count, whatever their score.",
        "",
    ]
    header = ["", *(f"{kind} ({error_names[kind]})" for kind in error_types)]
    rows = [
        ["dAP50 overall", *(_signed(tide["delta_ap50"][kind]) for kind in error_types)],
        ["errors", *(tide["counts"][kind] for kind in error_types)],
    ]
    rows += [
        [f"dAP50 {name}", *(_signed(tide["per_class_delta_ap50"][name][kind]) for kind in error_types)]
        for name in names
    ]
    lines += _table(header, rows)
    lines += ["", "![TIDE error breakdown](tide_errors.png)"]

    if pr_pictures:
        lines += ["", "## Precision-recall curves", ""]
        lines += [f"![{picture}](pr_curves/{picture})" for picture in pr_pictures]

    for kind, title in (("false_positives", "false positives"), ("missed", "missed boxes")):
        entries = summary["worst"][kind]
        lines += ["", f"## Images with the most {title} (IoU >= {iou:g}, score >= {score:g})", ""]
        if not entries:
            lines.append(f"No image has {title}.")
        for entry in entries:
            lines.append(f"**{entry['image']}**: {entry['count']} {title}")
            lines.append("")
            if entry["picture"]:
                lines += [f"![worst image]({entry['picture']})", ""]
            else:
                lines += [f"(not drawn: {entry.get('error', 'no image file')})", ""]
    return "\n".join(lines).rstrip() + "\n"
