"""Export a trained RetinaNet: every format of the table (``keras_retinanet.export.formats``) into one folder.

``export_model(model_path, output_dir, ...)`` writes one directory::

    OUTPUT/
      saved_model/            TF SavedModel, NMS in the graph; needs only TensorFlow to load
        assets/labels.txt     class names, one a line, line i = class id i
      labels.txt              the same class names
      model_float32.tflite    fixed input size, uint8 RGB input, builtin ops only, NMS inside
      model_float16.tflite    float16 weights (computes in float32 on CPU)
      model_int8.tflite       full-integer post-training quantisation; post-processing and outputs in float
      model_float32_raw.tflite, model_float16_raw.tflite   instead of the model_*.tflite files with
                              ``profile="raw"``: 2 raw outputs, no NMS inside, for GPU delegates (MediaPipe decodes)
      export_report.json      sizes, op lists, settings and parity figures

The export runs in stages: plan (the options checked by the format table, the calibration data read), load the
model and fix its input size, then write each format, compare each file with the Keras model (parity) and write
the report last. It is built in a hidden sibling folder and moved into place at the very end
(``keras_retinanet.atomic.staged_folder``), so a failed export never leaves a directory that looks complete;
with ``overwrite`` the old export is swapped out, and an export killed between the swap's two renames is
finished (its report, written last, reads as JSON) or undone by the next export to that path (or by
:func:`recover_interrupted_swap`). The converters' temporary files live inside the staging folder, so they go
with it. A second export to the same path while one runs is refused: the first holds ``.OUTPUT.lock`` beside it
(``flock``, released when the process ends, killed or not).

The SavedModel's contract is in ``keras_retinanet.export.saved_model``, the TFLite files' in
``keras_retinanet.export.tflite``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_retinanet import atomic
from keras_retinanet.conventions import LABELS_FILE
from keras_retinanet.detectors import load_retinanet
from keras_retinanet.export.calibration import calibration_paths, data_aspect_ratio, load_canvases
from keras_retinanet.export.config import (
    EXPORT_PROFILES,
    REPORT_FILE,
    ExportError,
    ExportJob,
    postprocess_settings,
)
from keras_retinanet.export.formats import FORMATS, format_options
from keras_retinanet.export.geometry import export_geometry
from keras_retinanet.export.parity import parity_report
from keras_retinanet.export.tflite import TFLITE_DETECTIONS_PER_CLASS
from keras_retinanet.imaging import parse_image_size, shape_for_aspect_ratio

logger = logging.getLogger(__name__)
DEFAULT_FORMATS = ("saved_model", "tflite")


def _complete(staging: Path) -> bool:
    """Whether a staging folder holds a whole export: its report, written last, is there and reads."""
    try:
        json.loads((staging / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return False
    return True


def recover_interrupted_swap(output: str | os.PathLike) -> str | None:
    """Finishes or undoes an ``--overwrite`` swap that a kill interrupted between its two renames (no
    ``output``, the old export in ``.NAME.old-PID``): the new export moves into place if it is complete, else
    the old one is put back. Returns what was done (None: nothing to recover)."""
    return atomic.recover_interrupted_swap(output, _complete)


@dataclasses.dataclass
class _Plan:
    """What the export will do, decided before any slow work."""

    formats: list[str]
    options: dict[str, dict[str, Any]]  # per format
    calibration_data: str | None
    calibration_paths: list[str]
    image_size: tuple[int, int] | None  # None: the model's; see from_data
    from_data: bool


def _plan(
    formats: Sequence[str] | None,
    saved_model: bool,
    profile: str,
    tflite_variants: Sequence[str] | None,
    given: dict[str, Any],
    image_size: Any,
    calibration_data: str | None,
    calibration_count: int,
) -> _Plan:
    """The formats to write and their options, checked by the table; the calibration images' paths."""
    if profile not in EXPORT_PROFILES:
        raise ExportError(f"--profile must be one of {', '.join(EXPORT_PROFILES)}, got {profile!r}")
    names = list(dict.fromkeys(formats or DEFAULT_FORMATS))
    if profile == "raw":
        names = ["tflite_raw" if name == "tflite" else name for name in names]
    if not saved_model:
        names = [name for name in names if name != "saved_model"]
    if tflite_variants is not None and not tflite_variants:  # --tflite none
        names = [name for name in names if name not in ("tflite", "tflite_raw")]
    if tflite_variants:
        given["variants"] = list(dict.fromkeys(tflite_variants))
    options = format_options(names, given)
    if any("int8" in opts.get("variants", ()) for opts in options.values()) and not calibration_data:
        raise ExportError(
            "int8 TFLite needs real calibration images: pass --calibration-data SPEC (e.g. the train set), "
            "or leave int8 out with --tflite float32,float16"
        )
    from_data = isinstance(image_size, str) and image_size.strip().lower() == "data"
    if from_data and not calibration_data:
        raise ExportError("--image-size data takes the images' aspect ratio from --calibration-data SPEC")
    return _Plan(
        formats=names,
        options=options,
        calibration_data=calibration_data,
        # Read before any slow work, so that a bad spec fails at once.
        calibration_paths=calibration_paths(calibration_data, calibration_count) if calibration_data else [],
        image_size=parse_image_size(image_size) if image_size is not None and not from_data else None,
        from_data=from_data,
    )


