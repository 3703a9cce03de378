"""COCO box metrics computed by pycocotools, for detections or for any detector on any data set.

- ``coco.py``: common examples and detections -> COCO dicts -> ``COCOeval`` -> ``{"AP", "AP50", ...}``.
- ``run.py``: :func:`evaluate_model` runs a detector (``keras_retinanet.detectors``) over a data set and
  scores it.
- ``pr_curves.py``: per-class precision-recall PNGs.
"""

from keras_retinanet.lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "METRIC_KEYS": "coco",
        "class_remapping": "run",
        "detections_to_coco_results": "coco",
        "evaluate_detections": "coco",
        "evaluate_model": "run",
        "examples_to_coco": "coco",
        "format_metrics": "coco",
        "resolve_examples": "run",
        "run_cocoeval": "coco",
        "write_pr_curves": "pr_curves",
    },
)
__all__ = sorted(__dir__())
