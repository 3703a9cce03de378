"""TFLite Model Metadata for detection files, so that MediaPipe Tasks' ObjectDetector accepts them.

The layout copies MediaPipe's own writer (``tasks/python/metadata/metadata_writers/object_detector.py``), which
cannot be imported from the 1.2.x wheel; it is built here with the schema classes that ship in the wheel as pure
Python, and the model is rewritten with LiteRT's TFLite schema. What MediaPipe reads (docs/mobile.md):

- one ``[1, H, W, 3]`` input, uint8 or float32 (float32 needs NormalizationOptions, one mean and one std for all
  channels); ImageProperties RGB;
- files with NMS inside (:func:`add_detection_metadata`): the four outputs of ``TFLite_Detection_PostProcess``,
  with tensor metadata in the model's output order named ``location``, ``category``, ``score``, ``number of
  detections``; ``location`` has BoundingBoxProperties BOUNDARIES, RATIO, index ``[1, 0, 3, 2]`` (the op's
  ``ymin, xmin, ymax, xmax``); ``labels.txt`` (TENSOR_VALUE_LABELS on ``category``, line i = class id i) in a zip
  appended to the flatbuffer. No score threshold: MediaPipe ignores one in the metadata. Per-class thresholds
  are MediaPipe score calibration on ``score``: INVERSE_LOGISTIC, default score 0, ``score_calibration.txt``
  line k ``1,1,0,t_k`` (identity, but a score under ``t_k`` becomes 0, which any app threshold drops);
- raw files (:func:`add_raw_detection_metadata`, MediaPipe Model Maker's ``omit_nms`` layout): ``location`` and
  ``score`` (TENSOR_AXIS_LABELS), a CustomMetadata ``DETECTOR_METADATA`` (ObjectDetectorOptions V001: the
  anchors as normalised (yc, xc, h, w) and the decoding options, scales = the box coder's (wy, wx, wh, ww)),
  a ScoreThresholdingOptions with the model's threshold, and a CustomMetadata ``KERAS_RETINANET_DECODER`` (the
  Keras decoder's NMS settings as JSON, for ``TFLiteDetector``; MediaPipe ignores it).
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
    pack_model,
    postprocess_ops,
    read_model,
    tflite_schema,
)

METADATA_IDENTIFIER = b"M001"
SCORE_CALIBRATION_FILE = "score_calibration.txt"

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
# The newest metadata_schema.fbs member used: SubGraphMetadata.output_tensor_groups (1.2.0), CustomMetadata
# (1.5.0) in raw files. Readers refuse metadata whose min_parser_version is above their own.
MIN_PARSER_VERSION = "1.2.0"
RAW_MIN_PARSER_VERSION = "1.5.0"


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
    """(input tensor, output roles, class count) of a detector MediaPipe can run.

    ``roles[k]``: the position in ``OUTPUT_NAMES`` of the model's k-th output, found by following the graph back
    to the ``TFLite_Detection_PostProcess`` op(s) (one, or one per pair of classes merged); any order works.
    """
    schema = tflite_schema()
    subgraph, image = _image_input(model, (schema.TensorType.UINT8, schema.TensorType.FLOAT32))
    ops = postprocess_ops(model)
    if not ops:
        raise MetadataError(
            f"the model has no {DETECTION_POSTPROCESS_OP} op: MediaPipe reads its four outputs"
        )
    outputs = [int(i) for i in (subgraph.outputs if subgraph.outputs is not None else [])]
    for index in outputs:
        if subgraph.tensors[index].type != schema.TensorType.FLOAT32:
            name = as_text(subgraph.tensors[index].name)
            raise MetadataError(f"output {name!r} is not float32; MediaPipe reads float detection outputs")
    roles = _output_roles(subgraph, [op for op, _ in ops], outputs)
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
    return image, roles, sum(int(options.get("num_classes", 0)) for _, options in ops)


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


def _table(schema: Any, kind: str, **fields: Any) -> Any:
    """An object-API table ``schema.<kind>T`` with ``fields`` set."""
    table = getattr(schema, f"{kind}T")()
    for key, value in fields.items():
        setattr(table, key, value)
    return table


def _tensor_metadata(md: Any, name: str, description: str, kind: str = "FeatureProperties", **props) -> Any:
    """A TensorMetadataT whose content is a ``kind`` table with ``props``."""
    content = _table(
        md,
        "Content",
        contentPropertiesType=getattr(md.ContentProperties, kind),
        contentProperties=_table(md, kind, **props),
    )
    return _table(
        md, "TensorMetadata", name=name, description=description, content=content, stats=_table(md, "Stats")
    )


def _location_metadata(md: Any, name: str, description: str) -> Any:
    """Boxes as MediaPipe checks them: BOUNDARIES, RATIO, and where left, top, right, bottom sit in a row."""
    return _tensor_metadata(
        md,
        name,
        description,
        "BoundingBoxProperties",
        index=list(BOX_INDEX),
        type=md.BoundingBoxType.BOUNDARIES,
        coordinateType=md.CoordinateType.RATIO,
    )


def _labels_file(md: Any, file_type: int) -> Any:
    description = "Labels for categories that the model can recognize."
    return _table(md, "AssociatedFile", name=LABELS_FILE, description=description, type=file_type)


def _process_unit(md: Any, kind: str, **fields: Any) -> Any:
    """A ProcessUnitT of options ``kind`` (e.g. ``"NormalizationOptions"``) with ``fields`` set."""
    options = _table(md, kind, **fields)
    return _table(md, "ProcessUnit", optionsType=getattr(md.ProcessUnitOptions, kind), options=options)


def _image_metadata(md: Any, image_size: tuple[int, int], input_dtype: str, normalization) -> Any:
    """The input tensor's metadata: RGB image of ``image_size``, normalisation for a float32 input."""
    height, width = image_size
    image = _tensor_metadata(
        md,
        "image",
        f"Input image: {height}x{width} RGB, {input_dtype}. MediaPipe resizes any picture to this size "
        "by stretching it (no letterbox).",
        "ImageProperties",
        colorSpace=md.ColorSpaceType.RGB,
        defaultSize=_table(md, "ImageSize", width=width, height=height),
    )
    if normalization is None:
        image.stats.min, image.stats.max = [0.0], [255.0]
    else:
        mean, std = normalization
        image.processUnits = [_process_unit(md, "NormalizationOptions", mean=[mean], std=[std])]
        image.stats.min, image.stats.max = [(0.0 - mean) / std], [(255.0 - mean) / std]
    return image