def _report(model: Any, source: Any, plan: _Plan, profile: str) -> dict[str, Any]:
    """The report's settings: the input size and geometry the files get, the model's post-processing."""
    aspect_ratio = data_aspect_ratio(plan.calibration_data) if plan.calibration_data else None
    if plan.from_data:
        size = shape_for_aspect_ratio(aspect_ratio, max(model.image_size))
        logger.info("input size %dx%d: the calibration images' aspect ratio", *size)
    else:
        size = plan.image_size or model.image_size
    geometry = export_geometry(model.image_size, size, aspect_ratio, model.use_group_norm)
    for warning in geometry["warnings"]:
        logger.warning("warning: %s", warning)
    return {
        "model": str(source) if isinstance(source, (str, os.PathLike)) else model.name,
        "num_classes": int(model.num_classes),
        "class_names": list(model.class_names),
        "image_size": list(size),
        "model_image_size": list(model.image_size),
        "geometry": geometry,
        "postprocess": postprocess_settings(model),
        "saved_model_precision": plan.options.get("saved_model", {}).get("precision"),
        "tflite_detections_per_class": TFLITE_DETECTIONS_PER_CLASS,
        "num_anchors": int(model.anchor_generator.num_anchors(size)),
        "profile": profile,
        "formats": plan.formats,
        "files": {},
    }


def _parity(
    model: Any, folder: Path, plan: _Plan, parity_images: int, files: dict[str, str], size: tuple[int, int]
) -> dict[str, Any]:
    """The report's parity figures: each file that its format's detector reads back, against the Keras model
    (``files``: {file name: format name}; ``size``: the files' input size)."""
    if not (plan.calibration_paths and parity_images > 0):
        return {"parity": None, "parity_note": "no parity figures: needs --calibration-data images"}
    readers = {}
    for name, format_name in files.items():
        row = FORMATS[format_name]
        detector = row.detector(folder / name) if row.detector and row.parity else None
        if detector is not None:
            stem, suffix = Path(name).stem.removeprefix("model_"), Path(name).suffix.lstrip(".")
            readers[f"{suffix}_{stem}" if suffix else stem] = (detector, row.parity)
    # Real images at the model's input size, or for a file of the images' aspect ratio at that size, which the
    # Keras model reads unscaled: where sizes agree, every model sees the same pixels.
    canvases = load_canvases(
        plan.calibration_paths[:parity_images], size if plan.from_data else model.image_size
    )
    return {"parity": parity_report(model, readers, canvases), "parity_data": plan.calibration_data}


