"""The TFLite export: builtin ops only, ``TFLite_Detection_PostProcess`` for decoding and NMS.

Output contract: TFLite (stable; the layout of mobile SSD models)
------------------------------------------------------------------
One input: ``images`` uint8 ``[1, H, W, 3]`` RGB, ``H, W = image_size`` (default: the model's ``image_size``);
normalisation is inside. Four float32 outputs, in this order (those of ``TFLite_Detection_PostProcess``):

    0  boxes           [1, M, 4]  ymin, xmin, ymax, xmax, NORMALISED to the H x W input
    1  classes         [1, M]     class id as float (0..K-1, no background offset)
    2  scores          [1, M]     sigmoid probability, sorted descending; 0 for padding
    3  num_detections  [1]        number of valid rows, as float

:class:`keras_retinanet.detectors.TFLiteDetector` maps them to image pixels. Per-class NMS runs over all anchors
with score >= the decoder's threshold, at most 100 boxes per class (the op's limit), then keeps the
``max_detections`` best; unlike the Keras decoder, no per-level top-k. LiteRT's regular-NMS kernel drops a
class at some thread counts (docs/tflite-threads.md), so the file runs one op per pair of classes and merges
their outputs: the same detections at any thread count. Every file carries TFLite Model Metadata for MediaPipe
(``keras_retinanet.export.metadata``).

Box coding: the op computes ``yc = ty / y_scale * ha + ya``, ``h = exp(th / h_scale) * ha`` with the anchors as
normalised (yc, xc, h, w). The float files feed boxes decoded as ``BoxCoder.decode`` does, clipped to the input
and re-encoded with unit scales; the int8 file feeds the raw deltas (dy, dx, min(dh, clamp * wh),
min(dw, clamp * ww)) with scales (wy, wx, wh, ww), so that no box arithmetic runs in int8.

Output contract: raw TFLite (``--profile raw``; MediaPipe Model Maker's ``omit_nms`` layout)
---------------------------------------------------------------------------------------------
One input: ``images`` float32 ``[1, H, W, 3]`` RGB pixels 0..255. No decoding op and no NMS (ops a GPU delegate
accepts). Two float32 outputs, in this order:

    0  box encodings   [1, N, 4]  (ty, tx, th, tw) per anchor: ty = wy * (yc - ya) / ha, th = wh * log(h / ha),
                                  of the box decoded as the Keras decoder does and clipped to the input
    1  class scores    [1, N, K]  sigmoid probabilities

N anchors in the model's order (``tflite_anchors``, in the metadata); scales (y, x, h, w) = the box coder's
(wy, wx, wh, ww) (``raw_box_scales``). MediaPipe decodes and runs its own NMS; ``TFLiteDetector`` decodes with
the Keras decoder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from keras_retinanet.atomic import kill_point
from keras_retinanet.detectors.tflite_file import (
    CLASSES_PER_OP,
    DETECTION_POSTPROCESS_OP,
    as_text,
    flex_ops,
    pack_model,
    read_model,
    tflite_ops,
)
from keras_retinanet.export.config import RAW_VARIANTS, TFLITE_VARIANTS, ExportError, ExportJob
from keras_retinanet.export.requantization import fit_requantization_scales
from keras_retinanet.imaging import parse_image_size

logger = logging.getLogger(__name__)

# The op keeps at most this many boxes per class; the converter has no attribute for it (nms_utils.cc).
TFLITE_DETECTIONS_PER_CLASS = 100
_FLOAT_ONE_BITS = 0x3F800000  # the int32 bit pattern of float32 1.0


def tflite_anchors(model: Any, image_size: Sequence[int]) -> np.ndarray:
    """(N, 4) float32 anchors as (yc, xc, h, w), in the model's order: those of the input padded to a multiple
    of 32 (as ``RetinaNet.decode`` has them), normalised by the unpadded (H, W) like the op's output boxes."""
    height, width = image_size
    padded = model.padded_shape((height, width)) if hasattr(model, "padded_shape") else (height, width)
    anchors = np.asarray(model.anchor_generator(image_shape=padded), dtype=np.float64)
    x1, y1, x2, y2 = anchors.T
    out = np.stack([(y1 + y2) / 2 / height, (x1 + x2) / 2 / width, (y2 - y1) / height, (x2 - x1) / width], 1)
    return out.astype(np.float32)