def _build_metadata(
    labels: list[str],
    roles: list[int],
    image: Any,
    about: dict[str, Any],
    calibrated: bool,
) -> bytes:
    """The metadata flatbuffer of a file with NMS inside, laid out as MediaPipe's object detector writer does.

    ``calibrated``: the score tensor gets the score calibration of the module docstring.
    """
    md = metadata_schema()
    location = _location_metadata(md, OUTPUT_NAMES[0], OUTPUT_DESCRIPTIONS[0])
    category = _tensor_metadata(md, OUTPUT_NAMES[1], OUTPUT_DESCRIPTIONS[1])
    category.associatedFiles = [_labels_file(md, md.AssociatedFileType.TENSOR_VALUE_LABELS)]
    score = _tensor_metadata(md, OUTPUT_NAMES[2], OUTPUT_DESCRIPTIONS[2])
    score.stats.min, score.stats.max = [0.0], [1.0]
    for tensor in (location, category, score):
        # Content.range {2, 2}: every row of [1, N, 4] is one box, every element of [1, N] one class or score.
        tensor.content.range = _table(md, "ValueRange", min=2, max=2)
    if calibrated:
        score.processUnits = [
            _process_unit(
                md,
                "ScoreCalibrationOptions",
                scoreTransformation=md.ScoreTransformationType.INVERSE_LOGISTIC,
                defaultScore=0.0,
            )
        ]
        score.associatedFiles = [
            _table(
                md,
                "AssociatedFile",
                name=SCORE_CALIBRATION_FILE,
                description="Per-class score thresholds as score calibration (min_score, identity).",
                type=md.AssociatedFileType.TENSOR_AXIS_SCORE_CALIBRATION,
            )
        ]
    count = _tensor_metadata(md, OUTPUT_NAMES[3], OUTPUT_DESCRIPTIONS[3])
    by_role = (location, category, score, count)
    subgraph = _table(
        md,
        "SubGraphMetadata",
        inputTensorMetadata=[image],
        outputTensorMetadata=[by_role[role] for role in roles],  # the model's output order
        outputTensorGroups=[
            _table(md, "TensorGroup", name=DETECTION_GROUP, tensorNames=list(OUTPUT_NAMES[:3]))
        ],
    )
    return _pack_metadata(md, subgraph, MIN_PARSER_VERSION, about)


