"""The options that choose and run a model, shared by ``retinanet evaluate`` and ``retinanet predict``."""

from __future__ import annotations

import argparse


def _score(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a score from 0 to 1")
    return value


def add_detector_arguments(parser: argparse.ArgumentParser, score_threshold: float | None = None) -> None:
    """MODEL and the options of ``load_detector`` (``score_threshold``: a default other than the model's)."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        help=".keras file, SavedModel directory, .tflite, .onnx or OpenVINO .xml file",
    )
    default = "the model's own decoder setting" if score_threshold is None else str(score_threshold)
    parser.add_argument(
        "--score-threshold",
        type=_score,
        default=score_threshold,
        help=f"drop detections below this score (default: {default})",
    )
    parser.add_argument(
        "--class-thresholds",
        metavar="FILE",
        help="per-class score thresholds (JSON/YAML {class: score}; `retinanet evaluate --report` writes "
        "class_thresholds.json), applied on top of --score-threshold",
    )
    parser.add_argument("--max-detections", type=int, help="detections per image (default: the model's own)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model call (default 8)")
    parser.add_argument(
        "--image-size",
        metavar="N|HxW",
        help="letterbox size for .keras models (default: the size the model was trained at)",
    )
    parser.add_argument(
        "--runtime",
        choices=("litert", "mediapipe"),
        default="litert",
        help="for a .tflite: LiteRT's interpreter (default) or MediaPipe Tasks' ObjectDetector, as phone apps "
        "run it",
    )
    parser.add_argument("--threads", type=int, help="TFLite interpreter threads (default: every core)")
    parser.add_argument(
        "--tile",
        metavar="N|HxW",
        help="tiled inference for small objects in large images: run the model on tiles of this size (pixels of "
        "the image) and on the full image and merge by per-class NMS (keras_retinanet.detectors.tiled; tiles + 1 "
        "model runs per image)",
    )
    parser.add_argument(
        "--tile-overlap",
        type=float,
        default=0.2,
        help="share of the tile side that neighbouring tiles share (default 0.2)",
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "bf16"),
        default="float32",
        help="for .keras models: float32 (default) or bf16 (bfloat16 compute, float32 decoding; refused "
        "without bfloat16 hardware: AMX, AVX512-BF16, a GPU of compute capability >= 8.0 or a TPU)",
    )


def load_detector_from_args(args: argparse.Namespace):
    """The detector the options of :func:`add_detector_arguments` describe (errors as in ``load_detector``)."""
    from keras_retinanet.detectors import load_detector, model_format
    from keras_retinanet.imaging import parse_image_size

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.precision != "float32" and model_format(args.model) == "keras":
        check_bf16_support()
    detector = load_detector(
        args.model,
        image_size=parse_image_size(args.image_size) if args.image_size else None,
        score_threshold=args.score_threshold,
        max_detections=args.max_detections,
        num_threads=args.threads,
        runtime=args.runtime,
        precision=args.precision,
        class_thresholds=getattr(args, "class_thresholds", None),
    )
    if args.tile is None:
        return detector
    from keras_retinanet.detectors.tiled import TiledDetector

    try:
        return TiledDetector(detector, args.tile, args.tile_overlap, batch_size=args.batch_size)
    except ValueError:
        detector.close()
        raise


def check_bf16_support() -> None:
    """Raises ``ValueError`` (one line from ``retinanet``) when this machine has no bfloat16 hardware."""
    from keras_retinanet.detectors import machine

    supported, reason = machine.bf16_support()
    if not supported:
        raise ValueError(
            f"--precision bf16 needs bfloat16 hardware, which this machine lacks: {reason}. Use --precision "
            "float32 (the default)"
        )
