"""TFLite Model Metadata for detection files, so that MediaPipe Tasks' ObjectDetector accepts them.

MediaPipe Tasks (Android, iOS, web, Python) and the older TFLite Task Library refuse a detection model without
TFLite Model Metadata ("Object detection models require TFLite Model Metadata but none was found"). What they
read, checked against google-ai-edge/mediapipe (``tasks/cc/vision/object_detector/object_detector_graph.cc``,
``tasks/cc/components/processors/detection_postprocessing_graph.cc``, ``tasks/cc/vision/utils/image_tensor_specs.cc``):

- one input ``[1, H, W, 3]``, uint8 or float32; a float32 input needs NormalizationOptions with one mean and
  one std for all channels (per-channel values are refused); ImageProperties must say RGB;
- exactly four outputs (the ``TFLite_Detection_PostProcess`` op's), whose tensor metadata are listed in the
  model's output order and named ``location``, ``category``, ``score``, ``number of detections``: MediaPipe
  finds each output by these names (with other names it assumes that order);
- ``location`` carries BoundingBoxProperties: type BOUNDARIES, coordinate type RATIO, and ``index`` = where
  left, top, right, bottom sit in each row: ``[1, 0, 3, 2]`` for the op's ``ymin, xmin, ymax, xmax``;
- the label map is an associated file of type TENSOR_VALUE_LABELS on ``category``, one name a line, line i
  = class id i, stored in a zip archive appended to the flatbuffer (where MediaPipe's extractor looks).

The layout copies MediaPipe's own writer (``tasks/python/metadata/metadata_writers/object_detector.py``,
``create_for_models_with_nms``) field by field, including its output tensor group ``detection_result``. That
writer cannot be used directly: in mediapipe 1.2.x its package imports a compiled module missing from the
wheel. The metadata flatbuffer is built here with the generated classes of the metadata schema, which ship in
the mediapipe wheel as pure Python (``mediapipe.tasks.metadata.metadata_schema_py_generated``), and the model
is rewritten with LiteRT's generated TFLite schema (``ai_edge_litert.schema_py_generated``).

MediaPipe ignores any score threshold in the metadata (its options always set one, default 0.0), so none is
written: MediaPipe returns what the op returns, i.e. scores >= the export's score threshold.

Per-class score thresholds (``class_thresholds``, from ``retinanet export --class-thresholds``) are written as
MediaPipe's score calibration, which it applies to files with the NMS inside
(``detection_postprocessing_graph.cc``, ``score_calibration_calculator.cc``): a ScoreCalibrationOptions process
unit on ``score`` (transformation INVERSE_LOGISTIC, default score 0) and the associated file
``score_calibration.txt`` (type TENSOR_AXIS_SCORE_CALIBRATION), line k ``1,1,0,t_k`` for class k:
``sigmoid(1 * logit(s) + 0) = s``, so scores are unchanged, except that a score under its class's ``t_k``
(``min_score``) becomes the default score 0. The app's ``score_threshold`` (any value above 0) then drops it.
LiteRT ignores metadata: ``keras_retinanet.detectors`` read the thresholds back and apply them themselves.

Raw files (``retinanet export --profile raw``, :func:`add_raw_detection_metadata`): MediaPipe decodes and runs NMS.
A raw file has two outputs, box encodings ``[1, N, 4]`` and class scores ``[1, N, K]``
(``keras_retinanet.export.tflite``, raw contract). MediaPipe Tasks' ObjectDetector runs such a file when its
metadata says how to decode it, as MediaPipe Model Maker writes it for its own RetinaNet (``omit_nms=True``;
``mediapipe/model_maker/python/vision/object_detector/object_detector.py`` and
``mediapipe/tasks/python/metadata/metadata_writers/object_detector.py``, ``create_for_models_without_nms``):

- the input as for the files with NMS, here float32 with one mean and one
  std (0 and 1: the model takes pixels 0..255);
- output tensor metadata ``location`` (BoundingBoxProperties, as MediaPipe checks them) and ``score``, whose
  label map is an associated file of type TENSOR_AXIS_LABELS (one name per score column);
- a CustomMetadata named ``DETECTOR_METADATA`` holding an ``ObjectDetectorOptions`` flatbuffer (identifier
  V001, ``mediapipe/tasks/metadata/object_detector_metadata_schema.fbs``): the anchors as FixedAnchors
  (normalised centre and size, in the model's anchor order) and TensorsDecodingOptions (num_classes, num_boxes,
  num_coords 4, x/y/w/h scales, apply_exponential_on_box_size, sigmoid_score). MediaPipe's
  ``TensorsToDetectionsCalculator`` reads each row as (ty, tx, th, tw) (box format YXHW) and decodes
  ``yc = ty / y_scale * ha + ya``, ``h = exp(th / h_scale) * ha``: our ``BoxCoder`` with weights
  (wy, wx, wh, ww) as scales. The scores are sigmoid probabilities already (``sigmoid_score`` false).

Two more entries that MediaPipe reads where the app sets nothing itself, and our detectors read always:

- a ScoreThresholdingOptions process unit on ``score`` with the model's score threshold (MediaPipe's Android
  and web options use it when ``scoreThreshold`` is not set; its Python and C++ options always set one);
- a CustomMetadata named ``KERAS_RETINANET_DECODER``: the Keras decoder's NMS settings as JSON
  (``score_threshold``, ``nms_iou_threshold``, ``max_detections``, ``class_agnostic``), so that
  ``TFLiteDetector`` decodes a raw file as the Keras model does. MediaPipe ignores custom metadata of other
  names.

MediaPipe's own NMS on a raw file is fixed by its options, not by the file: one class per anchor (the best),
class-agnostic IoU NMS at ``min_suppression_threshold`` 0.3, unless the app sets ``multiclass_nms`` (C++ only).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_retinanet.conventions import LABELS_FILE
from keras_retinanet.detectors.tflite_file import (
    DECODER_METADATA_NAME,
    DETECTION_POSTPROCESS_OP,
    DETECTOR_METADATA_NAME,
    METADATA_FIELD,
    RAW_OUTPUT_NAMES,
    MetadataError,
    as_text,
    metadata_schema,
    object_detector_schema,
    read_model,
    tflite_schema,
)

METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
SCORE_CALIBRATION_FILE = "score_calibration.txt"
"""Per-class thresholds as MediaPipe score calibration (module docstring), packed beside the label map."""

# The op's outputs in order, and the metadata name MediaPipe looks each one up by.
OUTPUT_NAMES = ("location", "category", "score", "number of detections")
OUTPUT_DESCRIPTIONS = (
    "The locations of the detected boxes: ymin, xmin, ymax, xmax as fractions of the input height and width.",
    "The categories of the detected boxes: class id (0-based) as a float, a line of labels.txt.",
    "The scores of the detected boxes: sigmoid probability, descending.",
    "The number of the detected boxes (valid rows of the other outputs).",
)
DETECTION_GROUP = "detection_result"
# Position of left, top, right, bottom in a (ymin, xmin, ymax, xmax) row (the schema's BoundingBoxProperties.index).
BOX_INDEX = (1, 0, 3, 2)
# metadata_schema.fbs versions its members; the newest member used here is SubGraphMetadata.output_tensor_groups
# (1.2.0). MediaPipe's writer computes this with a compiled helper (tasks/cc/metadata/metadata_version.cc) that
# the 1.2.x wheel lacks; readers refuse metadata whose min_parser_version is above their own.
MIN_PARSER_VERSION = "1.2.0"
INPUT_DTYPES = ("uint8", "float32")
# CustomMetadata in SubGraphMetadata is a 1.5.0 member of metadata_schema.fbs (readers refuse higher versions).
RAW_MIN_PARSER_VERSION = "1.5.0"
DETECTOR_OPTIONS_IDENTIFIER = b"V001"
OBJECT_DETECTOR_MIN_PARSER_VERSION = "1.0.0"


def _postprocess_ops(model: Any) -> list:
    """The ``TFLite_Detection_PostProcess`` operators of the main subgraph (object API), in graph order."""
    schema = tflite_schema()
    found = []
    for op in model.subgraphs[0].operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin == schema.BuiltinOperator.CUSTOM and as_text(code.customCode) == DETECTION_POSTPROCESS_OP:
            found.append(op)
    return found


def _output_roles(subgraph: Any, ops: list, outputs: list[int]) -> list[int | None]:
    """For each model output, the post-processing output it carries: 0 boxes, 1 classes, 2 scores, 3 count.

    An op's own output tensor carries that output. The merged graph (one op per pair of classes) gathers boxes
    from the ops' boxes, ordered by their scores and masked by their counts (sources 0, 2, 3), classes likewise
    (1, 2, 3), scores from their scores (2, 3), the count from their counts (3): the lowest source names it.
    """
    producer = {int(t): op for op in subgraph.operators or [] for t in op.outputs}
    op_outputs = {int(t): k for op in ops for k, t in enumerate(op.outputs)}
    roles = []
    for output in outputs:
        sources, stack, seen = set(), [output], set()
        while stack:
            tensor = stack.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            if tensor in op_outputs:
                sources.add(op_outputs[tensor])
            elif tensor in producer:
                stack.extend(int(t) for t in producer[tensor].inputs if int(t) >= 0)
        roles.append(min(sources) if sources else None)
    return roles


def _image_input(model: Any, types: tuple[int, ...]) -> tuple[Any, Any]:
    """(subgraph, image tensor) of a model with one subgraph and one static [1, H, W, 3] input of ``types``."""
    if len(model.subgraphs or []) != 1:
        raise MetadataError(
            f"MediaPipe needs a model with one subgraph, this one has {len(model.subgraphs or [])}"
        )
    subgraph = model.subgraphs[0]
    inputs = list(subgraph.inputs if subgraph.inputs is not None else [])
    if len(inputs) != 1:
        raise MetadataError(f"MediaPipe needs one image input, this model has {len(inputs)} inputs")
    image = subgraph.tensors[inputs[0]]
    shape = [int(d) for d in image.shape]
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or min(shape) <= 0:
        raise MetadataError(f"MediaPipe needs a static [1, H, W, 3] image input, this one is {shape}")
    if image.type not in types:
        raise MetadataError(f"the image input has TFLite type {image.type}; this file needs one of {types}")
    return subgraph, image


def _check_model(model: Any) -> tuple[Any, list[int], int]:
    """Check the model is a detector MediaPipe can run; returns (input tensor, output roles, class count).

    ``roles[k]`` is the position in ``OUTPUT_NAMES`` of the model's k-th output, found by following the graph
    back to the ``TFLite_Detection_PostProcess`` op(s): one op whose outputs are the model's, or the several ops
    that ``keras_retinanet.export.tflite``'s thread-safe per-class NMS merges; any output order works.
    """
    from flatbuffers import flexbuffers

    schema = tflite_schema()
    subgraph, image = _image_input(model, (schema.TensorType.UINT8, schema.TensorType.FLOAT32))
    ops = _postprocess_ops(model)
    if not ops:
        raise MetadataError(
            f"the model has no {DETECTION_POSTPROCESS_OP} op: MediaPipe reads its four outputs"
        )
    outputs = [int(i) for i in (subgraph.outputs if subgraph.outputs is not None else [])]
    for index in outputs:
        if subgraph.tensors[index].type != schema.TensorType.FLOAT32:
            name = as_text(subgraph.tensors[index].name)
            raise MetadataError(f"output {name!r} is not float32; MediaPipe reads float detection outputs")
    roles = _output_roles(subgraph, ops, outputs)
    if len(roles) != 4 or sorted(r for r in roles if r is not None) != [0, 1, 2, 3]:
        raise MetadataError(
            "the model's outputs must be the four detection outputs (boxes, classes, scores, count) computed from "
            f"{DETECTION_POSTPROCESS_OP}; its outputs carry {roles} (0 boxes, 1 classes, 2 scores, 3 count)"
        )
    shapes = {role: [int(d) for d in subgraph.tensors[index].shape] for role, index in zip(roles, outputs)}
    rows = shapes[0][1] if len(shapes[0]) == 3 else None
    if [shapes[0], shapes[1], shapes[2], shapes[3]] != [[1, rows, 4], [1, rows], [1, rows], [1]]:
        raise MetadataError(
            f"detection outputs must be boxes [1, M, 4], classes [1, M], scores [1, M], count [1]; got {shapes}"
        )
    num_classes = 0
    for op in ops:
        options = (
            flexbuffers.Loads(bytes(bytearray(op.customOptions))) if op.customOptions is not None else {}
        )
        num_classes += int(dict(options).get("num_classes", 0))
    return image, roles, num_classes


def _check_labels(labels: Sequence[str], num_classes: int | None) -> list[str]:
    labels = [str(label) for label in labels]
    for i, label in enumerate(labels):
        if not label.strip() or "\n" in label or "\r" in label:
            raise MetadataError(f"label {i} ({label!r}) must be a non-empty name on one line")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        # MediaPipe reports the name only (it drops the class id when there is a label map).
        raise MetadataError(
            f"labels must be distinct, MediaPipe reports classes by name: {duplicates} repeat"
        )
    if num_classes is not None and len(labels) != num_classes:
        raise MetadataError(
            f"got {len(labels)} labels but {DETECTION_POSTPROCESS_OP} has num_classes={num_classes}"
        )
    return labels


def _normalization_values(normalization: tuple[Any, Any]) -> tuple[float, float]:
    """One (mean, std) for all channels: MediaPipe refuses per-channel normalisation."""
    values = []
    for name, value in zip(("mean", "std"), normalization):
        items = [float(v) for v in (value if isinstance(value, Sequence) else [value])]
        if not items or any(v != items[0] for v in items):
            raise MetadataError(
                f"normalization {name} {items}: MediaPipe only accepts one value for all channels "
                "(image_preprocessing_graph.cc: 'Per-channel image normalization is not available')"
            )
        values.append(items[0])
    mean, std = values
    if abs(std) < 1e-12:
        raise MetadataError("normalization std must not be 0")
    return mean, std


def _tensor_metadata(md: Any, name: str, description: str, content_properties: Any, content_type: int) -> Any:
    tensor = md.TensorMetadataT()
    tensor.name = name
    tensor.description = description
    tensor.content = md.ContentT()
    tensor.content.contentPropertiesType = content_type
    tensor.content.contentProperties = content_properties
    tensor.stats = md.StatsT()
    return tensor


def _feature_metadata(md: Any, name: str, description: str) -> Any:
    return _tensor_metadata(
        md, name, description, md.FeaturePropertiesT(), md.ContentProperties.FeatureProperties
    )


def _location_metadata(md: Any, name: str, description: str) -> Any:
    """Boxes as MediaPipe checks them: BOUNDARIES, RATIO, and where left, top, right, bottom sit in a row."""
    box_properties = md.BoundingBoxPropertiesT()
    box_properties.index = list(BOX_INDEX)
    box_properties.type = md.BoundingBoxType.BOUNDARIES
    box_properties.coordinateType = md.CoordinateType.RATIO
    return _tensor_metadata(md, name, description, box_properties, md.ContentProperties.BoundingBoxProperties)


def _labels_file(md: Any, file_type: int) -> Any:
    label_file = md.AssociatedFileT()
    label_file.name = LABELS_FILE
    label_file.description = "Labels for categories that the model can recognize."
    label_file.type = file_type
    return label_file


def _image_metadata(md: Any, input_size: tuple[int, int], input_dtype: str, normalization) -> Any:
    """The input tensor's metadata: RGB image of ``input_size``, normalisation for a float32 input."""
    height, width = input_size
    image_properties = md.ImagePropertiesT()
    image_properties.colorSpace = md.ColorSpaceType.RGB
    image_properties.defaultSize = md.ImageSizeT()
    image_properties.defaultSize.width = width
    image_properties.defaultSize.height = height
    image = _tensor_metadata(
        md,
        "image",
        f"Input image: {height}x{width} RGB, {input_dtype}. MediaPipe resizes any picture to this size "
        "by stretching it (no letterbox).",
        image_properties,
        md.ContentProperties.ImageProperties,
    )
    if normalization is None:
        image.stats.min, image.stats.max = [0.0], [255.0]
    else:
        mean, std = normalization
        unit = md.ProcessUnitT()
        unit.optionsType = md.ProcessUnitOptions.NormalizationOptions
        unit.options = md.NormalizationOptionsT()
        unit.options.mean, unit.options.std = [mean], [std]
        image.processUnits = [unit]
        image.stats.min, image.stats.max = [(0.0 - mean) / std], [(255.0 - mean) / std]
    return image