def _implements_signature(decoder: Any, num_classes: int, scales: Sequence[float]) -> str:
    """The ``experimental_implements`` text the converter turns into the op's custom options; ``decoder``: a
    ``DetectionDecoder`` (its NMS settings), ``scales``: (y_scale, x_scale, h_scale, w_scale)."""
    y_scale, x_scale, h_scale, w_scale = scales
    attrs = [
        ("max_detections", "i", decoder.max_detections),
        ("max_classes_per_detection", "i", 1),
        ("num_classes", "i", num_classes),
        ("nms_score_threshold", "f", decoder.score_threshold),
        ("nms_iou_threshold", "f", decoder.nms_iou_threshold),
        ("y_scale", "f", y_scale),
        ("x_scale", "f", x_scale),
        ("h_scale", "f", h_scale),
        ("w_scale", "f", w_scale),
        ("use_regular_nms", "b", not decoder.class_agnostic),
    ]
    text = {"f": lambda v: repr(float(v)), "b": lambda v: str(bool(v)).lower(), "i": lambda v: str(int(v))}
    parts = [f'attr {{ key: "{key}" value {{ {kind}: {text[kind](value)} }} }}' for key, kind, value in attrs]
    return " ".join([f'name: "{DETECTION_POSTPROCESS_OP}"', *parts])


def _detection_postprocess(encodings, scores, anchors, decoder: Any, num_classes: int, scales):
    """Placeholder that the TFLite converter replaces by the ``TFLite_Detection_PostProcess`` op.

    Takes encodings (1, N, 4) (ty, tx, th, tw), scores (1, N, K), anchors (N, 4) normalised (yc, xc, h, w);
    returns boxes (1, M, 4), classes, scores (1, M), num (1,): zeros in TensorFlow, the op's outputs in TFLite.
    """
    import tensorflow as tf

    max_det = decoder.max_detections

    @tf.function(experimental_implements=_implements_signature(decoder, num_classes, scales))
    def postprocess(box_encodings, class_scores, anchor_boxes):
        # Correctly shaped dummies (scalar dummies crash LiteRT's CompiledModel). The
        # converter replaces the whole body by the op, so the values never matter.
        del box_encodings, class_scores, anchor_boxes
        boxes = tf.zeros([1, max_det, 4], tf.float32, name="boxes")
        classes = tf.zeros([1, max_det], tf.float32, name="classes")
        det_scores = tf.zeros([1, max_det], tf.float32, name="scores")
        num = tf.zeros([1], tf.float32, name="num_detections")
        return boxes, classes, det_scores, num

    return postprocess(encodings, scores, anchors)


