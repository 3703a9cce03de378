"""The export's format table: what each format writes, the options it takes, its writer and its detector.
Adding a format is a row here (or :func:`register_format`), a writer and a detector
(docs/adding-an-export-format.md)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from keras_retinanet.export.config import RAW_VARIANTS, TFLITE_VARIANTS, ExportError, ExportFormat
from keras_retinanet.export.onnx import write_onnx, write_openvino
from keras_retinanet.export.saved_model import write_saved_model
from keras_retinanet.export.tflite import write_tflite

# The options a format may take: the flag that sets each, and its value when the user sets none.
OPTION_FLAGS = {
    "variants": "--tflite",
    "precision": "--precision",
    "metadata": "--no-metadata",
    "class_thresholds": "--class-thresholds",
}
OPTION_DEFAULTS: dict[str, Any] = {
    "variants": None,
    "precision": "float32",
    "metadata": True,
    "class_thresholds": None,
}


def _detector(path: Path) -> Any:
    """The file read back as ``retinanet predict`` reads it."""
    from keras_retinanet.detectors import load_detector

    return load_detector(str(path))


def _raw_tflite_detector(path: Path) -> Any:
    """TFLiteDetector decodes a raw file from its metadata: None for a file written without."""
    from keras_retinanet.detectors.tflite_file import read_detection_metadata

    return _detector(path) if read_detection_metadata(path) else None


def _graph_format(name: str, files: str, write: Any, parity: str) -> ExportFormat:
    """An ONNX or OpenVINO row: letterbox-inside files read back by ``load_detector``, which take no option and
    refuse per-class thresholds (the files do not apply them)."""
    refused = (
        (),
        "ONNX and OpenVINO files do not apply them: export them apart, and filter their detections with the "
        "detectors' set_class_thresholds",
    )
    return ExportFormat(
        name=name,
        files=files,
        write=write,
        options={"class_thresholds": refused},
        detector=_detector,
        parity=parity,
    )


FORMATS: dict[str, ExportFormat] = {
    row.name: row
    for row in (
        ExportFormat(
            name="saved_model",
            files="saved_model/",
            write=write_saved_model,
            options={"precision": (("float32", "bf16"), ""), "class_thresholds": (None, "")},
            detector=_detector,
            parity="exact",
        ),
        ExportFormat(
            name="tflite",
            files="model_<variant>.tflite",
            write=write_tflite,
            options={
                "variants": (TFLITE_VARIANTS, ""),
                "metadata": (None, ""),
                "class_thresholds": (None, ""),
            },
            detector=_detector,
            parity="tflite",
        ),
        ExportFormat(
            name="tflite_raw",
            files="model_<variant>_raw.tflite",
            write=functools.partial(write_tflite, raw=True),
            options={
                "variants": (RAW_VARIANTS, "GPU delegates compute in float"),
                "metadata": (None, ""),
                "class_thresholds": (
                    (),
                    "they are written as MediaPipe score calibration, which MediaPipe applies to files with NMS "
                    "inside only",
                ),
            },
            detector=_raw_tflite_detector,
            parity="tflite",
        ),
        _graph_format("onnx", "model_float32.onnx", write_onnx, "exact"),
        _graph_format("openvino", "model_openvino_float32.xml (.bin)", write_openvino, "exact"),
        _graph_format(
            "openvino_int8",
            "model_openvino_int8.xml (.bin)",
            functools.partial(write_openvino, precision="int8"),
            "tflite",
        ),
    )
}


def register_format(row: ExportFormat) -> None:
    """Add a format to the table (or replace the row of that name), e.g. from a plug-in or a test."""
    FORMATS[row.name] = row


def format_options(names: list[str], given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check the user's options (``given``: only those set) against the table; returns each format's options.

    Raises:
        ExportError: an unknown format; a value a format does not take (naming the format and the option); an
            option that none of the formats takes.
    """
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    options: dict[str, dict[str, Any]] = {}
    for name in names:
        row = FORMATS[name]
        options[name] = {}
        for option, (allowed, why) in row.options.items():
            value = given.get(option, OPTION_DEFAULTS[option])
            if option == "variants" and value is None:
                value = list(allowed)
            values = value if option == "variants" else [value]
            refused = [v for v in values if allowed is not None and v not in allowed and v is not None]
            if refused:
                takes = f"it takes {', '.join(map(str, allowed))}" if allowed else "it takes none"
                raise ExportError(
                    f"format {name} does not take {OPTION_FLAGS[option]} {refused[0]} ({takes}"
                    f"{'; ' + why if why else ''})"
                )
            options[name][option] = value
    for option, value in given.items():
        if not any(option in FORMATS[name].options for name in names):
            shown = ",".join(value) if isinstance(value, list) else value
            flag = OPTION_FLAGS[option] if isinstance(value, bool) else f"{OPTION_FLAGS[option]} {shown}"
            raise ExportError(f"{flag}: none of the formats written ({', '.join(names) or 'none'}) takes it")
    return options