def _pack_metadata(md: Any, subgraph: Any, min_parser_version: str, about: dict[str, Any]) -> bytes:
    """The metadata flatbuffer (identifier M001) of a model with one subgraph; ``about``: ModelMetadata's
    name, description, version, author and license."""
    metadata = _table(
        md, "ModelMetadata", minParserVersion=min_parser_version, subgraphMetadata=[subgraph], **about
    )
    return pack_model(metadata, METADATA_IDENTIFIER)


def add_detection_metadata(
    model_bytes: bytes,
    *,
    labels: Sequence[str],
    name: str,
    description: str,
    version: str,
    image_size: Sequence[int] | None = None,
    input_dtype: str | None = None,
    normalization: tuple[Any, Any] | None = None,
    author: str | None = None,
    license: str | None = None,
    class_thresholds: Sequence[float] | None = None,
) -> bytes:
    """A copy of a detection .tflite with TFLite Model Metadata and the label map packed in (for MediaPipe).

    The model must have one ``[1, H, W, 3]`` uint8 or float32 input and, as its only outputs, the four float32
    outputs of ``TFLite_Detection_PostProcess`` in any order: boxes ``[1, N, 4]`` (ymin, xmin, ymax, xmax as
    fractions of the input), classes ``[1, N]``, scores ``[1, N]``, count ``[1]``. Metadata already in the file
    is replaced; the network is unchanged. The same arguments give the same bytes.

    Args:
        labels: class names, index i = class id i; as many as the op's ``num_classes``, each one line.
        name, description, version, author, license: ModelMetadata fields.
        image_size, input_dtype: (H, W) and "uint8" / "float32" the caller expects (None: not checked).
        normalization: (mean, std) for a float32 input, ``input = (pixel - mean) / std`` with pixels 0..255;
            required for float32 input, refused for uint8. One value each, or three equal values.
        class_thresholds: None, or one score threshold per class (0: none), as MediaPipe score calibration.
    Returns:
        The rewritten flatbuffer followed by a zip of ``labels.txt`` (and ``score_calibration.txt``).
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
    if image_size is not None and tuple(int(s) for s in image_size) != (height, width):
        raise MetadataError(
            f"image_size {tuple(image_size)} does not match the model's input {height}x{width}"
        )
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
    md = metadata_schema()
    norm = None if normalization is None else _normalization_values(normalization)
    about = dict(name=name, description=description, version=version, author=author, license=license)
    metadata = _build_metadata(
        labels, roles, _image_metadata(md, (height, width), dtype, norm), about, class_thresholds is not None
    )
    files = {}
    if class_thresholds is not None:
        # No newline after the last line: MediaPipe reads one sigmoid per line, an empty one included.
        lines = [f"1.0,1.0,0.0,{t!r}" if t > 0 else "1.0,1.0,0.0" for t in class_thresholds]
        files[SCORE_CALIBRATION_FILE] = "\n".join(lines).encode("utf-8")
    return _with_metadata_buffer(model, metadata, labels, files)


def _with_metadata_buffer(
    model: Any, metadata: bytes, labels: list[str], files: dict[str, bytes] | None = None
) -> bytes:
    """The model's bytes with ``metadata`` as its TFLITE_METADATA buffer (replacing any), followed by a zip of
    ``labels.txt`` and ``files`` (stored, fixed dates: deterministic), where MediaPipe looks for them."""
    files = {LABELS_FILE: ("\n".join(labels) + "\n").encode("utf-8"), **(files or {})}
    schema = tflite_schema()
    for buffer in model.buffers or []:
        if buffer.offset:
            raise MetadataError("buffers stored outside the flatbuffer (models over 2 GB) are not supported")
    buffer = _table(schema, "Buffer", data=np.frombuffer(metadata, np.uint8))
    entries = [m for m in (model.metadata or []) if as_text(m.name) == METADATA_FIELD]
    if entries:
        # Replace in place: the old buffer index stays valid for every entry that points to it.
        model.buffers[entries[0].buffer] = buffer
    else:
        model.buffers = list(model.buffers or []) + [buffer]
        entry = _table(schema, "Metadata", name=METADATA_FIELD, buffer=len(model.buffers) - 1)
        model.metadata = list(model.metadata or []) + [entry]
    stream = io.BytesIO()
    stream.write(pack_model(model))
    with zipfile.ZipFile(stream, "a") as archive:
        for file_name, content in files.items():
            archive.writestr(zipfile.ZipInfo(file_name, date_time=(1980, 1, 1, 0, 0, 0)), content)
    return stream.getvalue()


def _detector_options(anchors: np.ndarray, scales: Sequence[float], num_classes: int) -> bytes:
    """MediaPipe's ObjectDetectorOptions flatbuffer (V001): fixed anchors and tensor decoding options."""
    od = object_detector_schema()
    fixed = [
        _table(od, "FixedAnchor", xCenter=xc, yCenter=yc, width=w, height=h)
        for yc, xc, h, w in np.asarray(anchors, np.float64).tolist()
    ]
    decoding = _table(od, "TensorsDecodingOptions", numClasses=int(num_classes), numBoxes=len(anchors))
    decoding.numCoords, decoding.numValuesPerKeypoint = 4, 2
    decoding.keypointCoordOffset = decoding.numKeypoints = 0
    decoding.yScale, decoding.xScale, decoding.hScale, decoding.wScale = (float(s) for s in scales)
    decoding.applyExponentialOnBoxSize = True
    decoding.sigmoidScore = False  # the sigmoid is inside the model
    ssd = _table(od, "SsdAnchorsOptions", fixedAnchorsSchema=_table(od, "FixedAnchorsSchema", anchors=fixed))
    options = _table(
        od,
        "ObjectDetectorOptions",
        minParserVersion="1.0.0",
        ssdAnchorsOptions=ssd,
        tensorsDecodingOptions=decoding,
    )
    return pack_model(options, b"V001")


def _custom_metadata(md: Any, name: str, data: bytes) -> Any:
    return _table(md, "CustomMetadata", name=name, data=np.frombuffer(data, np.uint8))


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
        anchors: (N, 4) anchors as normalised (yc, xc, h, w) (``keras_retinanet.export.tflite.tflite_anchors``).
        scales: (y_scale, x_scale, h_scale, w_scale) of the encodings (``tflite.raw_box_scales``).
        decoder: the Keras decoder's settings, {"score_threshold", "nms_iou_threshold", "max_detections",
            "class_agnostic"}.
        name, description, version, author, license: ModelMetadata fields.
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
    schema = tflite_schema()
    subgraph, image = _image_input(model, (schema.TensorType.FLOAT32,))
    outputs = [subgraph.tensors[i] for i in subgraph.outputs]
    shapes = [[int(d) for d in t.shape] for t in outputs]
    if shapes != [[1, len(anchors), 4], [1, len(anchors), len(labels)]]:
        raise MetadataError(
            f"raw outputs must be box encodings [1, {len(anchors)}, 4] then scores [1, {len(anchors)}, "
            f"{len(labels)}] (anchors x classes); the model's are {shapes}"
        )
    if any(t.type != schema.TensorType.FLOAT32 for t in outputs):
        raise MetadataError("raw outputs must be float32")
    keys = ("score_threshold", "nms_iou_threshold", "max_detections", "class_agnostic")
    settings = {key: decoder[key] for key in keys}

    location = _location_metadata(
        md,
        RAW_OUTPUT_NAMES[0],
        "Box encodings (ty, tx, th, tw) per anchor; decode with the anchors and scales of DETECTOR_METADATA.",
    )
    score = _tensor_metadata(md, RAW_OUTPUT_NAMES[1], "Sigmoid score of every class for every anchor.")
    score.stats.min, score.stats.max = [0.0], [1.0]
    score.associatedFiles = [_labels_file(md, md.AssociatedFileType.TENSOR_AXIS_LABELS)]
    threshold = float(settings["score_threshold"])
    score.processUnits = [_process_unit(md, "ScoreThresholdingOptions", globalScoreThreshold=threshold)]
    subgraph_md = md.SubGraphMetadataT()
    size = (int(image.shape[1]), int(image.shape[2]))
    subgraph_md.inputTensorMetadata = [_image_metadata(md, size, "float32", (0.0, 1.0))]
    subgraph_md.outputTensorMetadata = [location, score]
    subgraph_md.customMetadata = [
        _custom_metadata(md, DETECTOR_METADATA_NAME, _detector_options(anchors, scales, len(labels))),
        _custom_metadata(md, DECODER_METADATA_NAME, json.dumps(settings, sort_keys=True).encode("utf-8")),
    ]
    about = dict(name=name, description=description, version=version, author=author, license=license)
    packed = _pack_metadata(md, subgraph_md, RAW_MIN_PARSER_VERSION, about)
    return _with_metadata_buffer(model, packed, labels)
