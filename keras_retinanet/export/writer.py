"""Export a trained RetinaNet to a TF SavedModel (TF Serving) and to TFLite (LiteRT) with NMS inside.

``export_model(model_path, output_dir, ...)`` writes one directory::

    OUTPUT/
      saved_model/            TF SavedModel, NMS in the graph; needs only TensorFlow to load
        assets/labels.txt     class names, one a line, line i = class id i
      labels.txt              the same class names
      model_float32.tflite    fixed input size, uint8 RGB input, builtin ops only, NMS inside
      model_float16.tflite    float16 weights (computes in float32 on CPU)
      model_int8.tflite       full-integer post-training quantisation; post-processing and outputs in float
      model_float32_combined_nms.tflite   only with ``tflite_nms="combined"``: needs the Flex delegate
      model_float32_raw.tflite, model_float16_raw.tflite   instead of the model_*.tflite files with
                              ``profile="raw"``: 2 raw outputs, no NMS inside, for GPU delegates (MediaPipe decodes)
      export_report.json      sizes, op lists, settings and parity figures

It is built in a temporary sibling directory (``.OUTPUT.partial-PID-*``) and moved into place at the very end,
so a failed export never leaves a directory that looks complete. With ``overwrite`` the old export is first
renamed to ``.OUTPUT.old-PID``, then the new one into place, then the old one deleted. A kill between the two
renames leaves no ``OUTPUT``; the next export to that path (or :func:`recover_interrupted_swap`) finishes the
move when the new export is complete (its ``export_report.json``, written last, reads as JSON), else puts the
old one back. Nothing is lost at any instant. The converters' temporary files live inside the staging folder, so
they go with it. A second export to the same path while one runs is refused: the first holds ``.OUTPUT.lock``
beside it (``flock``, released when the process ends, killed or not).

The SavedModel's contract is in ``keras_retinanet.export.saved_model``, the TFLite files' in
``keras_retinanet.export.tflite``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_retinanet.atomic import kill_point, locked_folder, process_alive
from keras_retinanet.conventions import LABELS_FILE
from keras_retinanet.detectors import load_retinanet
from keras_retinanet.export.calibration import calibration_paths, data_aspect_ratio, load_canvases
from keras_retinanet.export.config import (
    EXPORT_PROFILES,
    RAW_OUTPUTS,
    RAW_VARIANTS,
    REPORT_FILE,
    SAVED_MODEL_DIR,
    TFLITE_NMS_CHOICES,
    TFLITE_VARIANTS,
    ExportError,
    PostProcessConfig,
    class_names,
)
from keras_retinanet.export.geometry import export_geometry
from keras_retinanet.export.parity import parity_report
from keras_retinanet.export.saved_model import build_saved_model
from keras_retinanet.export.tflite import (
    TFLITE_DETECTIONS_PER_CLASS,
    convert_tflite,
    flex_ops,
    raw_box_scales,
    tflite_anchors,
    tflite_ops,
)
from keras_retinanet.imaging import parse_image_size, shape_for_aspect_ratio

logger = logging.getLogger(__name__)


def _with_metadata(
    data: bytes, model: Any, size: tuple[int, int], variant: str, class_thresholds: Any = None
) -> bytes:
    """The .tflite with TFLite Model Metadata, as MediaPipe Tasks' ObjectDetector requires."""
    from keras_retinanet import __version__
    from keras_retinanet.export.metadata import add_detection_metadata

    names = class_names(model)
    try:
        return add_detection_metadata(
            data,
            labels=names,
            name=f"RetinaNet {model.backbone_name or 'custom backbone'} ({variant})",
            description=(
                f"RetinaNet object detector, {len(names)} classes, {size[0]}x{size[1]} uint8 RGB input; "
                f"exported by keras_retinanet {__version__}."
            ),
            version=__version__,
            input_size=size,
            input_dtype="uint8",
            license="Apache-2.0",
            class_thresholds=class_thresholds,
        )
    except ImportError as err:
        raise ExportError(
            f"{err}; or export without metadata (--no-metadata; MediaPipe then refuses the file)"
        ) from None


