"""ONNX and OpenVINO IR exports: the SavedModel's ``detect_float32`` graph (letterbox, network, decoding, NMS).

Output contract: ONNX and OpenVINO files (stable; ``keras_retinanet.detectors.onnx`` relies on it)
---------------------------------------------------------------------------------------------------
One input ``images`` float32 ``[B, H, W, 3]``, RGB in [0, 255], batch and size dynamic (one size per batch);
the outputs of the SavedModel's ``detect_float32`` (``keras_retinanet.export.saved_model``): ``boxes`` float32
``[B, M, 4]`` x1, y1, x2, y2 in original pixels, ``scores`` float32 ``[B, M]``, ``classes`` int32 ``[B, M]``
(-1 for padding), ``num_detections`` int32 ``[B]``. Class names: ``labels.txt`` beside the files, and the
ONNX file's metadata ``class_names`` (JSON) and ``image_size``.

- ``model_float32.onnx`` (format ``onnx``): tf2onnx at opset 18; NMS is one ``NonMaxSuppression`` op.
- ``model_openvino_float32.xml`` / ``.bin`` (``openvino``): ``openvino.convert_model`` of the ONNX file,
  weights kept float32. Compile it with ``INFERENCE_PRECISION_HINT=f32``: on CPUs with AVX512-BF16 or AMX the
  default is bf16, which moves scores by up to 0.2 (``keras_retinanet.detectors.onnx`` does).
- ``model_openvino_int8.xml`` / ``.bin`` (``openvino_int8``): NNCF post-training quantisation of that model's
  network on the ``--calibration-data`` photos at their own size; the letterbox, decoding and NMS stay float32.

OpenVINO cannot convert the TensorFlow graph itself (it has no rule for ``CombinedNonMaxSuppression``), hence
the ONNX file in between.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from keras_retinanet.conventions import LABELS_FILE
from keras_retinanet.export.config import ExportError, ExportJob
from keras_retinanet.imaging import read_image

ONNX_OPSET = 18
ONNX_FILE = "model_float32.onnx"
OPENVINO_FILES = {"float32": "model_openvino_float32.xml", "int8": "model_openvino_int8.xml"}


def _require(module: str, extra: str, purpose: str) -> Any:
    try:
        return __import__(module)
    except ImportError as err:
        raise ExportError(
            f"{purpose} needs {module}: pip install 'keras-retinanet[{extra}]' ({err})"
        ) from err


def convert_onnx(job: ExportJob, path: Path) -> None:
    """Convert the model's float32 detection graph (``detect_float32``) to ONNX at ``path``."""
    import tensorflow as tf

    onnx = _require("onnx", "onnx", "--format onnx")
    tf2onnx = _require("tf2onnx", "onnx", "--format onnx")
    from keras_retinanet.export.saved_model import serving_module

    module = serving_module(job.model, job.image_size, job.folder / LABELS_FILE)
    spec = [tf.TensorSpec([None, None, None, 3], tf.float32, name="images")]
    proto, _ = tf2onnx.convert.from_function(module.detect_float32, input_signature=spec, opset=ONNX_OPSET)
    for key, value in {
        "class_names": json.dumps(list(job.model.class_names)),
        "image_size": json.dumps(list(job.image_size)),
    }.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def write_onnx(job: ExportJob) -> dict[str, dict]:
    """The ``onnx`` format's writer: ``model_float32.onnx`` in ``job.folder``; returns its report entry."""
    path = job.folder / ONNX_FILE
    convert_onnx(job, path)
    return {ONNX_FILE: {"size_bytes": path.stat().st_size, "opset": ONNX_OPSET, "runtime": "ONNX Runtime"}}


def _openvino_float32(job: ExportJob, ov: Any, scratch: Path) -> Any:
    """The OpenVINO model of the ONNX file (the one this export wrote, else one converted into ``scratch``)."""
    onnx_path = job.folder / ONNX_FILE
    if not onnx_path.is_file():
        onnx_path = scratch / ONNX_FILE
        convert_onnx(job, onnx_path)
    return ov.convert_model(str(onnx_path))


def _outside_the_network(model: Any) -> list[str]:
    """The names of the ops before the first and after the last convolution of ``model`` (an OpenVINO model):
    the letterbox, the decoding and the NMS, whose values depend on the photo's size rather than its pixels."""
    convolutions = {"Convolution", "GroupConvolution"}
    ops = model.get_ordered_ops()  # topological

    def sources(op) -> set[str]:
        return {value.get_node().get_friendly_name() for value in op.input_values()}

    after, before = (
        set(),
        set(),
    )  # ops that a convolution feeds (or is); ops that feed a convolution (or are one)
    for op in ops:
        if op.get_type_name() in convolutions or sources(op) & after:
            after.add(op.get_friendly_name())
    for op in reversed(ops):
        if op.get_type_name() in convolutions or op.get_friendly_name() in before:
            before |= {op.get_friendly_name()} | sources(op)
    return [op.get_friendly_name() for op in ops if op.get_friendly_name() not in after & before]


def _quantize(job: ExportJob, model: Any) -> Any:
    """NNCF's post-training int8 quantisation of ``model``'s network on the calibration photos, fed as the file
    is fed: one a batch, float32 RGB at their own size. The letterbox, decoding and NMS stay float: their ranges
    follow the photo's size (boxes in its pixels), so ranges calibrated on one size would clip another's."""
    import numpy as np

    nncf = _require("nncf", "openvino", "--format openvino_int8")
    nncf.set_log_level(logging.WARNING)  # else a line per op it leaves float
    photos = nncf.Dataset(job.calibration_photos, lambda path: np.asarray(read_image(path), np.float32)[None])
    return nncf.quantize(
        model,
        photos,
        subset_size=len(job.calibration_photos),
        ignored_scope=nncf.IgnoredScope(names=_outside_the_network(model), validate=False),
    )


def write_openvino(job: ExportJob, precision: str = "float32") -> dict[str, dict]:
    """The ``openvino`` (``precision="float32"``) and ``openvino_int8`` formats' writer: an OpenVINO IR (.xml
    and its .bin weights) in ``job.folder``; returns its report entry."""
    ov = _require("openvino", "openvino", "--format openvino")
    if precision == "int8" and not job.calibration_photos:  # before the slow conversion
        raise ExportError(
            "--format openvino_int8 needs real calibration images: pass --calibration-data SPEC"
        )
    path = job.folder / OPENVINO_FILES[precision]
    with tempfile.TemporaryDirectory(prefix=".openvino-", dir=job.folder) as scratch:
        model = _openvino_float32(job, ov, Path(scratch))
        if precision == "int8":
            model = _quantize(job, model)
        # The default would store float16 weights.
        ov.save_model(model, str(path), compress_to_fp16=False)
    weights = path.with_suffix(".bin")
    return {
        path.name: {
            "size_bytes": path.stat().st_size + weights.stat().st_size,
            "weights": weights.name,
            "precision": precision,
            "runtime": "OpenVINO",
        }
    }
