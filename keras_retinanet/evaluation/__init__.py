"""COCO box metrics by pycocotools (``coco.py``) of any detector on any data set (``run.py``), and the report of
where a model fails (``report.py``: confusion matrix, TIDE errors, operating points, worst images, charts).
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