def _per_class_postprocess(encodings, scores, anchors, decoder, num_classes: int, scales):
    """Per-class NMS by one ``TFLite_Detection_PostProcess`` op per pair of classes, merged: the same result at
    any thread count (LiteRT's kernel always processes an op's first two classes; docs/tflite-threads.md).

    Arguments as :func:`_detection_postprocess`'s; ``decoder.score_threshold`` must be > 0 so that padding rows
    (score 0) rank after every detection. Returns the op's four outputs, bit for bit the one-op result at one
    thread: at most min(M, 100) boxes per class, the M best overall, equal scores ordered by class.

    The merge runs on int32 bit patterns: the int8 converter quantises any op that reads a float tensor (the
    boxes and scores would be rounded to 1/255 of their range) and never touches integer tensors, and a
    non-negative float32 orders like its bit pattern, so TOPK_V2 on the patterns ranks as on the scores.
    """
    import tensorflow as tf

    max_detections = decoder.max_detections
    per_class = min(max_detections, TFLITE_DETECTIONS_PER_CLASS)
    firsts = range(0, num_classes, CLASSES_PER_OP)
    sizes = [min(CLASSES_PER_OP, num_classes - first) for first in firsts]
    boxes, det_scores, det_classes, counts = [], [], [], []
    for first_class, size, group_scores in zip(firsts, sizes, tf.split(scores, sizes, axis=-1)):
        slots = min(max_detections, size * per_class)
        group = type(decoder).from_config(
            decoder.get_config() | {"max_detections": slots, "class_agnostic": False}
        )
        b, c, s, n = _detection_postprocess(encodings, group_scores, anchors, group, size, scales)
        n = tf.cast(n, tf.int32)
        # Rows past the op's count are zero, whatever the op left there.
        keep = tf.cast(tf.range(slots) < n, tf.int32)[None]  # (1, slots)
        boxes.append(tf.bitcast(b, tf.int32) * keep[:, :, None])
        det_scores.append(tf.bitcast(s, tf.int32) * keep)
        det_classes.append((tf.cast(c, tf.int32) + first_class) * keep)
        counts.append(n)
    all_boxes = tf.concat(boxes, axis=1)[0]  # (S, 4), S = total slots
    all_scores = tf.concat(det_scores, axis=1)  # (1, S)
    all_classes = tf.concat(det_classes, axis=1)[0]  # (S,)
    k = min(max_detections, int(all_scores.shape[1]))
    # Sorted descending; equal values keep the lower index first, i.e. the lower class (ops in class order).
    top_bits, index = tf.math.top_k(all_scores, k=k)
    num = tf.minimum(tf.add_n(counts), max_detections)
    valid = tf.cast(tf.range(k) < num, tf.int32)  # padding rows: class 0, as the op writes them
    # Boxes clipped to the input, [0, 1], on their bit patterns: a float >= 0 orders like its int32 pattern and
    # a negative float's pattern is negative. The int8 file's op sees unclipped boxes (no box arithmetic in
    # int8), and MediaPipe does not clip: it would slide a box that starts outside the image inside it.
    all_boxes = tf.clip_by_value(all_boxes, 0, _FLOAT_ONE_BITS)
    out_boxes = tf.expand_dims(tf.gather(all_boxes, index[0]), 0)  # (1, k, 4)
    out_classes = tf.expand_dims(tf.gather(all_classes, index[0]) * valid, 0)  # (1, k)
    if k < max_detections:  # K * 100 < M: fewer slots than output rows
        out_boxes = tf.pad(out_boxes, [[0, 0], [0, max_detections - k], [0, 0]])
        out_classes = tf.pad(out_classes, [[0, 0], [0, max_detections - k]])
        top_bits = tf.pad(top_bits, [[0, 0], [0, max_detections - k]])
    return (
        tf.bitcast(out_boxes, tf.float32),
        tf.cast(out_classes, tf.float32),
        tf.bitcast(top_bits, tf.float32),
        tf.cast(num, tf.float32),
    )


