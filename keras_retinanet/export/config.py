"""What the export writers share: the error type, file names, and the post-processing settings."""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_retinanet.conventions import fallback_class_names

SAVED_MODEL_DIR = "saved_model"
REPORT_FILE = "export_report.json"
TFLITE_VARIANTS = ("float32", "float16", "int8")
TFLITE_NMS_CHOICES = ("builtin", "combined")
# ``retinanet export --profile``: "nms", the 4-output files with NMS inside (default); "raw", 2-output files
# (box encodings, class scores) whose decoding and NMS the app runs, e.g. MediaPipe for a GPU delegate.
EXPORT_PROFILES = ("nms", "raw")
RAW_OUTPUTS = "raw"
RAW_VARIANTS = ("float32", "float16")  # GPU delegates compute in float16 / float32


class ExportError(RuntimeError):
    """A user-facing export failure with a message that says what to fix."""


@dataclasses.dataclass(frozen=True)
class PostProcessConfig:
    """Post-processing settings shared by the SavedModel and the TFLite files (taken from ``model.decoder``).

    Attributes:
        score_threshold: detections need score >= this (TFLite) / > this (Keras decoder).
        nms_iou_threshold: a box is suppressed when its IoU with a better box of its class is > this.
        max_detections: M, rows per image in the outputs.
        class_agnostic: NMS across classes (TFLite: the op's fast NMS, ``use_regular_nms=False``).
        box_weights: (wx, wy, ww, wh) of the box coder.
        box_clamp: dw / wh and dh / wh are clamped to this before exp().
    """

    score_threshold: float
    nms_iou_threshold: float
    max_detections: int
    class_agnostic: bool
    box_weights: tuple[float, float, float, float]
    box_clamp: float

    @classmethod
    def from_model(cls, model: Any) -> PostProcessConfig:
        decoder = model.decoder
        coder = model.box_coder
        return cls(
            score_threshold=float(decoder.score_threshold),
            nms_iou_threshold=float(decoder.nms_iou_threshold),
            max_detections=int(decoder.max_detections),
            class_agnostic=bool(getattr(decoder, "class_agnostic", False)),
            box_weights=tuple(float(w) for w in coder.weights),  # type: ignore[arg-type]
            box_clamp=float(coder.clamp),
        )


def class_names(model: Any) -> list[str]:
    """The model's K class names (``conventions.fallback_class_names`` where it has not K of them)."""
    names = [str(n) for n in (getattr(model, "class_names", None) or [])]
    return names if len(names) == int(model.num_classes) else fallback_class_names(model.num_classes)
