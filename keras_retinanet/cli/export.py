"""``retinanet export``: SavedModel (TF Serving) and builtin-op TFLite files with NMS inside, or any format of
the export's table (``--format``).

See :mod:`keras_retinanet.export` for the output layout and the output contracts.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from keras_retinanet.export.config import EXPORT_PROFILES, RAW_VARIANTS, TFLITE_VARIANTS


def _variants(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if values in (["none"], []):
        return []
    bad = [v for v in values if v not in TFLITE_VARIANTS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown TFLite variant(s) {bad}; choose from {','.join(TFLITE_VARIANTS)}"
        )
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``retinanet export`` and ``tools/export.py``."""
    parser.add_argument("model", help="trained RetinaNet .keras file")
    parser.add_argument("--output", "-o", help="output directory (default: saved_models/MODEL_NAME)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument(
        "--image-size",
        help="network input size N or HxW: the SavedModel letterbox size and the fixed TFLite input "
        "(default: the shape the model was trained at, which the default recipe takes from the training images, "
        "as a phone app feeds them); 'data': the calibration images' aspect ratio at that size. A shape that "
        "differs from either is warned about (MediaPipe stretches each image to the input)",
    )
    parser.add_argument(
        "--tflite",
        type=_variants,
        default=None,
        help="comma-separated TFLite variants: float32,float16,int8 (default all; --profile raw: "
        f"{','.join(RAW_VARIANTS)}) or 'none'",
    )
    parser.add_argument(
        "--profile",
        choices=EXPORT_PROFILES,
        default="nms",
        help="'nms' (default): TFLite files with NMS inside (4 outputs, any MediaPipe or LiteRT app, CPU); "
        "'raw': model_float32_raw.tflite and model_float16_raw.tflite, 2 raw outputs (box encodings, scores) "
        "with MediaPipe's detector metadata, which MediaPipe decodes outside the model: for GPU delegates "
        "(docs/mobile.md)",
    )
    parser.add_argument("--no-saved-model", action="store_true", help="skip the SavedModel")
    parser.add_argument(
        "--precision",
        choices=("float32", "bf16"),
        default="float32",
        help="what the SavedModel computes in: float32 (default) or bf16, for serving on CPUs with AMX or "
        "AVX512-BF16 (inputs and outputs unchanged; the TFLite files keep their --tflite variants)",
    )
    parser.add_argument(
        "--format",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        help="comma-separated formats of the export's table (keras_retinanet.export.formats; "
        "docs/adding-an-export-format.md): saved_model, tflite, tflite_raw, onnx, openvino, openvino_int8, "
        "or one registered there "
        "(default: saved_model,tflite; --profile raw and --no-saved-model edit that list)",
    )
    parser.add_argument(
        "--calibration-data",
        help="dataset spec (voc:DIR[:SPLIT], coco:JSON[:DIR], csv:ANN:CLASSES) of real images, for int8 "
        "calibration and the parity figures; required for int8",
    )
    parser.add_argument("--calibration-steps", type=int, default=200, help="calibration images (200)")
    parser.add_argument("--parity-images", type=int, default=8, help="images for the parity figures (8)")
    parser.add_argument(
        "--class-thresholds",
        metavar="FILE",
        help="per-class score thresholds (`retinanet evaluate --report` writes class_thresholds.json): applied "
        "inside the SavedModel, and written into the TFLite metadata as MediaPipe score calibration "
        "(docs/evaluation.md)",
    )
    parser.add_argument(
        "--benchmark",
        action="store_true",
        help="measure the latency of the TFLite, ONNX and OpenVINO files into the report",
    )
    parser.add_argument(
        "--no-metadata",
        action="store_true",
        help="write no TFLite Model Metadata (MediaPipe Tasks then refuses the files)",
    )


def run(args: argparse.Namespace) -> int:
    from keras_retinanet.export import export_model

    if args.class_thresholds is not None:
        from keras_retinanet.detectors.class_thresholds import read_class_thresholds

        read_class_thresholds(args.class_thresholds)  # a bad file fails before the slow export
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output = args.output or str(Path("saved_models") / Path(args.model).stem)
    report = export_model(
        args.model,
        output,
        image_size=args.image_size,
        saved_model=not args.no_saved_model,
        tflite_variants=args.tflite,
        profile=args.profile,
        calibration_data=args.calibration_data,
        calibration_steps=args.calibration_steps,
        parity_images=args.parity_images,
        overwrite=args.overwrite,
        metadata=not args.no_metadata,
        precision=args.precision,
        class_thresholds=args.class_thresholds,
        formats=args.format,
    )
    from keras_retinanet.export.geometry import describe_geometry

    if args.benchmark:
        _add_latency(report)

    summary = {name: info.get("size_bytes") for name, info in report["files"].items()}
    print(json.dumps({"output": report["output"], "files": summary}, indent=2))
    print(describe_geometry(report["geometry"]))  # its warnings were logged when the export began
    return 0


def _add_latency(report: dict) -> None:
    """The latency of each builtin-op TFLite, ONNX and OpenVINO file into the report and export_report.json."""
    import numpy as np

    from keras_retinanet.detectors import load_detector
    from keras_retinanet.detectors.latency import detector_latency, tflite_latency
    from keras_retinanet.export.config import REPORT_FILE

    output = Path(report["output"])
    files = [name for name, info in report["files"].items() if info.get("runtime") == "LiteRT builtin ops"]
    report["latency"] = {
        name[len("model_") : -len(".tflite")]: tflite_latency(output / name) for name in files
    }
    # ONNX and OpenVINO files: the full inference of one random image of the export size (letterbox in the graph).
    image = np.random.default_rng(0).integers(0, 256, (*report["image_size"], 3), dtype=np.uint8)
    for name, info in report["files"].items():
        if info.get("runtime") in ("ONNX Runtime", "OpenVINO"):
            key = f"{Path(name).suffix[1:]}_{Path(name).stem.removeprefix('model_')}"
            report["latency"][key] = detector_latency(load_detector(str(output / name)), [image])
    saved = {key: value for key, value in report.items() if key != "output"}
    (output / REPORT_FILE).write_text(json.dumps(saved, indent=2) + "\n")
