"""What a .tflite file holds, read without TensorFlow: its operators, its TFLite Model Metadata and whether its
NMS gives the same detections at any thread count. The detectors read files with it and the exporter checks
what it wrote with it (writing metadata: :mod:`keras_retinanet.export.metadata`).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DETECTION_POSTPROCESS_OP = "TFLite_Detection_PostProcess"
# LiteRT's regular-NMS kernel is correct at every thread count only for the first two class columns of an op
# (docs/tflite-threads.md).
CLASSES_PER_OP = 2
# The entry holding the TFLite Model Metadata flatbuffer (MediaPipe's kMetadataBufferName).
METADATA_FIELD = "TFLITE_METADATA"
# Raw files: MediaPipe's decoding options, our decoder's settings, and the two outputs' tensor metadata names.
DETECTOR_METADATA_NAME = "DETECTOR_METADATA"
DECODER_METADATA_NAME = "KERAS_RETINANET_DECODER"
RAW_OUTPUT_NAMES = ("location", "score")


class MetadataError(ValueError):
    """The model cannot carry detection metadata (wrong inputs or outputs), or its metadata is unreadable."""


def metadata_schema():
    """The generated classes of metadata_schema.fbs (TFLite Model Metadata), from the mediapipe wheel."""
    return _wheel_schema("metadata_schema_py_generated.py")


def object_detector_schema():
    """The generated classes of MediaPipe's object_detector_metadata_schema.fbs (``DETECTOR_METADATA``)."""
    return _wheel_schema("object_detector_metadata_schema_py_generated.py")