def _build_metadata(
    *,
    labels: list[str],
    roles: list[int],
    input_size: tuple[int, int],
    input_dtype: str,
    normalization: tuple[float, float] | None,
    name: str,
    description: str,
    version: str,
    author: str | None,
    license: str | None,
    calibrated: bool = False,
) -> bytes:
    """The metadata flatbuffer (identifier M001), laid out as MediaPipe's object detector writer does.

    ``calibrated``: the score tensor gets the score calibration of the module docstring (its file packed apart).
    """

    md = metadata_schema()
    image = _image_metadata(md, input_size, input_dtype, normalization)

    # Content.range {2, 2} (metadata_schema.fbs, table Content): every row of [1, N, 4] is one box, every
    # element of [1, N] one class or score.
    def content_range() -> Any:
        value_range = md.ValueRangeT()
        value_range.min, value_range.max = 2, 2
        return value_range

    location = _location_metadata(md, OUTPUT_NAMES[0], OUTPUT_DESCRIPTIONS[0])
    location.content.range = content_range()
    category = _feature_metadata(md, OUTPUT_NAMES[1], OUTPUT_DESCRIPTIONS[1])
    category.content.range = content_range()
    category.associatedFiles = [_labels_file(md, md.AssociatedFileType.TENSOR_VALUE_LABELS)]
    score = _feature_metadata(md, OUTPUT_NAMES[2], OUTPUT_DESCRIPTIONS[2])
    score.content.range = content_range()
    score.stats.min, score.stats.max = [0.0], [1.0]
    if calibrated:
        unit = md.ProcessUnitT()
        unit.optionsType = md.ProcessUnitOptions.ScoreCalibrationOptions
        unit.options = md.ScoreCalibrationOptionsT()
        unit.options.scoreTransformation = md.ScoreTransformationType.INVERSE_LOGISTIC
        unit.options.defaultScore = 0.0
        score.processUnits = [unit]
        calibration_file = md.AssociatedFileT()
        calibration_file.name = SCORE_CALIBRATION_FILE
        calibration_file.description = (
            "Per-class score thresholds as score calibration (min_score, identity)."
        )
        calibration_file.type = md.AssociatedFileType.TENSOR_AXIS_SCORE_CALIBRATION
        score.associatedFiles = [calibration_file]
    count = _feature_metadata(md, OUTPUT_NAMES[3], OUTPUT_DESCRIPTIONS[3])
    by_role = (location, category, score, count)

    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [by_role[role] for role in roles]  # the model's output order
    group = md.TensorGroupT()
    group.name = DETECTION_GROUP
    group.tensorNames = list(OUTPUT_NAMES[:3])
    subgraph.outputTensorGroups = [group]
    return pack_model_metadata(
        md,
        subgraph,
        MIN_PARSER_VERSION,
        name=name,
        description=description,
        version=version,
        author=author,
        license=license,
    )


