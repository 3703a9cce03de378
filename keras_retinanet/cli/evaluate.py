"""``retinanet evaluate MODEL --data SPEC``: COCO box metrics (pycocotools) of any model file on a data set.

``--json`` writes the metrics (``AP, AP50, AP75, APs, APm, APl, AR100, per_class``; fractions, -1 where
undefined); ``--report DIR`` where the model fails (``keras_retinanet.evaluation.report``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from keras_retinanet import atomic
from keras_retinanet.cli.detector_options import add_detector_arguments, load_detector_from_args
from keras_retinanet.conventions import DISPLAY_SCORE_THRESHOLD


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_detector_arguments(parser)
    parser.add_argument(
        "--data",
        required=True,
        metavar="SPEC",
        help="dataset spec, e.g. voc:DIR:test or coco:ANNOTATIONS.json[:IMAGE_DIR]",
    )
    parser.add_argument("--json", metavar="OUT", help="write the metrics to this JSON file")
    parser.add_argument(
        "--pr-curves",
        metavar="DIR",
        help="write a precision-recall PNG per class here (a new or empty folder unless --overwrite)",
    )
    parser.add_argument(
        "--report",
        metavar="DIR",
        help="write an error analysis here: report.md, confusion_matrix.png, tide_errors.png, worst/, "
        "class_thresholds.json (per-class F1-optimal score thresholds for --class-thresholds); a new or "
        "empty folder unless --overwrite",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write the report or the curves into a folder that already holds files",
    )
    parser.add_argument(
        "--report-score",
        type=float,
        default=DISPLAY_SCORE_THRESHOLD,
        metavar="S",
        help="score threshold of the report's confusion matrix, precision / recall and worst images "
        f"({DISPLAY_SCORE_THRESHOLD})",
    )
    parser.add_argument(
        "--report-iou",
        type=float,
        default=0.5,
        metavar="IOU",
        help="IoU threshold of the report's confusion matrix and worst images (0.5)",
    )
    parser.add_argument(
        "--worst", type=int, default=8, metavar="N", help="images per worst-images list in the report (8)"
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip bad dataset records (reported) instead of stopping at the first",
    )
    parser.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="read COCO images whose file_name leads outside the image folder (../x.jpg, absolute paths)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    _check_report_options(args)
    with load_detector_from_args(args) as detector:
        return _evaluate(args, detector)


def _check_report_options(args: argparse.Namespace) -> None:
    """Bad report options fail before the model runs."""
    if not 0.0 <= args.report_score <= 1.0:
        raise ValueError(f"--report-score {args.report_score} must be in [0, 1]")
    if not 0.0 < args.report_iou <= 1.0:
        raise ValueError(f"--report-iou {args.report_iou} must be in (0, 1]")
    if args.worst < 0:
        raise ValueError(f"--worst {args.worst} must be >= 0")
    for option, folder in (("--report", args.report), ("--pr-curves", args.pr_curves)):
        if folder and os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError(f"{option} {folder} is a file, not a folder; name a folder (it is created)")
        if folder and not args.overwrite:
            atomic.require_free_folder(folder, option)


def _evaluate(args: argparse.Namespace, detector) -> int:
    from keras_retinanet import evaluation
    from keras_retinanet.data import DataError, load_dataset

    # The model's class list fixes the class ids, exactly as in training; classes the model does not know are
    # bad records (reported; skipped with --skip-bad).
    dataset = load_dataset(
        args.data,
        skip_bad=args.skip_bad,
        class_names=detector.class_names or None,
        allow_outside_paths=args.allow_outside_paths,
    )
    if len(dataset.skipped):
        print(dataset.skipped.summary(), file=sys.stderr)
    if any(not ex.get("image_path") for ex in dataset.examples):
        raise DataError(f"{args.data}: evaluation needs image files (image_path)")
    print(
        f"evaluating {detector.format} model {args.model} on {args.data} ({len(dataset.examples)} images"
        f"{', bf16' if args.precision == 'bf16' else ''})",
        file=sys.stderr,
    )
    examples, detections, names = evaluation.collect_detections(
        detector, dataset, batch_size=args.batch_size, progress=not args.no_progress
    )
    # The curves and the report are written beside their folder and renamed into place: a kill leaves it as it was.
    curves = atomic.staged_folder(args.pr_curves) if args.pr_curves else contextlib.nullcontext()
    with curves as staging:
        metrics = evaluation.evaluate_detections(examples, detections, names, pr_curve_dir=staging)
    print(evaluation.format_metrics(metrics))
    if args.report:
        with atomic.staged_folder(args.report) as staging:
            evaluation.write_report(
                staging,
                examples,
                detections,
                names,
                score_threshold=args.report_score,
                iou_threshold=args.report_iou,
                worst_count=args.worst,
                about={"model": args.model, "data": args.data},
            )
        print(f"report written to {os.path.join(args.report, 'report.md')}", file=sys.stderr)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        atomic.write_text(args.json, json.dumps(metrics, indent=2))
        print(f"metrics written to {args.json}", file=sys.stderr)
    if args.pr_curves:
        print(f"precision-recall curves written to {args.pr_curves}", file=sys.stderr)
    return 0