@functools.cache
def _wheel_schema(file_name: str):
    """A generated schema module of the mediapipe wheel's ``tasks/metadata`` folder, loaded from its file:
    ``import mediapipe`` would import TensorFlow, matplotlib and the native task library first."""
    hint = (
        "TFLite Model Metadata needs the metadata schema classes from the mediapipe package "
        "(pip install 'keras-retinanet[mobile]', or pip install --no-deps mediapipe==1.2.3)"
    )
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{hint}: mediapipe is not installed")
    path = Path(list(spec.submodule_search_locations)[0], "tasks", "metadata", file_name)
    if not path.is_file():
        raise ImportError(f"{hint}: {path} is missing from the installed mediapipe")
    module_spec = importlib.util.spec_from_file_location(f"keras_retinanet_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def tflite_schema():
    """The generated classes of LiteRT's schema.fbs (the .tflite flatbuffer), from the ai-edge-litert wheel."""
    from ai_edge_litert import schema_py_generated as schema

    return schema


def as_text(value: Any) -> str | None:
    """A flatbuffer string field (bytes) as str; None stays None."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_model(data: bytes) -> Any:
    """A .tflite's bytes as the schema's object API (``ModelT``); MetadataError if they are not a TFLite file."""
    schema = tflite_schema()
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise MetadataError("not a TFLite flatbuffer (no TFL3 identifier)")
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))


def pack_model(table: Any, identifier: bytes = b"TFL3") -> bytes:
    """The bytes of an object-API table: a ``ModelT`` by default (the inverse of :func:`read_model`)."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(table.Pack(builder), identifier)
    return bytes(builder.Output())


def _parse(path_or_bytes: str | os.PathLike | bytes) -> Any:
    """``ModelT`` of a file or its bytes, unchecked: a truncated file raises what the reader hits."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    schema = tflite_schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))


def op_name(model: Any, op: Any) -> str:
    """An operator's name: the builtin's (``CONV_2D``) or a custom op's code."""
    schema = tflite_schema()
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        return str(as_text(code.customCode))
    return _builtin_names().get(builtin, f"BUILTIN_{builtin}")


@functools.cache
def _builtin_names() -> dict[int, str]:
    return {v: k for k, v in vars(tflite_schema().BuiltinOperator).items() if not k.startswith("_")}


def postprocess_ops(model: Any) -> list[tuple[Any, dict]]:
    """``(op, its custom options)`` of every ``TFLite_Detection_PostProcess`` op, in graph order."""
    from flatbuffers import flexbuffers

    return [
        (
            op,
            dict(flexbuffers.Loads(bytes(bytearray(op.customOptions))))
            if op.customOptions is not None
            else {},
        )
        for subgraph in model.subgraphs or []
        for op in subgraph.operators or []
        if op_name(model, op) == DETECTION_POSTPROCESS_OP
    ]


def read_detection_metadata(path_or_bytes: str | os.PathLike | bytes) -> dict[str, Any] | None:
    """The detection metadata of a .tflite as plain Python, or None when the file has none.

    Returns:
        ``{"name", "description", "version", "author", "license", "min_parser_version",
        "input": {"name", "tensor", "size": (H, W), "dtype", "color_space", "normalization": (mean, std) | None},
        "outputs": [{"name", "tensor", "position"}] in the model's output order,
        "box_index": [left, top, right, bottom positions], "box_type", "coordinate_type" (enum names, e.g.
        "BOUNDARIES", "RATIO"), "labels": [...] (the packed label file), "class_thresholds": [per class] or None
        (the score calibration file's min_score, 0 without), "score_threshold": ScoreThresholdingOptions' value
        or None, "raw_decoding" and "decoder" (a raw file's, see ``_raw_decoding``; None with NMS inside),
        "associated_files": [names in the zip]}``.
    Raises:
        MetadataError: the file is not a TFLite model, or its metadata or label file is broken (named).
    """
    is_bytes = isinstance(path_or_bytes, (bytes, bytearray, memoryview))
    where = "model bytes" if is_bytes else os.fspath(path_or_bytes)
    data = bytes(path_or_bytes) if is_bytes else Path(where).read_bytes()
    try:
        model = read_model(data)
    except MetadataError as err:
        raise MetadataError(f"{where}: {err}") from None
    entry = next((m for m in model.metadata or [] if as_text(m.name) == METADATA_FIELD), None)
    buffer = model.buffers[entry.buffer].data if entry is not None else None
    raw = b"" if buffer is None else bytes(bytearray(buffer))
    if not raw:
        return None
    md = metadata_schema()
    if not md.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0):
        raise MetadataError(
            f"{where}: {METADATA_FIELD} is not a metadata flatbuffer (identifier {raw[4:8]!r})"
        )
    metadata = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(raw, 0))
    if len(metadata.subgraphMetadata or []) != 1:
        raise MetadataError(
            f"{where}: expected metadata for one subgraph, got {len(metadata.subgraphMetadata or [])}"
        )
    subgraph_md, subgraph = metadata.subgraphMetadata[0], model.subgraphs[0]
    inputs_md = subgraph_md.inputTensorMetadata or []
    outputs_md = subgraph_md.outputTensorMetadata or []
    if len(inputs_md) != len(subgraph.inputs) or len(outputs_md) != len(subgraph.outputs):
        raise MetadataError(
            f"{where}: metadata describes {len(inputs_md)} inputs / {len(outputs_md)} outputs, the model has "
            f"{len(subgraph.inputs)} / {len(subgraph.outputs)}"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        archive = None
    return {
        **{
            key: as_text(getattr(metadata, key))
            for key in ("name", "description", "version", "author", "license")
        },
        "min_parser_version": as_text(metadata.minParserVersion),
        "input": _input_entry(inputs_md[0], subgraph.tensors[subgraph.inputs[0]]),
        **_output_entries(outputs_md, subgraph, archive, where),
        **_raw_decoding(subgraph_md, where),
        "associated_files": archive.namelist() if archive is not None else [],
    }


def _enum_name(enum: Any, value: int) -> str:
    return next((k for k, v in vars(enum).items() if not k.startswith("_") and v == value), str(value))


def _input_entry(image_md: Any, image: Any) -> dict[str, Any]:
    md = metadata_schema()
    properties = image_md.content.contentProperties if image_md.content is not None else None
    normalization = None
    for unit in image_md.processUnits or []:
        if unit.optionsType == md.ProcessUnitOptions.NormalizationOptions:
            normalization = (float(unit.options.mean[0]), float(unit.options.std[0]))
    return {
        "name": as_text(image_md.name),
        "tensor": as_text(image.name),
        "size": (int(image.shape[1]), int(image.shape[2])),
        "dtype": "uint8" if image.type == tflite_schema().TensorType.UINT8 else "float32",
        "color_space": _enum_name(md.ColorSpaceType, properties.colorSpace)
        if properties is not None and hasattr(properties, "colorSpace")
        else None,
        "normalization": normalization,
    }


def _packed_lines(archive: zipfile.ZipFile | None, file_name: str, what: str, where: str) -> list[str]:
    """The lines of a file packed in the model's zip; MetadataError when the metadata names a missing one."""
    if archive is None or file_name not in archive.namelist():
        raise MetadataError(f"{where}: the {what} {file_name!r} named in the metadata is not packed")
    return archive.read(file_name).decode("utf-8").split("\n")


def _output_entries(
    outputs_md: list, subgraph: Any, archive: zipfile.ZipFile | None, where: str
) -> dict[str, Any]:
    """The outputs' names and positions, the box layout, the labels, per-class thresholds and score threshold."""
    md = metadata_schema()
    outputs, labels, thresholds, score_threshold = [], None, None, None
    box: dict[str, Any] = {"box_index": None, "box_type": None, "coordinate_type": None}
    label_types = (md.AssociatedFileType.TENSOR_VALUE_LABELS, md.AssociatedFileType.TENSOR_AXIS_LABELS)
    for position, tensor_md in enumerate(outputs_md):
        tensor_name = as_text(subgraph.tensors[subgraph.outputs[position]].name)
        outputs.append({"name": as_text(tensor_md.name), "tensor": tensor_name, "position": position})
        content = tensor_md.content
        if getattr(content, "contentPropertiesType", None) == md.ContentProperties.BoundingBoxProperties:
            props = content.contentProperties
            box = {
                "box_index": [int(i) for i in props.index] if props.index is not None else None,
                "box_type": _enum_name(md.BoundingBoxType, props.type),
                "coordinate_type": _enum_name(md.CoordinateType, props.coordinateType),
            }
        for unit in tensor_md.processUnits or []:
            if unit.optionsType == md.ProcessUnitOptions.ScoreThresholdingOptions:
                score_threshold = float(unit.options.globalScoreThreshold)
        for file in tensor_md.associatedFiles or []:
            if file.type in label_types and labels is None:
                lines = _packed_lines(archive, as_text(file.name), "label file", where)
                labels = [line.rstrip("\r") for line in lines]
                if labels and labels[-1] == "":
                    labels.pop()
            if file.type == md.AssociatedFileType.TENSOR_AXIS_SCORE_CALIBRATION and thresholds is None:
                lines = _packed_lines(archive, as_text(file.name), "score calibration file", where)
                thresholds = [
                    float(row[3]) if len(row) == 4 else 0.0 for row in (li.split(",") for li in lines)
                ]
    return {
        "outputs": outputs,
        **box,
        "labels": labels,
        "class_thresholds": thresholds,
        "score_threshold": score_threshold,
    }


def _raw_decoding(subgraph_md: Any, where: str) -> dict[str, Any]:
    """``{"raw_decoding", "decoder"}`` of a raw file's custom metadata (None for a file with NMS inside).

    ``raw_decoding``: MediaPipe's DETECTOR_METADATA as ``{"anchors": (N, 4) float32 normalised (yc, xc, h, w),
    "scales": (y, x, h, w), "num_classes", "num_boxes", "apply_exponential_on_box_size", "sigmoid_score"}``;
    ``decoder``: the Keras decoder's settings (None in files of other writers, e.g. MediaPipe Model Maker).
    """
    import numpy as np

    found: dict[str, Any] = {"raw_decoding": None, "decoder": None}
    for custom in subgraph_md.customMetadata or []:
        name, data = as_text(custom.name), bytes(bytearray(custom.data if custom.data is not None else []))
        if name == DETECTOR_METADATA_NAME:
            od = object_detector_schema()
            if not od.ObjectDetectorOptions.ObjectDetectorOptionsBufferHasIdentifier(data, 0):
                raise MetadataError(
                    f"{where}: {DETECTOR_METADATA_NAME} is not an ObjectDetectorOptions flatbuffer"
                )
            options = od.ObjectDetectorOptions.GetRootAs(data, 0)
            decoding = options.TensorsDecodingOptions()
            fixed = options.SsdAnchorsOptions().FixedAnchorsSchema() if options.SsdAnchorsOptions() else None
            if decoding is None or fixed is None:
                raise MetadataError(
                    f"{where}: {DETECTOR_METADATA_NAME} lacks its anchors or decoding options"
                )
            anchors = [fixed.Anchors(i) for i in range(fixed.AnchorsLength())]
            found["raw_decoding"] = {
                "anchors": np.array(
                    [(a.YCenter(), a.XCenter(), a.Height(), a.Width()) for a in anchors], np.float32
                ).reshape(-1, 4),
                "scales": (decoding.YScale(), decoding.XScale(), decoding.HScale(), decoding.WScale()),
                "num_classes": int(decoding.NumClasses()),
                "num_boxes": int(decoding.NumBoxes()),
                "apply_exponential_on_box_size": bool(decoding.ApplyExponentialOnBoxSize()),
                "sigmoid_score": bool(decoding.SigmoidScore()),
            }
        elif name == DECODER_METADATA_NAME:
            try:
                found["decoder"] = json.loads(data.decode("utf-8"))
            except ValueError as err:
                raise MetadataError(f"{where}: {DECODER_METADATA_NAME} is not JSON: {err}") from None
    return found


def tflite_ops(path_or_bytes: str | os.PathLike | bytes) -> list[str]:
    """Sorted distinct operator names in a .tflite file (builtins by name, custom ops by custom code)."""
    model = _parse(path_or_bytes)
    return sorted(
        {op_name(model, op) for subgraph in model.subgraphs or [] for op in subgraph.operators or []}
    )


def thread_safe(path_or_bytes: str | os.PathLike | bytes) -> bool:
    """Whether a .tflite gives the same detections at any interpreter thread count: False for one regular-NMS
    ``TFLite_Detection_PostProcess`` op over more than two classes (files written before 0.2)."""
    model = _parse(path_or_bytes)
    return not any(
        options.get("use_regular_nms") and int(options.get("num_classes", 0)) > CLASSES_PER_OP
        for _, options in postprocess_ops(model)
    )


def flex_ops(ops: Iterable[str]) -> list[str]:
    """The Flex (SELECT_TF_OPS) operators among ``ops``."""
    return [op for op in ops if op.startswith("Flex")]