def pack_model_metadata(
    md: Any,
    subgraph: Any,
    min_parser_version: str,
    *,
    name: str,
    description: str,
    version: str,
    author: str | None,
    license: str | None,
) -> bytes:
    """The metadata flatbuffer (identifier M001) of a model with one subgraph (``md.SubGraphMetadataT``)."""
    import flatbuffers

    metadata = md.ModelMetadataT()
    metadata.name = name
    metadata.description = description
    metadata.version = version
    metadata.author = author
    metadata.license = license
    metadata.minParserVersion = min_parser_version
    metadata.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(metadata.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _pack_model(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _append_zip(flatbuffer: bytes, files: dict[str, bytes]) -> bytes:
    """``flatbuffer`` followed by a zip archive of ``files`` (stored, fixed dates: the same input gives the same
    bytes), as MediaPipe's MetadataPopulator appends associated files."""
    stream = io.BytesIO()
    stream.write(flatbuffer)
    with zipfile.ZipFile(stream, "a") as archive:
        for file_name, content in files.items():
            archive.writestr(zipfile.ZipInfo(file_name, date_time=(1980, 1, 1, 0, 0, 0)), content)
    return stream.getvalue()


def add_detection_metadata(
    model_bytes: bytes,
    *,
    labels: Sequence[str],
    name: str,
    description: str,
    version: str,
    input_size: Sequence[int] | None = None,
    input_dtype: str | None = None,
    normalization: tuple[Any, Any] | None = None,
    author: str | None = None,
    license: str | None = None,
    class_thresholds: Sequence[float] | None = None,
) -> bytes:
    """A copy of a detection .tflite with TFLite Model Metadata and the label map packed in (for MediaPipe).

    The model must have one ``[1, H, W, 3]`` uint8 or float32 input and, as its only outputs, the four float32
    outputs of ``TFLite_Detection_PostProcess``: boxes ``[1, N, 4]`` (ymin, xmin, ymax, xmax as fractions of
    the input), classes ``[1, N]``, scores ``[1, N]``, count ``[1]``, in any order (each is found by the op's
    output position). Metadata already in the file, and any files packed after it, are replaced; the network
    itself is unchanged (same outputs in LiteRT). Deterministic: the same arguments give the same bytes.

    Args:
        model_bytes: the .tflite file contents.
        labels: class names, index i = class id i; as many as the op's ``num_classes``, each one line.
        name, description, version: ModelMetadata fields (MediaPipe shows none of them; apps may).
        input_size: (H, W) the caller expects; checked against the model's input (None: not checked).
        input_dtype: "uint8" or "float32" the caller expects; checked against the model (None: not checked).
        normalization: (mean, std) for a float32 input, ``input = (pixel - mean) / std`` with pixels 0..255;
            required for float32 input (MediaPipe refuses float input without it), refused for uint8 input
            (MediaPipe feeds uint8 pixels unchanged). One value each, or three equal values.
        author, license: optional ModelMetadata fields.
        class_thresholds: None, or one score threshold per class (0: none), written as MediaPipe score
            calibration (module docstring).
    Returns:
        The new file contents: the rewritten flatbuffer followed by a zip holding ``labels.txt`` (and
        ``score_calibration.txt`` with ``class_thresholds``).
    Raises:
        MetadataError: the model or the arguments do not fit (the message says what).
        ImportError: the metadata schema classes (mediapipe package) are not installed.
    """
    schema = tflite_schema()
    model = read_model(bytes(model_bytes))
    image, roles, num_classes = _check_model(model)
    labels = _check_labels(labels, num_classes)
    height, width = int(image.shape[1]), int(image.shape[2])
    dtype = "uint8" if image.type == schema.TensorType.UINT8 else "float32"
    if input_size is not None and tuple(int(s) for s in input_size) != (height, width):
        raise MetadataError(
            f"input_size {tuple(input_size)} does not match the model's input {height}x{width}"
        )
    if input_dtype is not None and input_dtype not in INPUT_DTYPES:
        raise MetadataError(f"input_dtype must be one of {', '.join(INPUT_DTYPES)}, got {input_dtype!r}")
    if input_dtype is not None and input_dtype != dtype:
        raise MetadataError(f"input_dtype {input_dtype!r} does not match the model's {dtype} input")
    if dtype == "float32" and normalization is None:
        raise MetadataError(
            "a float32 input needs normalization=(mean, std): MediaPipe refuses float input without"
        )
    if dtype == "uint8" and normalization is not None:
        raise MetadataError(
            "normalization applies to float32 input only; this model takes uint8 pixels as they are"
        )
    if class_thresholds is not None:
        class_thresholds = [float(t) for t in class_thresholds]
        if len(class_thresholds) != len(labels) or not all(0.0 <= t <= 1.0 for t in class_thresholds):
            raise MetadataError(
                f"class_thresholds must be {len(labels)} scores in [0, 1], one per class; got {class_thresholds}"
            )
    metadata = _build_metadata(
        labels=labels,
        roles=roles,
        input_size=(height, width),
        input_dtype=dtype,
        normalization=None if normalization is None else _normalization_values(normalization),
        name=name,
        description=description,
        version=version,
        author=author,
        license=license,
        calibrated=class_thresholds is not None,
    )
    files = {LABELS_FILE: ("\n".join(labels) + "\n").encode("utf-8")}
    if class_thresholds is not None:
        # No newline after the last line: MediaPipe reads one sigmoid per line, an empty one included.
        lines = [f"1.0,1.0,0.0,{t!r}" if t > 0 else "1.0,1.0,0.0" for t in class_thresholds]
        files[SCORE_CALIBRATION_FILE] = "\n".join(lines).encode("utf-8")
    return _with_metadata_buffer(model, metadata, files)


def _with_metadata_buffer(model: Any, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """The model's bytes with ``metadata`` as its TFLITE_METADATA buffer (replacing any) and ``files`` packed."""
    schema = tflite_schema()
    for buffer in model.buffers or []:
        if buffer.offset:
            raise MetadataError("buffers stored outside the flatbuffer (models over 2 GB) are not supported")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    entries = [m for m in (model.metadata or []) if as_text(m.name) == METADATA_FIELD]
    if entries:
        # Replace in place: the old buffer index stays valid for every entry that points to it.
        model.buffers[entries[0].buffer] = buffer
    else:
        model.buffers = list(model.buffers or []) + [buffer]
        entry = schema.MetadataT()
        entry.name = METADATA_FIELD
        entry.buffer = len(model.buffers) - 1
        model.metadata = list(model.metadata or []) + [entry]
    return _append_zip(_pack_model(model), files)


def _check_raw_model(model: Any, num_anchors: int, num_classes: int) -> tuple[int, int]:
    """Check the model has one float32 [1, H, W, 3] input and the two raw outputs; returns (H, W)."""
    schema = tflite_schema()
    subgraph, image = _image_input(model, (schema.TensorType.FLOAT32,))
    outputs = [subgraph.tensors[i] for i in subgraph.outputs]
    shapes = [[int(d) for d in t.shape] for t in outputs]
    if shapes != [[1, num_anchors, 4], [1, num_anchors, num_classes]]:
        raise MetadataError(
            f"raw outputs must be box encodings [1, {num_anchors}, 4] then scores [1, {num_anchors}, "
            f"{num_classes}] (anchors x classes); the model's are {shapes}"
        )
    if any(t.type != schema.TensorType.FLOAT32 for t in outputs):
        raise MetadataError("raw outputs must be float32")
    return int(image.shape[1]), int(image.shape[2])


def _detector_options(anchors: np.ndarray, scales: Sequence[float], num_classes: int) -> bytes:
    """MediaPipe's ObjectDetectorOptions flatbuffer (V001): fixed anchors and tensor decoding options."""
    import flatbuffers

    od = object_detector_schema()
    fixed = od.FixedAnchorsSchemaT()
    fixed.anchors = []
    for yc, xc, h, w in np.asarray(anchors, np.float64).tolist():
        anchor = od.FixedAnchorT()
        anchor.xCenter, anchor.yCenter, anchor.width, anchor.height = xc, yc, w, h
        fixed.anchors.append(anchor)
    ssd = od.SsdAnchorsOptionsT()
    ssd.fixedAnchorsSchema = fixed
    decoding = od.TensorsDecodingOptionsT()
    decoding.numClasses = int(num_classes)
    decoding.numBoxes = len(anchors)
    decoding.numCoords = 4
    decoding.keypointCoordOffset = 0
    decoding.numKeypoints = 0
    decoding.numValuesPerKeypoint = 2
    decoding.yScale, decoding.xScale, decoding.hScale, decoding.wScale = (float(s) for s in scales)
    decoding.applyExponentialOnBoxSize = True
    decoding.sigmoidScore = False  # the sigmoid is inside the model
    options = od.ObjectDetectorOptionsT()
    options.minParserVersion = OBJECT_DETECTOR_MIN_PARSER_VERSION
    options.ssdAnchorsOptions = ssd
    options.tensorsDecodingOptions = decoding
    builder = flatbuffers.Builder(1024)
    builder.Finish(options.Pack(builder), DETECTOR_OPTIONS_IDENTIFIER)
    return bytes(builder.Output())


def add_raw_detection_metadata(
    model_bytes: bytes,
    *,
    labels: Sequence[str],
    anchors: np.ndarray,
    scales: Sequence[float],
    decoder: dict[str, Any],
    name: str,
    description: str,
    version: str,
    author: str | None = None,
    license: str | None = None,
) -> bytes:
    """A copy of a raw .tflite with MediaPipe's detector metadata and the label map packed in.

    Args:
        model_bytes: the .tflite (float32 input [1, H, W, 3], pixels 0..255; outputs box encodings [1, N, 4]
            then sigmoid scores [1, N, K]).
        labels: K class names, index i = score column i.
        anchors: (N, 4) float anchors as normalised (yc, xc, h, w) (``keras_retinanet.export.tflite_anchors``).
        scales: (y_scale, x_scale, h_scale, w_scale) of the encodings (``tflite.raw_box_scales``).
        decoder: the Keras decoder's settings, {"score_threshold", "nms_iou_threshold", "max_detections",
            "class_agnostic"}; stored as JSON (module docstring), the score threshold also as MediaPipe's.
        name, description, version, author, license: ModelMetadata fields.
    Returns:
        The new file contents. Deterministic: the same arguments give the same bytes.
    Raises:
        MetadataError: the model or the arguments do not fit (the message says what).
        ImportError: the schema classes (mediapipe package) are not installed.
    """

    md = metadata_schema()
    anchors = np.asarray(anchors, np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4 or not np.isfinite(anchors).all():
        raise MetadataError(
            f"anchors must be a finite (N, 4) array of (yc, xc, h, w), got shape {anchors.shape}"
        )
    labels = _check_labels(labels, None)
    model = read_model(bytes(model_bytes))
    height, width = _check_raw_model(model, len(anchors), len(labels))
    settings = {
        key: decoder[key]
        for key in ("score_threshold", "nms_iou_threshold", "max_detections", "class_agnostic")
    }

    image = _image_metadata(md, (height, width), "float32", (0.0, 1.0))
    location = _location_metadata(
        md,
        RAW_OUTPUT_NAMES[0],
        "Box encodings (ty, tx, th, tw) per anchor; decode with the anchors and scales of DETECTOR_METADATA.",
    )
    score = _feature_metadata(md, RAW_OUTPUT_NAMES[1], "Sigmoid score of every class for every anchor.")
    score.stats.min, score.stats.max = [0.0], [1.0]
    score.associatedFiles = [_labels_file(md, md.AssociatedFileType.TENSOR_AXIS_LABELS)]
    threshold = md.ProcessUnitT()
    threshold.optionsType = md.ProcessUnitOptions.ScoreThresholdingOptions
    threshold.options = md.ScoreThresholdingOptionsT()
    threshold.options.globalScoreThreshold = float(settings["score_threshold"])
    score.processUnits = [threshold]

    detector_metadata = md.CustomMetadataT()
    detector_metadata.name = DETECTOR_METADATA_NAME
    detector_metadata.data = np.frombuffer(_detector_options(anchors, scales, len(labels)), np.uint8)
    decoder_metadata = md.CustomMetadataT()
    decoder_metadata.name = DECODER_METADATA_NAME
    decoder_metadata.data = np.frombuffer(json.dumps(settings, sort_keys=True).encode("utf-8"), np.uint8)

    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [location, score]
    subgraph.customMetadata = [detector_metadata, decoder_metadata]
    packed = pack_model_metadata(
        md,
        subgraph,
        RAW_MIN_PARSER_VERSION,
        name=name,
        description=description,
        version=version,
        author=author,
        license=license,
    )
    files = {LABELS_FILE: ("\n".join(labels) + "\n").encode("utf-8")}
    return _with_metadata_buffer(model, packed, files)


__all__ = [
    "DETECTION_GROUP",
    "LABELS_FILE",
    "OUTPUT_NAMES",
    "RAW_MIN_PARSER_VERSION",
    "SCORE_CALIBRATION_FILE",
    "add_detection_metadata",
    "add_raw_detection_metadata",
]