def _network_function(model: Any, image_size: tuple[int, int], box_coder: Any, raw: bool, clip_boxes: bool):
    """(frozen function, its input spec): images (1, H, W, 3) -> (box encodings (1, N, 4), scores (1, N, K)).

    Only the network is frozen: unfrozen, Keras 3 variables stay resource variables (VAR_HANDLE); freezing the
    whole function would inline the post-processing placeholder. With ``clip_boxes``, boxes are decoded, clipped
    to the input and re-encoded (unit scales; raw: the box coder's weights), so that NMS sees what the Keras
    decoder's NMS sees; without it, the deltas are returned as they are (dw/dh clamped).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    height, width = image_size
    anchors_yxhw = tflite_anchors(model, image_size)
    wx, wy, ww, wh = (float(w) for w in box_coder.weights)
    clamp = float(box_coder.clamp)
    # The raw file takes float32 pixels: a GPU delegate has no uint8 -> float CAST (MediaPipe feeds it floats).
    spec = tf.TensorSpec([1, height, width, 3], tf.float32 if raw else tf.uint8, name="images")
    # The raw file's encodings carry the box coder's weights, declared as MediaPipe's scales (y, x, h, w).
    scale_y, scale_x, scale_h, scale_w = raw_box_scales(box_coder) if raw else (1.0, 1.0, 1.0, 1.0)

    @tf.function(input_signature=[spec])
    def network(images):
        outputs = model(tf.cast(images, tf.float32), training=False)
        scores = tf.sigmoid(tf.cast(outputs["classification"], tf.float32))
        deltas = tf.cast(outputs["box_regression"], tf.float32)
        dx, dy, dw, dh = tf.split(deltas, 4, axis=-1)  # each (1, N, 1)
        anchors = tf.constant(anchors_yxhw)
        ya, xa, ha, wa = tf.split(anchors[None], 4, axis=-1)
        if not clip_boxes:
            encodings = tf.concat([dy, dx, tf.minimum(dh, clamp * wh), tf.minimum(dw, clamp * ww)], axis=-1)
            return encodings, scores
        # As BoxCoder.decode, in normalised coordinates; clipped by hand (boxes.clip_boxes would add ops).
        yc = dy / wy * ha + ya
        xc = dx / wx * wa + xa
        half_h = 0.5 * tf.exp(tf.minimum(dh / wh, clamp)) * ha
        half_w = 0.5 * tf.exp(tf.minimum(dw / ww, clamp)) * wa
        y1 = tf.clip_by_value(yc - half_h, 0.0, 1.0)
        x1 = tf.clip_by_value(xc - half_w, 0.0, 1.0)
        y2 = tf.clip_by_value(yc + half_h, 0.0, 1.0)
        x2 = tf.clip_by_value(xc + half_w, 0.0, 1.0)
        # A box clipped to nothing keeps a tiny positive size: its IoU with anything is ~0, as in the Keras
        # decoder, where its area is 0.
        box_h = tf.maximum(y2 - y1, 1e-7)
        box_w = tf.maximum(x2 - x1, 1e-7)
        encodings = tf.concat(
            [
                ((y1 + y2) * 0.5 - ya) / ha * scale_y,
                ((x1 + x2) * 0.5 - xa) / wa * scale_x,
                tf.math.log(box_h / ha) * scale_h,
                tf.math.log(box_w / wa) * scale_w,
            ],
            axis=-1,
        )
        return encodings, scores

    return convert_variables_to_constants_v2(network.get_concrete_function()), spec


def _tflite_function(
    model: Any, image_size: tuple[int, int], decoder: Any, box_coder: Any, raw: bool, clip_boxes: bool = True
):
    """tf.function: uint8 (1, H, W, 3) -> the TFLite contract's four outputs; with ``raw``: float32
    (1, H, W, 3) -> the raw contract's two. ``clip_boxes``: see ``_network_function``."""
    import tensorflow as tf

    frozen, spec = _network_function(model, image_size, box_coder, raw, clip_boxes or raw)
    if raw:
        return tf.function(lambda images: frozen(images), input_signature=[spec])
    anchors_yxhw = tflite_anchors(model, image_size)
    scales = (1.0, 1.0, 1.0, 1.0) if clip_boxes else raw_box_scales(box_coder)
    num_classes = int(model.num_classes)
    # The op's fast NMS (one pass over all classes, no threaded code), or pairs of classes (module docstring).
    postprocess = _detection_postprocess if decoder.class_agnostic else _per_class_postprocess

    @tf.function(input_signature=[spec])
    def detect(images):
        encodings, scores = frozen(images)
        return postprocess(encodings, scores, tf.constant(anchors_yxhw), decoder, num_classes, scales)

    return detect


def raw_box_scales(box_coder: Any) -> tuple[float, float, float, float]:
    """(y_scale, x_scale, h_scale, w_scale) of the raw file's box encodings: the box coder's (wy, wx, wh, ww),
    with which MediaPipe's YXHW decoding is ``BoxCoder.decode``."""
    wx, wy, ww, wh = (float(w) for w in box_coder.weights)
    return (wy, wx, wh, ww)


def _order_outputs_by_signature(data: bytes) -> bytes:
    """Reorder the main subgraph's outputs as the signature's ``output_0..3`` (the op's order): the converter
    lists a SavedModel's outputs in no fixed order, and mobile SSD code reads them by index."""
    model = read_model(data)
    if not model.signatureDefs:
        return data
    signature = model.signatureDefs[0]
    wanted = [t.tensorIndex for t in sorted(signature.outputs, key=lambda t: str(as_text(t.name)))]
    subgraph = model.subgraphs[signature.subgraphIndex]
    if list(subgraph.outputs) == wanted:
        return data
    if sorted(subgraph.outputs) != sorted(wanted):
        raise ExportError("TFLite signature outputs do not match the subgraph outputs")
    subgraph.outputs = wanted
    return pack_model(model)


