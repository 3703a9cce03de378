"""Per-class precision-recall curves of an evaluated ``COCOeval``, drawn as PNGs with matplotlib."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def safe_file_name(name: str) -> str:
    """``name`` with every character but letters, digits and ``-_.`` replaced by ``_`` (safe in paths and links)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "class"


def class_precision(cocoeval, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{class name: (T IoU thresholds, R recall thresholds) precision}`` of an evaluated ``COCOeval`` (area
    "all", 100 detections; -1 where undefined)."""
    area_all = list(cocoeval.params.areaRngLbl).index("all")
    max_dets = list(cocoeval.params.maxDets).index(100)
    precision = cocoeval.eval["precision"]  # [T, R, K categories, A areas, M max detections]
    return {
        str(class_names[cat_id - 1]): precision[:, :, k, area_all, max_dets]
        for k, cat_id in enumerate(cocoeval.params.catIds)
    }


def write_pr_curves(cocoeval, class_names: Sequence[str], out_dir: str | os.PathLike) -> list[str]:
    """Writes a precision-recall PNG per class with ground truth from an evaluated ``COCOeval`` (IoU 0.5 and
    0.75, area "all", 100 detections, each labelled with its AP); returns the paths."""
    from keras_retinanet.evaluation.plots import pyplot

    plt = pyplot()
    os.makedirs(out_dir, exist_ok=True)
    recall_thresholds = np.asarray(cocoeval.params.recThrs)
    iou_thresholds = np.asarray(cocoeval.params.iouThrs)
    paths = []
    for name, curves in class_precision(cocoeval, class_names).items():
        if np.all(curves < 0):
            continue
        figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=100)
        for iou in (0.5, 0.75):
            curve = curves[int(np.argmin(np.abs(iou_thresholds - iou)))]
            defined = curve[curve > -1]
            if not defined.size:
                continue
            axes.plot(
                recall_thresholds,
                np.maximum(curve, 0.0),
                label=f"IoU {iou:.2f}: AP {defined.mean():.3f}",
            )
        axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=name)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left")
        path = os.path.join(os.fspath(out_dir), f"pr_{safe_file_name(name)}.png")
        figure.savefig(path)
        plt.close(figure)
        paths.append(path)
    return paths
