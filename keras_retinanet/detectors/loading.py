"""Model paths -> detectors: which format a path holds, and loading it with a clear error for anything else."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any

from keras_retinanet.detectors.base import Detector, ModelFileError

MODEL_FORMATS = ("keras", "saved_model", "tflite", "onnx", "openvino")
RUNTIMES = ("litert", "mediapipe")
_ACCEPTED = (
    "a .keras file, a SavedModel directory (with saved_model.pb), a .tflite file, a .onnx file or an OpenVINO "
    "IR .xml"
)


def model_format(path: str | os.PathLike) -> str:
    """One of ``MODEL_FORMATS`` from a model path, checking the file's head; ModelFileError with what is
    accepted for a missing path or an unsupported format."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"model not found: {path} (expected {_ACCEPTED})")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(
            os.path.join(path, "saved_model", "saved_model.pb")
        ):
            return "saved_model"
        raise ModelFileError(f"{path} is a directory without saved_model.pb; expected {_ACCEPTED}")
    lower = path.lower()
    with open(path, "rb") as f:
        head = f.read(8)
    if lower.endswith(".tflite"):
        if head[4:8] != b"TFL3":
            raise ModelFileError(f"{path} has a .tflite name but is not a TFLite flatbuffer")
        return "tflite"
    if lower.endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise ModelFileError(
                f"{path} has a .keras name but is not a Keras archive (zip): truncated or not a model"
            )
        return "keras"
    if lower.endswith(".onnx"):
        return "onnx"
    if lower.endswith(".xml"):
        with open(path, "rb") as f:
            if b"<net" not in f.read(4096):
                raise ModelFileError(f"{path} has a .xml name but is not an OpenVINO IR (no <net> element)")
        return "openvino"
    if head[4:8] == b"TFL3":
        return "tflite"
    if lower.endswith((".h5", ".hdf5")):
        raise ModelFileError(f"{path}: legacy HDF5 models are not supported; save the model as .keras")
    if lower.endswith(".pb"):
        raise ModelFileError(f"{path}: pass the SavedModel directory, not the saved_model.pb file")
    raise ModelFileError(f"{path}: unsupported model file; expected {_ACCEPTED}")


def load_retinanet(path: str | os.PathLike) -> Any:
    """The ``RetinaNet`` of a ``.keras`` file; ModelFileError for a missing, corrupt or other model."""
    import keras

    from keras_retinanet.model.retinanet import RetinaNet

    path = os.fspath(path)
    if model_format(path) != "keras":
        raise ModelFileError(f"{path}: expected a .keras file saved by `retinanet train` or RetinaNet.save()")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - any failure here means "not a loadable RetinaNet"
        raise ModelFileError(f"{path}: cannot load this Keras model ({type(err).__name__}: {err})") from err
    if not isinstance(model, RetinaNet):
        raise ModelFileError(
            f"{path} holds a {type(model).__name__}, not a keras_retinanet RetinaNet; save it with "
            "`retinanet train` or RetinaNet.save()"
        )
    return model


def load_detector(
    model: Any,
    image_size: int | Sequence[int] | None = None,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    num_threads: int | None = None,
    runtime: str = "litert",
    precision: str = "float32",
    class_thresholds: Any = None,
) -> Detector:
    """A :class:`Detector` for a model object or a model path.

    Args:
        model: a ``RetinaNet``, a :class:`Detector` (returned as it is; the other options are then refused), or
            a path to a ``.keras`` file, a SavedModel directory (or an export folder holding ``saved_model/``) or
            a ``.tflite``, ``.onnx`` or OpenVINO ``.xml`` file.
        image_size: letterbox size for Keras models (int or (H, W); default the model's ``image_size``).
        score_threshold, max_detections: None keeps the model's own decoder settings.
        num_threads: LiteRT, ONNX Runtime or OpenVINO threads (default: every core).
        runtime: for a ``.tflite``: ``"litert"`` (``TFLiteDetector``) or ``"mediapipe"`` (``MediaPipeDetector``).
        precision: ``"float32"`` or ``"bf16"``, for Keras models; exported files compute as they were exported.
        class_thresholds: a thresholds file or ``{class name: score}`` (``Detector.set_class_thresholds``).
    Raises:
        ModelFileError: missing path, unsupported format, or not a RetinaNet detector.
        ValueError: ``precision`` other than float32 for a SavedModel or TFLite file.
        ClassThresholdsError: a thresholds file that cannot be read or names a class the model does not have.
    """
    for flag, value in (("--max-detections", max_detections), ("--threads", num_threads)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if isinstance(model, Detector):
        given = {
            "image_size": image_size,
            "score_threshold": score_threshold,
            "max_detections": max_detections,
            "precision": None if precision == "float32" else precision,
            "class_thresholds": class_thresholds,
        }
        given = [name for name, value in given.items() if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)}: set them when building the {type(model).__name__} (class thresholds: "
                "its set_class_thresholds), not here"
            )
        return model
    detector = _load(model, image_size, score_threshold, max_detections, num_threads, runtime, precision)
    if class_thresholds is not None:
        try:
            detector.set_class_thresholds(class_thresholds)
        except BaseException:
            detector.close()
            raise
    return detector


def _load(model, image_size, score_threshold, max_detections, num_threads, runtime, precision) -> Detector:
    from keras_retinanet.detectors.keras_model import KerasDetector

    if not isinstance(model, (str, os.PathLike)):
        return KerasDetector(model, image_size, score_threshold, max_detections, precision=precision)
    path = os.fspath(model)
    file_format = model_format(path)
    if precision != "float32" and file_format != "keras":
        raise ValueError(
            f"--precision {precision} applies to .keras models (run by Keras); {path} is a {file_format} file, which "
            "computes in the precision it was exported with (`retinanet export --precision bf16` writes a "
            "bfloat16 SavedModel)"
        )
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "mediapipe" and file_format != "tflite":
        raise ModelFileError(
            f"{path}: the mediapipe runtime runs .tflite files only, this is a {file_format} model"
        )
    if runtime == "mediapipe":
        from keras_retinanet.detectors.mediapipe import MediaPipeDetector

        return MediaPipeDetector(path, score_threshold, max_detections)
    if file_format == "tflite":
        from keras_retinanet.detectors.tflite import TFLiteDetector

        return TFLiteDetector(path, score_threshold, max_detections, num_threads=num_threads)
    if file_format in ("onnx", "openvino"):
        from keras_retinanet.detectors.onnx import OnnxDetector, OpenVINODetector

        detector = OnnxDetector if file_format == "onnx" else OpenVINODetector
        return detector(path, score_threshold, max_detections, num_threads=num_threads)
    if file_format == "saved_model":
        from keras_retinanet.detectors.saved_model import SavedModelDetector

        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            path = os.path.join(path, "saved_model")
        return SavedModelDetector(path, score_threshold, max_detections)
    return KerasDetector(
        load_retinanet(path), image_size, score_threshold, max_detections, precision=precision
    )
