"""COCO box metrics computed by pycocotools, for detections or for any detector on any data set.

- ``coco.py``: common examples and detections -> COCO dicts -> ``COCOeval`` -> ``{"AP", "AP50", ...}``.
- ``run.py``: :func:`evaluate_model` runs a detector (``keras_retinanet.detectors``) over a data set and
  scores it.
- ``pr_curves.py``: per-class precision-recall PNGs.
- ``report.py``: :func:`write_report`, the report of where a model fails (``retinanet evaluate --report``), from
  ``confusion.py`` (confusion matrix), ``tide.py`` (TIDE error breakdown), ``operating_points.py`` (per-class
  precision / recall and F1-optimal thresholds), ``worst.py`` (worst images) and ``plots.py`` (charts).
"""

from keras_retinanet._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "METRIC_KEYS": "coco",
        "ERROR_TYPES": "tide",
        "class_remapping": "run",
        "coco_evaluation": "coco",
        "collect_detections": "run",
        "confusion_matrix": "confusion",
        "error_breakdown": "tide",
        "operating_points": "operating_points",
        "detections_to_coco_results": "coco",
        "evaluate_detections": "coco",
        "evaluate_model": "run",
        "examples_to_coco": "coco",
        "format_metrics": "coco",
        "resolve_examples": "run",
        "run_cocoeval": "coco",
        "write_pr_curves": "pr_curves",
        "write_report": "report",
    },
)
__all__ = sorted(__dir__())
