"""What the export's formats share: the error type, file names, a format's row and the job a writer gets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

SAVED_MODEL_DIR = "saved_model"
REPORT_FILE = "export_report.json"
TFLITE_VARIANTS = ("float32", "float16", "int8")
# ``retinanet export --profile``: "nms", the 4-output files with NMS inside (default); "raw", 2-output files
# (box encodings, class scores) whose decoding and NMS the app runs, e.g. MediaPipe for a GPU delegate.
EXPORT_PROFILES = ("nms", "raw")
RAW_VARIANTS = ("float32", "float16")  # GPU delegates compute in float16 / float32


class ExportError(RuntimeError):
    """A user-facing export failure with a message that says what to fix."""


@dataclasses.dataclass
class ExportJob:
    """What a format's writer gets.

    Attributes:
        model: the RetinaNet (its ``decoder``, ``box_coder`` and ``class_names`` are the export's settings).
        folder: the staging folder to write into (moved into place when every format is written).
        image_size: (H, W) of the exported input.
        options: this format's options (``ExportFormat.options``), the user's value or the default.
        calibration: callable returning uint8 (H, W, 3) canvases of real images, as a .tflite is fed
            (stretched); None without ``--calibration-data``.
        calibration_photos: the paths of those images, for files that take photos at their own size (the
            letterbox inside); empty without ``--calibration-data``.
        report: the export report; a writer may add entries beside ``files``.
    """

    model: Any
    folder: Path
    image_size: tuple[int, int]
    options: dict[str, Any]
    calibration: Callable[[], Iterable[Any]] | None
    report: dict[str, Any]
    calibration_photos: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One row of the export's format table (``keras_retinanet.export.formats``).

    Attributes:
        name: what ``--format`` calls it.
        files: what it writes into the export folder (for messages and docs), e.g. ``model_<variant>.tflite``.
        write: writes the files into ``job.folder``; returns ``{file name: report entry}``.
        options: the options it takes (``variants``, ``precision``, ``metadata``, ``class_thresholds``) ->
            (allowed values, or None for any; why, shown when a value is refused). An option left out is
            ignored by this format; one that no format of the export takes is refused.
        detector: reads a written file back as a ``keras_retinanet.detectors.Detector`` (None: it cannot be
            read back, no parity figures).
        parity: the parity check of ``keras_retinanet.export.parity.PARITY_CHECKS`` its files get.
    """

    name: str
    files: str
    write: Callable[[ExportJob], dict[str, dict[str, Any]]]
    options: Mapping[str, tuple[tuple[Any, ...] | None, str]] = dataclasses.field(default_factory=dict)
    detector: Callable[[Path], Any] | None = None
    parity: str | None = None


def postprocess_settings(model: Any) -> dict[str, Any]:
    """The export report's ``postprocess``: the model's decoder (NMS) and box coder settings."""
    decoder = model.decoder.get_config()
    decoder.pop("topk_per_level")  # the files' NMS op has no per-level top-k
    return {
        **decoder,
        "box_weights": [float(w) for w in model.box_coder.weights],
        "box_clamp": float(model.box_coder.clamp),
    }