def convert_tflite(
    model: Any,
    variant: str = "float32",
    image_size: Sequence[int] | None = None,
    representative_images: Callable[[], Iterable[np.ndarray]] | None = None,
    raw: bool = False,
    clip_boxes: bool | None = None,
    fold_batchnorm: bool = True,
    scratch_parent: str | os.PathLike | None = None,
) -> bytes:
    """The .tflite bytes of ``model`` (the module docstring's contracts), with its own decoder and box coder.

    Args:
        variant: "float32", "float16" (float16 weights) or "int8" (full-integer PTQ; needs
            ``representative_images``, a callable returning uint8 (H, W, 3) RGB canvases).
        image_size: fixed (H, W) input size; default the model's ``image_size``.
        raw: the raw contract (float32 and float16 only).
        clip_boxes: clip boxes to the input before NMS, as the Keras decoder does; None: for float32 and
            float16, not for int8, where the box arithmetic would itself run in int8 (docs/export.md).
        fold_batchnorm: convert the inference graph (BatchNorm folded) rather than the model's own.
        scratch_parent: folder for the converter's temporary SavedModel (default: the system's temp folder).
    Raises:
        ExportError: a variant the file cannot have, or a file with ops standard LiteRT cannot run.
    """
    import tensorflow as tf

    allowed = RAW_VARIANTS if raw else TFLITE_VARIANTS
    if variant not in allowed:
        raise ExportError(f"TFLite variant {variant!r}: choose from {', '.join(allowed)}")
    image_size = parse_image_size(image_size) if image_size is not None else model.image_size
    decoder = model.decoder
    if clip_boxes is None:
        clip_boxes = variant != "int8"
    if not raw and not decoder.class_agnostic and decoder.score_threshold <= 0:
        raise ExportError(
            "TFLite export needs a score threshold > 0 (padding rows have score 0 and must rank after every "
            f"detection); the model's decoder has {decoder.score_threshold}"
        )
    from keras_retinanet.model.inference_graph import inference_model

    # The folded graph is the one every other runtime runs; int8 calibration starts from it too.
    network = inference_model(model) if fold_batchnorm else model
    function = _tflite_function(network, image_size, decoder, model.box_coder, raw, clip_boxes)
    # The export passes its staging folder, so that what a kill leaves here goes with it.
    scratch = tempfile.mkdtemp(prefix=".tflite-scratch-", dir=scratch_parent)
    try:
        # Through a SavedModel, as tensorflow/models does: from_concrete_functions inlines the placeholder.
        holder = tf.Module()
        holder.detect = function
        tf.saved_model.save(holder, scratch, signatures={"serving_default": function.get_concrete_function()})
        kill_point("tflite:scratch-written")  # for the kill test (tests/test_export_swap.py)
        data = _convert_saved_model(scratch, variant, raw, representative_images)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    data = _order_outputs_by_signature(data)
    if variant == "int8":
        try:
            data, widened = fit_requantization_scales(data)
        except ValueError as err:
            raise ExportError(str(err)) from None
        if widened:
            logger.warning(
                "int8 TFLite: %d convolution output(s) were almost constant on the calibration images; their "
                "scale was widened so that XNNPACK accepts the file: %s",
                len(widened),
                ", ".join(widened),
            )
    _check_ops(tflite_ops(data), variant, raw)
    return data


def _check_ops(ops: list[str], variant: str, raw: bool) -> None:
    """ExportError unless the file runs on standard LiteRT: no Flex op or resource variable, and the
    post-processing op exactly where NMS is inside."""
    kind = "raw " if raw else ""
    unwanted = [op for op in ops if op in ("VAR_HANDLE", "READ_VARIABLE")] + flex_ops(ops)
    if raw and DETECTION_POSTPROCESS_OP in ops:
        unwanted.append(DETECTION_POSTPROCESS_OP)
    if unwanted:
        raise ExportError(
            f"TFLite {kind}{variant} export contains {unwanted}, which standard LiteRT cannot run or this file "
            f"must not have; ops: {ops}. This is a bug in the export graph."
        )
    if not raw and DETECTION_POSTPROCESS_OP not in ops:
        raise ExportError(f"TFLite {variant} export lacks {DETECTION_POSTPROCESS_OP}; ops: {ops}")