def _with_raw_metadata(
    data: bytes, model: Any, size: tuple[int, int], variant: str, config: PostProcessConfig
) -> bytes:
    """The raw .tflite with MediaPipe's detector metadata (anchors, box scales, labels, decoder settings)."""
    from keras_retinanet import __version__
    from keras_retinanet.export.raw_metadata import add_raw_detection_metadata

    names = class_names(model)
    try:
        return add_raw_detection_metadata(
            data,
            labels=names,
            anchors=tflite_anchors(model, size),
            scales=raw_box_scales(config),
            decoder=dataclasses.asdict(config),
            name=f"RetinaNet {model.backbone_name or 'custom backbone'} ({variant}, raw outputs)",
            description=(
                f"RetinaNet object detector without NMS, {len(names)} classes, {size[0]}x{size[1]} float32 RGB "
                f"input (pixels 0..255); exported by keras_retinanet {__version__}."
            ),
            version=__version__,
            license="Apache-2.0",
        )
    except ImportError as err:
        raise ExportError(
            f"{err}; or export without metadata (--no-metadata; MediaPipe then refuses the file)"
        ) from None


def _leftovers(output: Path) -> list[tuple[str, int, Path]]:
    """(kind, pid, path) of the ``.NAME.partial-PID-*`` and ``.NAME.old-PID`` folders of exports to ``output``
    whose process is gone (a running export's folders are left alone)."""
    if not output.parent.is_dir():
        return []
    found = []
    for path in sorted(output.parent.glob(f".{output.name}.*")):
        kind, _, rest = path.name[len(output.name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind in ("partial", "old") and pid.isdigit() and not process_alive(int(pid)):
            found.append((kind, int(pid), path))
    return found


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
    output = Path(output).resolve()
    if output.exists():
        return None
    leftovers = _leftovers(output)
    for kind, pid, old in leftovers:
        if kind != "old":
            continue
        new = [path for k, p, path in leftovers if k == "partial" and p == pid and _complete(path)]
        if new:
            new[0].rename(output)
            shutil.rmtree(old, ignore_errors=True)
            done = f"{output}: finished the move of an export interrupted after it was complete"
        else:
            old.rename(output)
            done = f"{output}: put back the previous export (the export that was replacing it did not finish)"
        logger.warning("%s", done)
        return done
    return None


def _remove_stale_staging(output: Path) -> None:
    """Delete what killed exports to ``output`` left behind, after :func:`recover_interrupted_swap` has put
    an interrupted swap right."""
    recover_interrupted_swap(output)
    for _, _, path in _leftovers(output):
        logger.info("removing %s, left by an export that did not finish", path)
        shutil.rmtree(path, ignore_errors=True)


def _apply_umask(folder: Path) -> None:
    """Give the export the permissions of the user's umask (``mkdtemp`` makes its folder private, 0700), so
    that a serving process running as another user can read it."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def export_model(
    model_or_path: Any,
    output_dir: str | os.PathLike,
    *,
    image_size: int | str | Sequence[int] | None = None,
    saved_model: bool = True,
    tflite_variants: Sequence[str] | None = None,
    tflite_nms: str = "builtin",
    profile: str = "nms",
    calibration_data: str | None = None,
    calibration_steps: int = 200,
    parity_images: int = 8,
    overwrite: bool = False,
    metadata: bool = True,
    precision: str = "float32",
    class_thresholds: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export a RetinaNet to ``output_dir`` (layout in the module docstring); returns the report dict.

    Args:
        model_or_path: a RetinaNet or the path of a ``.keras`` file holding one.
        output_dir: the directory to create; refused if it exists unless ``overwrite``.
        image_size: network input size for the SavedModel letterbox and the fixed TFLite input (N or HxW);
            default the model's ``input_size``, the size it was trained at. ``"data"``: the calibration images'
            aspect ratio with the model's longer side, for phone apps (MediaPipe stretches each image to the
            input, so a file of the images' shape sees them as the model did in training). Another size is
            allowed (with a warning), and the parity figures then show what it costs.
        saved_model: write ``saved_model/``.
        tflite_variants: any of "float32", "float16", "int8" (None: all three; with ``profile="raw"``: float32
            and float16, the only ones it has).
        tflite_nms: "builtin" (default) or "combined": also write ``model_float32_combined_nms.tflite``, which
            needs the Flex runtime.
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
        profile: ``"nms"`` (default): the TFLite files with NMS inside (4 outputs). ``"raw"``: the 2-output
            files ``model_<variant>_raw.tflite`` (box encodings and scores; the raw contract of
            ``keras_retinanet.export.tflite``) with MediaPipe's detector metadata
            (``keras_retinanet.export.raw_metadata``), whose ops a GPU delegate runs; the report checks them
            (``keras_retinanet.export.gpu_ops``).
    """
    from keras_retinanet.model.inference_graph import dtype_policy

    dtype_policy(precision)  # checks the name before any slow work
    if precision != "float32" and not saved_model:
        raise ExportError(
            f"--precision {precision} sets the SavedModel's precision, but --no-saved-model skips it"
        )
    output = Path(output_dir).resolve()
    if profile not in EXPORT_PROFILES:
        raise ExportError(f"--profile must be one of {', '.join(EXPORT_PROFILES)}, got {profile!r}")
    raw = profile == RAW_OUTPUTS
    if tflite_variants is None:
        tflite_variants = RAW_VARIANTS if raw else TFLITE_VARIANTS
    tflite_variants = list(dict.fromkeys(tflite_variants))
    for variant in tflite_variants:
        if variant not in TFLITE_VARIANTS:
            raise ExportError(f"unknown TFLite variant {variant!r}; choose from {', '.join(TFLITE_VARIANTS)}")
        if raw and variant not in RAW_VARIANTS:
            raise ExportError(
                f"--profile raw writes {', '.join(RAW_VARIANTS)} files (GPU delegates compute in float), not "
                f"{variant}; leave it out with --tflite {','.join(RAW_VARIANTS)}"
            )
    if raw and class_thresholds is not None:
        raise ExportError(
            "--class-thresholds is written as MediaPipe score calibration, which MediaPipe applies to files with "
            "NMS inside only; export the raw profile without it"
        )
    if raw and tflite_nms != "builtin":
        raise ExportError(f"--profile raw has no NMS inside; --tflite-nms {tflite_nms} does not apply")
    if tflite_nms not in TFLITE_NMS_CHOICES:
        raise ExportError(f"--tflite-nms must be one of {', '.join(TFLITE_NMS_CHOICES)}, got {tflite_nms!r}")
    if output.exists() and not overwrite:
        raise ExportError(f"output directory {output} exists; pass --overwrite to replace it")
    if "int8" in tflite_variants and not calibration_data:
        raise ExportError(
            "int8 TFLite needs real calibration images: pass --calibration-data SPEC (e.g. the train set), "
            "or leave int8 out with --tflite float32,float16"
        )
    from_data = isinstance(image_size, str) and image_size.strip().lower() == "data"
    if from_data and not calibration_data:
        raise ExportError("--image-size data takes the images' aspect ratio from --calibration-data SPEC")
    if image_size is not None and not from_data:
        image_size = parse_image_size(image_size)
    # Read the calibration data before any slow work, so a bad spec fails at once.
    calib_paths = (
        calibration_paths(calibration_data, max(calibration_steps, parity_images)) if calibration_data else []
    )
    model = load_retinanet(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    aspect_ratio = data_aspect_ratio(calibration_data) if calibration_data else None
    if from_data:
        size = shape_for_aspect_ratio(aspect_ratio, max(model.input_size))
        logger.info("input size %dx%d: the calibration images' aspect ratio", *size)
    else:
        size = image_size or model.input_size
    geometry = export_geometry(model.input_size, size, aspect_ratio, model.use_group_norm)
    for warning in geometry["warnings"]:
        logger.warning("warning: %s", warning)
    config = PostProcessConfig.from_model(model)

    # One export to a path at a time: a second one started meanwhile would silently replace the first's files.
    with locked_folder(output.parent, f".{output.name}.lock", f"another retinanet export to {output.name}"):
        backup: Path | None = None
        _remove_stale_staging(output)
        if output.exists() and not overwrite:  # an interrupted swap put back just now
            raise ExportError(f"output directory {output} exists; pass --overwrite to replace it")
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-{os.getpid()}-", dir=output.parent))
        try:
            report: dict[str, Any] = {
                "model": str(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model.name,
                "num_classes": int(model.num_classes),
                "class_names": class_names(model),
                "image_size": list(size),
                "model_input_size": list(model.input_size),
                "geometry": geometry,
                "postprocess": dataclasses.asdict(config),
                "saved_model_precision": precision if saved_model else None,
                "tflite_detections_per_class": TFLITE_DETECTIONS_PER_CLASS,
                "num_anchors": int(model.anchor_generator.num_anchors(size)),
                "profile": profile,
                "files": {},
            }
            if raw:
                report["raw_outputs"] = {
                    "outputs": ["box encodings [1, N, 4] (ty, tx, th, tw)", "sigmoid scores [1, N, K]"],
                    "box_scales_yxhw": list(raw_box_scales(config)),
                    "mediapipe_nms": "MediaPipe decodes raw files with one class per anchor and class-agnostic NMS at "
                    "IoU 0.3 (its defaults); TFLiteDetector with this model's decoder settings (postprocess)",
                }
            (staging / LABELS_FILE).write_text("\n".join(class_names(model)) + "\n")
            thresholds_array = None
            if class_thresholds is not None:
                from keras_retinanet.detectors import class_thresholds as thresholds_file

                values = thresholds_file.read_class_thresholds(class_thresholds)
                thresholds_file.write_class_thresholds(staging / "class_thresholds.json", values)
                thresholds_array = thresholds_file.class_threshold_array(values, class_names(model))
                report["class_thresholds"] = values
            if saved_model:
                logger.info("writing SavedModel")
                info = build_saved_model(
                    model,
                    staging / SAVED_MODEL_DIR,
                    size,
                    precision=precision,
                    class_thresholds=class_thresholds,
                )
                report["files"][SAVED_MODEL_DIR] = info

            calib_canvases: list[np.ndarray] | None = None

            def representative() -> Iterable[np.ndarray]:
                nonlocal calib_canvases
                if calib_canvases is None:
                    # As the file will be fed: MediaPipe and TFLiteDetector stretch the whole image to the input.
                    calib_canvases = load_canvases(calib_paths[:calibration_steps], size, resize="stretch")
                return calib_canvases

            tflite_files: dict[str, Path] = {}
            if raw:
                jobs = [(v, RAW_OUTPUTS, f"model_{v}_raw.tflite") for v in tflite_variants]
            else:
                jobs = [(v, "builtin", f"model_{v}.tflite") for v in tflite_variants]
            if tflite_nms == "combined":
                jobs.append(("float32", "combined", "model_float32_combined_nms.tflite"))
            for variant, nms, name in jobs:
                logger.info("converting %s", name)
                data = convert_tflite(
                    model,
                    variant,
                    size,
                    config,
                    representative_images=representative if variant == "int8" else None,
                    nms=nms,
                    scratch_parent=staging,
                )
                if metadata and nms == "builtin":
                    data = _with_metadata(data, model, size, variant, thresholds_array)
                if metadata and nms == RAW_OUTPUTS:
                    data = _with_raw_metadata(data, model, size, variant, config)
                (staging / name).write_bytes(data)
                ops = tflite_ops(data)
                report["files"][name] = {
                    "size_bytes": len(data),
                    "ops": ops,
                    "flex_ops": flex_ops(ops),
                    "runtime": "needs the Flex delegate (SELECT_TF_OPS)"
                    if nms == "combined"
                    else "LiteRT builtin ops",
                }
                if nms == RAW_OUTPUTS:
                    from keras_retinanet.export.gpu_ops import gpu_op_report

                    report["files"][name]["gpu_delegate"] = gpu_op_report(data, ops)
                if nms == "builtin":
                    tflite_files[variant] = staging / name
                elif nms == RAW_OUTPUTS and metadata:  # TFLiteDetector decodes it from its metadata
                    tflite_files[f"{variant}_raw"] = staging / name

            if calib_paths and parity_images > 0 and saved_model:
                # Real images at the model's input size, or for a file of the images' aspect ratio at that size, which
                # the Keras model reads unscaled: where sizes agree, every model sees the same pixels.
                canvases = load_canvases(calib_paths[:parity_images], size if from_data else model.input_size)
                report["parity"] = parity_report(model, staging / SAVED_MODEL_DIR, tflite_files, canvases)
                report["parity_data"] = calibration_data
            else:
                report["parity"] = None
                report["parity_note"] = (
                    "no parity figures: needs --calibration-data images and the SavedModel"
                )
            (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")

            # Move into place: an old export is only removed once the new one is in its place.
            _apply_umask(staging)
            backup = None
            if output.exists():
                backup = output.parent / f".{output.name}.old-{os.getpid()}"
                output.rename(backup)
            kill_point(
                "export:old-moved"
            )  # the fault-injection hook of the kill test (tests/test_export_swap.py)
            staging.rename(output)
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
        except BaseException as error:
            if backup is not None and backup.exists() and not output.exists():
                backup.rename(output)  # the new one did not make it: the old one stays
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, OSError) and error.filename is None and error.errno is not None:
                raise OSError(
                    error.errno, error.strerror, str(output)
                ) from error  # a full disk names the export
            raise
        report["output"] = str(output)
        return report