def export_model(
    model_or_path: Any,
    output_dir: str | os.PathLike,
    *,
    image_size: int | str | Sequence[int] | None = None,
    saved_model: bool = True,
    tflite_variants: Sequence[str] | None = None,
    profile: str = "nms",
    calibration_data: str | None = None,
    calibration_steps: int = 200,
    parity_images: int = 8,
    overwrite: bool = False,
    metadata: bool = True,
    precision: str = "float32",
    class_thresholds: str | os.PathLike | None = None,
    formats: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Export a RetinaNet to ``output_dir`` (layout in the module docstring); returns the report dict.

    Args:
        model_or_path: a RetinaNet or the path of a ``.keras`` file holding one. Its decoder, box coder and
            class names are the files' post-processing and labels.
        output_dir: the directory to create; refused if it exists unless ``overwrite``.
        image_size: network input size for the SavedModel letterbox and the fixed TFLite input (N or HxW);
            default the model's ``image_size``, the size it was trained at. ``"data"``: the calibration images'
            aspect ratio with the model's longer side, for phone apps (MediaPipe stretches each image to the
            input, so a file of the images' shape sees them as the model did in training). Another size is
            allowed (with a warning), and the parity figures then show what it costs.
        saved_model: write ``saved_model/`` (False drops the ``saved_model`` format).
        tflite_variants: any of "float32", "float16", "int8" (None: all the TFLite format takes; with
            ``profile="raw"``: float32 and float16, the only ones it has; []: no TFLite file).
        profile: ``"nms"`` (default): the TFLite files with NMS inside (4 outputs). ``"raw"``: the ``tflite_raw``
            format instead, 2-output files ``model_<variant>_raw.tflite`` (box encodings and scores; the raw
            contract of ``keras_retinanet.export.tflite``) with MediaPipe's detector metadata, for GPU delegates.
        calibration_data: dataset spec for int8 calibration and for the parity figures.
        calibration_steps: number of calibration images (a few hundred).
        parity_images: images for the parity figures (from ``calibration_data``; skipped without it).
        overwrite: replace an existing ``output_dir``.
        metadata: write TFLite Model Metadata (labels, input, output layout) into every .tflite, so that
            MediaPipe Tasks' ObjectDetector loads it as it is (``keras_retinanet.export.metadata``).
        precision: what the SavedModel computes in: ``"float32"`` or ``"bf16"`` (bfloat16, for CPU serving on
            AMX or AVX512-BF16; inputs and outputs unchanged). The TFLite files have their own variants.
        class_thresholds: a per-class thresholds file, applied inside the SavedModel, written into the TFLite
            files' metadata as MediaPipe score calibration (``keras_retinanet.export.metadata``), and into the
            export folder as class_thresholds.json.
        formats: names in the format table (``keras_retinanet.export.formats.FORMATS``); default
            ``saved_model`` and ``tflite``. Each option above is checked against the formats that take it.
    Raises:
        ExportError: an option a format does not take, missing calibration data, an existing ``output_dir``.
    """
    from keras_retinanet.model.inference_graph import dtype_policy

    dtype_policy(precision)  # checks the name before any slow work
    given = {"precision": precision, "metadata": metadata, "class_thresholds": class_thresholds}
    given = {key: value for key, value in given.items() if value not in ("float32", True, None)}
    calibration_count = max(calibration_steps, parity_images)
    plan = _plan(
        formats, saved_model, profile, tflite_variants, given, image_size, calibration_data, calibration_count
    )
    output = Path(output_dir).resolve()
    if output.exists() and not overwrite:
        raise ExportError(f"output directory {output} exists; pass --overwrite to replace it")
    model = load_retinanet(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    report = _report(model, model_or_path, plan, profile)
    # One export to a path at a time: a second one started meanwhile would silently replace the first's files.
    with (
        atomic.locked_folder(
            output.parent, f".{output.name}.lock", f"another retinanet export to {output.name}"
        ),
        atomic.staged_folder(output, replace=overwrite, complete=_complete) as staging,
    ):
        if output.exists() and not overwrite:  # an interrupted swap put back just now
            raise ExportError(f"output directory {output} exists; pass --overwrite to replace it")
        _write(model, staging, report, plan, calibration_steps, parity_images)
    report["output"] = str(output)
    return report


def _write(
    model: Any, staging: Path, report: dict, plan: _Plan, calibration_steps: int, parity_images: int
) -> None:
    """Write the labels, every format, the parity figures and (last) the report into ``staging``."""
    (staging / LABELS_FILE).write_text("\n".join(model.class_names) + "\n")
    thresholds = next(
        (o["class_thresholds"] for o in plan.options.values() if o.get("class_thresholds")), None
    )
    if thresholds is not None:
        from keras_retinanet.detectors import class_thresholds as thresholds_file

        thresholds = thresholds_file.read_class_thresholds(thresholds)
        thresholds_file.write_class_thresholds(staging / "class_thresholds.json", thresholds)
        report["class_thresholds"] = thresholds
    size = tuple(report["image_size"])
    canvases: list = []

    def calibration() -> list:
        if not canvases:  # as the file will be fed: MediaPipe and TFLiteDetector stretch the whole image
            canvases.extend(load_canvases(plan.calibration_paths[:calibration_steps], size, resize="stretch"))
        return canvases

    written: dict[str, str] = {}
    for name in plan.formats:
        options = dict(plan.options[name])
        if options.get("class_thresholds"):
            options["class_thresholds"] = thresholds  # read once, as {class name: score}
        job = ExportJob(
            model,
            staging,
            size,
            options,
            calibration if plan.calibration_paths else None,
            report,
            calibration_photos=plan.calibration_paths[:calibration_steps],
        )
        logger.info("writing format %s", name)
        files = FORMATS[name].write(job)
        report["files"].update(files)
        written.update(dict.fromkeys(files, name))
    report.update(_parity(model, staging, plan, parity_images, written, size))
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