def _convert_saved_model(
    saved_model_dir: str,
    variant: str,
    raw: bool,
    representative_images: Callable[[], Iterable[np.ndarray]] | None,
) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative_images is None:
            raise ExportError("int8 TFLite export needs calibration images (--calibration-data SPEC)")

        def representative_dataset():
            for canvas in representative_images():
                yield [np.asarray(canvas, dtype=np.uint8)[None]]

        converter.representative_dataset = representative_dataset
        # Int8 kernels for everything quantisable; the post-processing op (custom, float only) and any op
        # without an int8 kernel stay float, with Dequantize in front of them.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    converter.allow_custom_ops = not raw
    try:
        return converter.convert()
    except Exception as err:  # noqa: BLE001 - the converter raises many types; say which variant failed
        raise ExportError(f"TFLite conversion ({variant}{', raw' if raw else ''}) failed: {err}") from err


def write_tflite(job: ExportJob, raw: bool = False) -> dict[str, dict[str, Any]]:
    """The ``tflite`` / ``tflite_raw`` formats' writer: ``model_<variant>[_raw].tflite`` for each of
    ``job.options["variants"]``; returns their report entries."""
    files = {}
    for variant in job.options["variants"]:
        name = f"model_{variant}_raw.tflite" if raw else f"model_{variant}.tflite"
        logger.info("converting %s", name)
        data = convert_tflite(
            job.model,
            variant,
            job.image_size,
            representative_images=job.calibration if variant == "int8" else None,
            raw=raw,
            scratch_parent=job.folder,
        )
        if job.options["metadata"]:
            data = _with_metadata(data, job, variant, raw)
        (job.folder / name).write_bytes(data)
        ops = tflite_ops(data)
        files[name] = {
            "size_bytes": len(data),
            "ops": ops,
            "flex_ops": flex_ops(ops),
            "runtime": "LiteRT builtin ops",
        }
    if raw:
        job.report["raw_outputs"] = {
            "outputs": ["box encodings [1, N, 4] (ty, tx, th, tw)", "sigmoid scores [1, N, K]"],
            "box_scales_yxhw": list(raw_box_scales(job.model.box_coder)),
            "mediapipe_nms": "MediaPipe decodes raw files with one class per anchor and class-agnostic NMS at "
            "IoU 0.3 (its defaults); TFLiteDetector with this model's decoder settings (postprocess)",
        }
    return files


def _with_metadata(data: bytes, job: ExportJob, variant: str, raw: bool) -> bytes:
    """The .tflite with the TFLite Model Metadata MediaPipe Tasks' ObjectDetector requires."""
    from keras_retinanet import __version__
    from keras_retinanet.export import metadata

    model, (height, width) = job.model, job.image_size
    names = list(model.class_names)
    about = {
        "labels": names,
        "name": f"RetinaNet {model.backbone_name or 'custom backbone'} ({variant}{', raw outputs' if raw else ''})",
        "description": f"RetinaNet object detector{' without NMS' if raw else ''}, {len(names)} classes, "
        f"{height}x{width} {'float32 RGB input (pixels 0..255)' if raw else 'uint8 RGB input'}; exported by "
        f"keras_retinanet {__version__}.",
        "version": __version__,
        "license": "Apache-2.0",
    }
    try:
        if raw:
            anchors, scales = tflite_anchors(model, job.image_size), raw_box_scales(model.box_coder)
            return metadata.add_raw_detection_metadata(
                data, anchors=anchors, scales=scales, decoder=model.decoder.get_config(), **about
            )
        thresholds = job.options["class_thresholds"]
        if thresholds is not None:
            from keras_retinanet.detectors.class_thresholds import class_threshold_array

            thresholds = class_threshold_array(thresholds, names)
        return metadata.add_detection_metadata(
            data, image_size=job.image_size, input_dtype="uint8", class_thresholds=thresholds, **about
        )
    except ImportError as err:
        raise ExportError(
            f"{err}; or export without metadata (--no-metadata; MediaPipe then refuses the file)"
        ) from None
