"""TFLite Model Metadata for the raw files (``retinanet export --profile raw``): MediaPipe decodes and runs NMS.

A raw file has two outputs, box encodings ``[1, N, 4]`` and class scores ``[1, N, K]``
(``keras_retinanet.export.tflite``, raw contract). MediaPipe Tasks' ObjectDetector runs such a file when its
metadata says how to decode it, as MediaPipe Model Maker writes it for its own RetinaNet (``omit_nms=True``;
``mediapipe/model_maker/python/vision/object_detector/object_detector.py`` and
``mediapipe/tasks/python/metadata/metadata_writers/object_detector.py``, ``create_for_models_without_nms``):

- the input as for the files with NMS (``keras_retinanet.export.metadata``), here float32 with one mean and one
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

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_retinanet.detectors.tflite_file import (
    DECODER_METADATA_NAME,
    DETECTOR_METADATA_NAME,
    RAW_OUTPUT_NAMES,
    MetadataError,
    metadata_schema,
    object_detector_schema,
    read_model,
    tflite_schema,
)
from keras_retinanet.export.metadata import (
    LABELS_FILE,
    _check_labels,
    _image_metadata,
    _tensor_metadata,
    _with_metadata_buffer,
    pack_model_metadata,
)

# CustomMetadata in SubGraphMetadata is a 1.5.0 member of metadata_schema.fbs (readers refuse higher versions).
RAW_MIN_PARSER_VERSION = "1.5.0"
DETECTOR_OPTIONS_IDENTIFIER = b"V001"
OBJECT_DETECTOR_MIN_PARSER_VERSION = "1.0.0"


def _check_raw_model(model: Any, num_anchors: int, num_classes: int) -> tuple[int, int]:
    """Check the model has one float32 [1, H, W, 3] input and the two raw outputs; returns (H, W)."""
    schema = tflite_schema()
    if len(model.subgraphs or []) != 1:
        raise MetadataError(
            f"MediaPipe needs a model with one subgraph, this one has {len(model.subgraphs or [])}"
        )
    subgraph = model.subgraphs[0]
    if len(subgraph.inputs) != 1:
        raise MetadataError(f"expected one image input, the model has {len(subgraph.inputs)}")
    image = subgraph.tensors[subgraph.inputs[0]]
    shape = [int(d) for d in image.shape]
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or image.type != schema.TensorType.FLOAT32:
        raise MetadataError(f"the raw profile's input must be float32 [1, H, W, 3], got {shape}")
    outputs = [subgraph.tensors[i] for i in subgraph.outputs]
    shapes = [[int(d) for d in t.shape] for t in outputs]
    if shapes != [[1, num_anchors, 4], [1, num_anchors, num_classes]]:
        raise MetadataError(
            f"raw outputs must be box encodings [1, {num_anchors}, 4] then scores [1, {num_anchors}, "
            f"{num_classes}] (anchors x classes); the model's are {shapes}"
        )
    if any(t.type != schema.TensorType.FLOAT32 for t in outputs):
        raise MetadataError("raw outputs must be float32")
    return shape[1], shape[2]


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
    box_properties = md.BoundingBoxPropertiesT()
    box_properties.index = [1, 0, 3, 2]  # as Model Maker writes it; MediaPipe checks type and coordinates
    box_properties.type = md.BoundingBoxType.BOUNDARIES
    box_properties.coordinateType = md.CoordinateType.RATIO
    location = _tensor_metadata(
        md,
        RAW_OUTPUT_NAMES[0],
        "Box encodings (ty, tx, th, tw) per anchor; decode with the anchors and scales of DETECTOR_METADATA.",
        box_properties,
        md.ContentProperties.BoundingBoxProperties,
    )
    score = _tensor_metadata(
        md,
        RAW_OUTPUT_NAMES[1],
        "Sigmoid score of every class for every anchor.",
        md.FeaturePropertiesT(),
        md.ContentProperties.FeatureProperties,
    )
    score.stats.min, score.stats.max = [0.0], [1.0]
    label_file = md.AssociatedFileT()
    label_file.name = LABELS_FILE
    label_file.description = "Labels for categories that the model can recognize."
    label_file.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    score.associatedFiles = [label_file]
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


__all__ = ["RAW_MIN_PARSER_VERSION", "add_raw_detection_metadata"]
