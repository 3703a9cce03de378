"""Per-class precision-recall curves of an evaluated ``COCOeval``, drawn as PNGs with OpenCV."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from keras_retinanet.evaluation.coco import mean_defined


def safe_file_name(name: str) -> str:
    """``name`` with every character but letters, digits and ``-_.`` replaced by ``_`` (safe in paths and links)."""
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
            ap = mean_defined(curve)
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
        path = os.path.join(os.fspath(out_dir), f"pr_{safe_file_name(name)}.png")
        if not cv2.imwrite(path, canvas):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths
