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
      export_report.json      sizes, op lists, settings and parity figures

It is built in a temporary sibling directory and moved into place at the very end, so a failed export never
leaves a directory that looks complete.

Output contract: SavedModel (stable; ``keras_retinanet.inference`` relies on it)
--------------------------------------------------------------------------------
Signatures (``tf.saved_model.load(path).signatures[NAME]``; all take keyword arguments):

- ``serving_default(images)``: ``images`` tf.string ``[B]``, encoded JPEG / PNG / BMP / GIF (first frame), any
  and different sizes in one batch.
- ``detect_float32(images)``: ``images`` float32 ``[B, H, W, 3]`` RGB in [0, 255].
- ``detect_uint8(images)``: ``images`` uint8 ``[B, H, W, 3]`` RGB.

Every image is resized keeping its aspect ratio to fit ``image_size`` (bilinear), padded with zeros at the
bottom and right (letterbox, see :func:`letterbox_params`), run through the network, decoded, and filtered by
per-class (or class-agnostic, as the model's decoder is configured) non-max suppression.
All signatures return::

    boxes           float32 [B, M, 4]  x1, y1, x2, y2 in each image's ORIGINAL pixels, clipped to the image
    scores          float32 [B, M]     sigmoid probability, sorted descending; 0 for padding
    classes         int32   [B, M]     class id 0..K-1 (line of labels.txt); -1 for padding
    num_detections  int32   [B]        number of valid rows

with ``M = max_detections``. The loaded object also has ``class_names`` (a tf.string variable, [K]),
``image_size`` (int32 [2], H, W) and ``labels_file`` (the asset).

Output contract: TFLite (stable; the layout of mobile SSD models)
------------------------------------------------------------------
One input: ``images`` uint8 ``[1, H, W, 3]`` RGB, ``H, W = image_size`` (default 512 x 512). The caller
letterboxes the image exactly as above (:func:`letterbox_image` does it with OpenCV); normalisation is inside.
Four float32 outputs, in this order (the outputs of the ``TFLite_Detection_PostProcess`` op):

    0  boxes           [1, M, 4]  ymin, xmin, ymax, xmax, NORMALISED to the H x W input (not clipped)
    1  classes         [1, M]     class id as float (0..K-1, no background offset)
    2  scores          [1, M]     sigmoid probability, sorted descending; 0 for padding
    3  num_detections  [1]        number of valid rows, as float

To get original pixels: ``x = xmin * W / sx`` with ``sx`` the letterbox scale of that axis, then clip.
:class:`keras_retinanet.inference.TFLiteDetector` does all of that (and :class:`TFLiteRunner`, the minimal
runner the export uses for its parity and latency figures). The op performs per-class NMS
(``use_regular_nms=True``) over all anchors with score >= the decoder's score threshold, at most 100 boxes per
class (a fixed limit of the op), then keeps the ``max_detections`` best. Unlike the Keras decoder it has no
per-level top-k; detections above a reasonable threshold (0.3) are the same (checked by the parity tests).

Box coding: the model's deltas are (dx, dy, dw, dh) multiplied by weights (wx, wy, ww, wh) (torchvision's
``BoxCoder``); the op computes ``yc = ty / y_scale * ha + ya`` and ``h = exp(th / h_scale) * ha`` with the
anchors as normalised (yc, xc, h, w). The float files decode the boxes, clip them to the input (as the Keras
decoder does before NMS) and re-encode them with unit scales. The int8 file feeds the raw encodings
(dy, dx, min(dh, clamp * wh), min(dw, clamp * ww)) with y/x/h/w_scale = wy/wx/wh/ww, so that no box arithmetic
runs in int8 (see ``convert_tflite``'s ``clip_boxes``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_retinanet.tflite_requantization import fit_requantization_scales

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 512
TFLITE_VARIANTS = ("float32", "float16", "int8")
TFLITE_NMS_CHOICES = ("builtin", "combined")
DETECTION_POSTPROCESS_OP = "TFLite_Detection_PostProcess"
# The op keeps at most this many boxes per class; the converter has no attribute for it (nms_utils.cc).
TFLITE_DETECTIONS_PER_CLASS = 100
SAVED_MODEL_DIR = "saved_model"
LABELS_FILE = "labels.txt"
REPORT_FILE = "export_report.json"


class ExportError(RuntimeError):
    """A user-facing export failure with a message that says what to fix."""


# ----------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PostProcessConfig:
    """Post-processing settings shared by the SavedModel and the TFLite files (taken from ``model.decoder``).

    Attributes:
        score_threshold: detections need score >= this (TFLite) / > this (Keras decoder).
        nms_iou_threshold: a box is suppressed when its IoU with a better box of its class is > this.
        max_detections: M, rows per image in the outputs.
        class_agnostic: NMS across classes (TFLite: the op's fast NMS, ``use_regular_nms=False``).
        box_weights: (wx, wy, ww, wh) of the box coder.
        box_clamp: dw / wh and dh / wh are clamped to this before exp().
    """

    score_threshold: float
    nms_iou_threshold: float
    max_detections: int
    class_agnostic: bool
    box_weights: tuple[float, float, float, float]
    box_clamp: float

    @classmethod
    def from_model(cls, model: Any) -> PostProcessConfig:
        decoder = model.decoder
        coder = model.box_coder
        return cls(
            score_threshold=float(decoder.score_threshold),
            nms_iou_threshold=float(decoder.nms_iou_threshold),
            max_detections=int(decoder.max_detections),
            class_agnostic=bool(getattr(decoder, "class_agnostic", False)),
            box_weights=tuple(float(w) for w in coder.weights),  # type: ignore[arg-type]
            box_clamp=float(coder.clamp),
        )


def parse_image_size(value: int | str | Sequence[int]) -> tuple[int, int]:
    """``512``, ``"512"``, ``"384x640"`` (H x W) or ``(384, 640)`` -> (H, W)."""
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            sizes = [int(p) for p in parts if p.strip()]
        except ValueError as err:
            raise ExportError(f"image size must be N or HxW, got {value!r}") from err
    elif isinstance(value, int):
        sizes = [value]
    else:
        sizes = [int(v) for v in value]
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 32:
        raise ExportError(f"image size must be N or HxW with sides >= 32, got {value!r}")
    return sizes[0], sizes[1]


# ----------------------------------------------------------------------------------------------------
# Letterbox (shared definition for the SavedModel graph and the Python TFLite helper)
# ----------------------------------------------------------------------------------------------------


def letterbox_params(height: int, width: int, target: Sequence[int]) -> tuple[int, int, float, float]:
    """Resize that fits (height, width) into target (H, W) keeping the aspect ratio.

    Returns (new_height, new_width, scale_y, scale_x) with ``new = round(side * min(H / height, W / width))``,
    clamped to [1, target], and ``scale_y = new_height / height`` (original pixel -> network pixel, per axis).
    The resized image sits at the top-left of the H x W canvas; the rest is zero.
    """
    scale = min(target[0] / height, target[1] / width)
    new_h = int(min(max(round(height * scale), 1), target[0]))
    new_w = int(min(max(round(width * scale), 1), target[1]))
    return new_h, new_w, new_h / height, new_w / width


def letterbox_image(image: np.ndarray, target: Sequence[int]) -> tuple[np.ndarray, tuple[float, float]]:
    """Letterbox one RGB image (h, w, 3) into a uint8 (H, W, 3) canvas with OpenCV bilinear resizing.

    Returns (canvas, (scale_y, scale_x)); divide network-pixel coordinates by the scales for original pixels.
    """
    import cv2

    height, width = image.shape[:2]
    new_h, new_w, scale_y, scale_x = letterbox_params(height, width, target)
    resized = image
    if (new_h, new_w) != (height, width):
        resized = cv2.resize(
            np.asarray(image, dtype=np.float32), (new_w, new_h), interpolation=cv2.INTER_LINEAR
        )
    canvas = np.zeros((int(target[0]), int(target[1]), 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    return canvas, (scale_y, scale_x)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (h, w, 3); raises ExportError when it cannot be read."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ExportError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def load_retinanet(model_path: str | os.PathLike) -> Any:
    """Load a ``.keras`` RetinaNet; raises ExportError with a clear message for anything else."""
    import keras

    from keras_retinanet.model import RetinaNet

    path = Path(model_path)
    if not path.is_file():
        raise ExportError(f"model file not found: {path}")
    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as err:  # noqa: BLE001 - any load failure means "not a model we can export"
        raise ExportError(f"cannot load {path} as a Keras model ({type(err).__name__}: {err})") from err
    if not isinstance(model, RetinaNet):
        raise ExportError(
            f"{path} is a {type(model).__name__}, not a keras_retinanet RetinaNet; export needs a model "
            "saved by `retinanet train` or RetinaNet.save()"
        )
    return model


def _class_names(model: Any) -> list[str]:
    names = list(getattr(model, "class_names", None) or [])
    if len(names) != int(model.num_classes):
        names = [f"class_{i}" for i in range(int(model.num_classes))]
    return [str(n) for n in names]


# ----------------------------------------------------------------------------------------------------
# SavedModel
# ----------------------------------------------------------------------------------------------------


def _build_serving_module(model: Any, image_size: tuple[int, int], labels_path: Path):
    """tf.Module whose signatures follow the SavedModel contract in the module docstring."""
    import tensorflow as tf

    target_h, target_w = image_size

    def letterbox(image):
        """(h, w, 3) float32 -> ((H, W, 3) canvas, (2,) float32 scale_yx)."""
        shape = tf.shape(image)
        height = tf.cast(shape[0], tf.float32)
        width = tf.cast(shape[1], tf.float32)
        scale = tf.minimum(target_h / height, target_w / width)
        new_h = tf.clip_by_value(tf.round(height * scale), 1.0, float(target_h))
        new_w = tf.clip_by_value(tf.round(width * scale), 1.0, float(target_w))
        size = tf.cast(tf.stack([new_h, new_w]), tf.int32)
        resized = tf.cond(
            tf.reduce_all(tf.equal(size, shape[:2])),
            lambda: image,
            lambda: tf.image.resize(image, size, method="bilinear"),
        )
        canvas = tf.image.pad_to_bounding_box(resized, 0, 0, target_h, target_w)
        canvas = tf.ensure_shape(canvas, (target_h, target_w, 3))
        return canvas, tf.stack([new_h / height, new_w / width])

    class RetinaNetServing(tf.Module):
        def __init__(self):
            super().__init__(name="retinanet_serving")
            self.model = model
            self.labels_file = tf.saved_model.Asset(str(labels_path))
            self.class_names = tf.Variable(_class_names(model), trainable=False, dtype=tf.string)
            self.image_size = tf.Variable([target_h, target_w], trainable=False, dtype=tf.int32)

        def _detect_batch(self, images):
            """images: float32 (B, h, w, 3), all the same size."""
            sizes = tf.cast(tf.shape(images)[1:3], tf.float32)
            canvases, scales = tf.map_fn(
                letterbox,
                images,
                fn_output_signature=(
                    tf.TensorSpec((target_h, target_w, 3), tf.float32),
                    tf.TensorSpec((2,), tf.float32),
                ),
            )
            batch = tf.shape(images)[0]
            return self._detect_canvases(canvases, scales, tf.tile(sizes[None], [batch, 1]))

        def _detect_canvases(self, canvases, scales, original_sizes):
            detections = model.detect(canvases)
            boxes = tf.cast(detections["boxes"], tf.float32)
            scores = tf.cast(detections["scores"], tf.float32)
            classes = tf.cast(detections["classes"], tf.int32)
            num = tf.cast(detections["num_detections"], tf.int32)
            scale_xyxy = tf.tile(tf.reverse(scales, axis=[1]), [1, 2])[:, None, :]  # (B, 1, 4) sx, sy, sx, sy
            limit = tf.tile(tf.reverse(original_sizes, axis=[1]), [1, 2])[:, None, :]
            boxes = tf.clip_by_value(boxes / scale_xyxy, 0.0, limit)
            valid = tf.sequence_mask(num, tf.shape(scores)[1])
            return {
                "boxes": tf.where(valid[..., None], boxes, 0.0),
                "scores": tf.where(valid, scores, 0.0),
                "classes": tf.where(valid, classes, -1),
                "num_detections": num,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def serve_encoded(self, images):
            def decode(data):
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
                image = tf.cast(image, tf.float32)
                image.set_shape([None, None, 3])
                canvas, scale = letterbox(image)
                return canvas, scale, tf.cast(tf.shape(image)[:2], tf.float32)

            canvases, scales, sizes = tf.map_fn(
                decode,
                images,
                fn_output_signature=(
                    tf.TensorSpec((target_h, target_w, 3), tf.float32),
                    tf.TensorSpec((2,), tf.float32),
                    tf.TensorSpec((2,), tf.float32),
                ),
            )
            return self._detect_canvases(canvases, scales, sizes)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        def detect_float32(self, images):
            return self._detect_batch(images)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def detect_uint8(self, images):
            return self._detect_batch(tf.cast(images, tf.float32))

    return RetinaNetServing()


def build_saved_model(model: Any, path: str | os.PathLike, image_size: Sequence[int] = (512, 512)) -> dict:
    """Write a SavedModel with the signatures of the module docstring to ``path`` (a new directory).

    Returns {"signatures": [...], "size_bytes": int}.
    """
    import tensorflow as tf

    path = Path(path)
    image_size = parse_image_size(image_size)
    with tempfile.TemporaryDirectory() as scratch:
        labels_path = Path(scratch) / LABELS_FILE
        labels_path.write_text("\n".join(_class_names(model)) + "\n")
        module = _build_serving_module(model, image_size, labels_path)
        signatures = {
            "serving_default": module.serve_encoded.get_concrete_function(),
            "detect_float32": module.detect_float32.get_concrete_function(),
            "detect_uint8": module.detect_uint8.get_concrete_function(),
        }
        tf.saved_model.save(module, str(path), signatures=signatures)
    return {"signatures": sorted(signatures), "size_bytes": _dir_size(path)}


# ----------------------------------------------------------------------------------------------------
# TFLite
# ----------------------------------------------------------------------------------------------------


def tflite_anchors(model: Any, image_size: Sequence[int]) -> np.ndarray:
    """(N, 4) float32 anchors as (yc, xc, h, w) normalised by the input (H, W), in the model's anchor order.

    The model pads its input to a multiple of 32, so the anchors are those of the padded size (as in
    ``RetinaNet.decode``), normalised by the unpadded input size like the op's output boxes.
    """
    height, width = image_size
    padded = model.padded_shape((height, width)) if hasattr(model, "padded_shape") else (height, width)
    anchors = np.asarray(model.anchor_generator(image_shape=padded), dtype=np.float64)
    x1, y1, x2, y2 = anchors.T
    out = np.stack([(y1 + y2) / 2 / height, (x1 + x2) / 2 / width, (y2 - y1) / height, (x2 - x1) / width], 1)
    return out.astype(np.float32)


def _implements_signature(config: PostProcessConfig, num_classes: int, scales: Sequence[float]) -> str:
    """The ``experimental_implements`` text the converter turns into the op's custom options.

    ``scales`` are (y_scale, x_scale, h_scale, w_scale): the op decodes ``yc = ty / y_scale * ha + ya``,
    ``h = exp(th / h_scale) * ha`` (tensorflow/lite/kernels/detection_postprocess.cc).
    """
    y_scale, x_scale, h_scale, w_scale = scales
    attrs = [
        ("max_detections", "i", config.max_detections),
        ("max_classes_per_detection", "i", 1),
        ("num_classes", "i", num_classes),
        ("nms_score_threshold", "f", config.score_threshold),
        ("nms_iou_threshold", "f", config.nms_iou_threshold),
        ("y_scale", "f", y_scale),
        ("x_scale", "f", x_scale),
        ("h_scale", "f", h_scale),
        ("w_scale", "f", w_scale),
        ("use_regular_nms", "b", not config.class_agnostic),
    ]
    parts = [f'name: "{DETECTION_POSTPROCESS_OP}"']
    for key, kind, value in attrs:
        if kind == "f":
            text = repr(float(value))
        elif kind == "b":
            text = "true" if value else "false"
        else:
            text = str(int(value))
        parts.append(f'attr {{ key: "{key}" value {{ {kind}: {text} }} }}')
    return " ".join(parts)


def _detection_postprocess(encodings, scores, anchors, config: PostProcessConfig, num_classes: int, scales):
    """Placeholder that the TFLite converter replaces by the builtin ``TFLite_Detection_PostProcess`` op.

    Args:
        encodings: float32 (1, N, 4) (ty, tx, th, tw).
        scores: float32 (1, N, K) sigmoid scores.
        anchors: float32 (N, 4) (yc, xc, h, w) normalised.
        scales: (y_scale, x_scale, h_scale, w_scale) of the encodings.
    Returns:
        In TensorFlow, zeros of the op's output shapes: boxes (1, M, 4), classes, scores (1, M), num (1,).
        In TFLite, the op's real outputs.
    """
    import tensorflow as tf

    max_det = config.max_detections

    @tf.function(experimental_implements=_implements_signature(config, num_classes, scales))
    def postprocess(box_encodings, class_scores, anchor_boxes):
        # Correctly shaped dummies (scalar dummies crash LiteRT's CompiledModel, DESIGN section 4). The
        # converter replaces the whole body by the op, so the values never matter.
        del box_encodings, class_scores, anchor_boxes
        boxes = tf.zeros([1, max_det, 4], tf.float32, name="boxes")
        classes = tf.zeros([1, max_det], tf.float32, name="classes")
        det_scores = tf.zeros([1, max_det], tf.float32, name="scores")
        num = tf.zeros([1], tf.float32, name="num_detections")
        return boxes, classes, det_scores, num

    return postprocess(encodings, scores, anchors)


def _tflite_function(
    model: Any, image_size: tuple[int, int], config: PostProcessConfig, nms: str, clip_boxes: bool = True
):
    """tf.function: uint8 (1, H, W, 3) -> (boxes, classes, scores, num_detections), TFLite output contract.

    The network part (images -> box encodings and sigmoid scores) is frozen to constants first: the converter
    keeps Keras 3 variables as resource variables (VAR_HANDLE / READ_VARIABLE) otherwise, while freezing the
    whole function would inline the post-processing placeholder and lose the op.

    With ``clip_boxes`` (the default), boxes are decoded, clipped to the input and re-encoded relative to the
    anchors with unit scales before the op, so that NMS sees clipped boxes exactly as the Keras decoder's NMS
    does. Without it, the model's deltas go to the op unchanged (scales = box-coder weights (wy, wx, wh, ww),
    dw/dh clamped) and the op's NMS sees unclipped boxes (differences only for boxes crossing the border).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    height, width = image_size
    num_classes = int(model.num_classes)
    anchors_yxhw = tflite_anchors(model, image_size)
    wx, wy, ww, wh = config.box_weights
    clamp = config.box_clamp
    spec = tf.TensorSpec([1, height, width, 3], tf.uint8, name="images")
    unit_scales = (1.0, 1.0, 1.0, 1.0)

    @tf.function(input_signature=[spec])
    def network(images):
        outputs = model(tf.cast(images, tf.float32), training=False)
        scores = tf.sigmoid(tf.cast(outputs["classification"], tf.float32))
        deltas = tf.cast(outputs["box_regression"], tf.float32)
        dx, dy, dw, dh = tf.split(deltas, 4, axis=-1)  # each (1, N, 1)
        anchors = tf.constant(anchors_yxhw)
        ya, xa, ha, wa = tf.split(anchors[None], 4, axis=-1)
        if nms == "builtin" and not clip_boxes:
            encodings = tf.concat([dy, dx, tf.minimum(dh, clamp * wh), tf.minimum(dw, clamp * ww)], axis=-1)
            return encodings, scores
        # Decode exactly as BoxCoder.decode, in normalised coordinates, and clip to the input.
        yc = dy / wy * ha + ya
        xc = dx / wx * wa + xa
        half_h = 0.5 * tf.exp(tf.minimum(dh / wh, clamp)) * ha
        half_w = 0.5 * tf.exp(tf.minimum(dw / ww, clamp)) * wa
        y1 = tf.clip_by_value(yc - half_h, 0.0, 1.0)
        x1 = tf.clip_by_value(xc - half_w, 0.0, 1.0)
        y2 = tf.clip_by_value(yc + half_h, 0.0, 1.0)
        x2 = tf.clip_by_value(xc + half_w, 0.0, 1.0)
        if nms == "combined":
            return tf.concat([y1, x1, y2, x2], axis=-1), scores
        # Re-encode the clipped boxes with unit scales. A box clipped to nothing keeps a tiny positive size:
        # its IoU with anything is ~0, as in the Keras decoder, where its area is 0.
        box_h = tf.maximum(y2 - y1, 1e-7)
        box_w = tf.maximum(x2 - x1, 1e-7)
        encodings = tf.concat(
            [
                ((y1 + y2) * 0.5 - ya) / ha,
                ((x1 + x2) * 0.5 - xa) / wa,
                tf.math.log(box_h / ha),
                tf.math.log(box_w / wa),
            ],
            axis=-1,
        )
        return encodings, scores

    frozen = convert_variables_to_constants_v2(network.get_concrete_function())
    scales = (wy, wx, wh, ww) if nms == "builtin" and not clip_boxes else unit_scales

    @tf.function(input_signature=[spec])
    def detect(images):
        encodings_or_boxes, scores = frozen(images)
        if nms == "builtin":
            anchors = tf.constant(anchors_yxhw)
            return _detection_postprocess(encodings_or_boxes, scores, anchors, config, num_classes, scales)
        # "combined": tf.image.combined_non_max_suppression (a Flex op in TFLite).
        if config.class_agnostic:
            scores = tf.reduce_max(scores, axis=-1, keepdims=True)
        nmsed = tf.image.combined_non_max_suppression(
            encodings_or_boxes[:, :, None, :],
            scores,
            max_output_size_per_class=min(config.max_detections, TFLITE_DETECTIONS_PER_CLASS),
            max_total_size=config.max_detections,
            iou_threshold=config.nms_iou_threshold,
            score_threshold=config.score_threshold,
            clip_boxes=False,
        )
        return (
            nmsed.nmsed_boxes,
            tf.cast(nmsed.nmsed_classes, tf.float32),
            nmsed.nmsed_scores,
            tf.cast(nmsed.valid_detections, tf.float32),
        )

    return detect


def _order_outputs_by_signature(data: bytes) -> bytes:
    """Reorder the main subgraph's outputs as the signature's ``output_0..3`` (the op's order).

    The converter lists a SavedModel's outputs in no fixed order; mobile SSD code reads them by index.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    if not model.signatureDefs:
        return data
    signature = model.signatureDefs[0]

    def key(name):
        return name.decode() if isinstance(name, bytes) else str(name)

    wanted = [t.tensorIndex for t in sorted(signature.outputs, key=lambda t: key(t.name))]
    subgraph = model.subgraphs[signature.subgraphIndex]
    if list(subgraph.outputs) == wanted:
        return data
    if sorted(subgraph.outputs) != sorted(wanted):
        raise ExportError("TFLite signature outputs do not match the subgraph outputs")
    subgraph.outputs = wanted
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_ops(path_or_bytes: str | os.PathLike | bytes) -> list[str]:
    """Sorted distinct operator names in a .tflite file (builtins by name, custom ops by custom code)."""
    from ai_edge_litert import schema_py_generated as schema

    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    used: set[int] = set()
    for subgraph in model.subgraphs or []:
        for op in subgraph.operators or []:
            used.add(op.opcodeIndex)
    result = set()
    for index in used:
        code = model.operatorCodes[index]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode
            result.add(custom.decode() if isinstance(custom, bytes) else str(custom))
        else:
            result.add(names.get(builtin, f"BUILTIN_{builtin}"))
    return sorted(result)


def flex_ops(ops: Iterable[str]) -> list[str]:
    """The Flex (SELECT_TF_OPS) operators among ``ops``."""
    return [op for op in ops if op.startswith("Flex")]


def convert_tflite(
    model: Any,
    variant: str = "float32",
    image_size: Sequence[int] = (512, 512),
    config: PostProcessConfig | None = None,
    representative_images: Callable[[], Iterable[np.ndarray]] | None = None,
    nms: str = "builtin",
    clip_boxes: bool | None = None,
) -> bytes:
    """Convert ``model`` to a .tflite flatbuffer (see the TFLite contract in the module docstring).

    Args:
        model: a RetinaNet.
        variant: "float32", "float16" (float16 weights) or "int8" (full-integer PTQ; needs
            ``representative_images``; the post-processing op and the outputs stay float).
        image_size: fixed (H, W) input size.
        config: post-processing settings; default from ``model.decoder`` and ``model.box_coder``.
        representative_images: callable returning an iterable of uint8 (H, W, 3) letterboxed RGB canvases.
        nms: "builtin" (TFLite_Detection_PostProcess, builtin ops only; raises ExportError if a Flex op
            appears) or "combined" (tf.image.combined_non_max_suppression as a Flex op; Flex runtime).
        clip_boxes: clip boxes to the input before NMS, as the Keras decoder does (see ``_tflite_function``).
            ``None`` (default): clip for float32 / float16, not for int8. In an int8 file the decode, clip and
            re-encode arithmetic would itself run in int8 and blur every box (the main job's model lost 8 AP
            points that way: 0.657 instead of 0.738); unclipped, the op decodes the raw deltas in float.
    Returns:
        The .tflite file contents.
    """
    import tensorflow as tf

    if variant not in TFLITE_VARIANTS:
        raise ExportError(f"unknown TFLite variant {variant!r}; choose from {', '.join(TFLITE_VARIANTS)}")
    if nms not in TFLITE_NMS_CHOICES:
        raise ExportError(f"unknown TFLite NMS {nms!r}; choose from {', '.join(TFLITE_NMS_CHOICES)}")
    image_size = parse_image_size(image_size)
    config = config or PostProcessConfig.from_model(model)
    if clip_boxes is None:
        clip_boxes = variant != "int8"
    function = _tflite_function(model, image_size, config, nms, clip_boxes)
    scratch = tempfile.mkdtemp(prefix="retinanet-tflite-")
    try:
        # Through a SavedModel, as tensorflow/models does: from_concrete_functions inlines the placeholder.
        holder = tf.Module()
        holder.detect = function
        tf.saved_model.save(holder, scratch, signatures={"serving_default": function.get_concrete_function()})
        data = _convert_saved_model(scratch, variant, nms, representative_images)
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
    ops = tflite_ops(data)
    if nms == "builtin":
        if flex_ops(ops):
            raise ExportError(
                f"TFLite {variant} export contains Flex ops {flex_ops(ops)}; standard LiteRT cannot "
                "run them. This is a bug in the export graph."
            )
        if DETECTION_POSTPROCESS_OP not in ops:
            raise ExportError(f"TFLite {variant} export lacks {DETECTION_POSTPROCESS_OP}; ops: {ops}")
        if "VAR_HANDLE" in ops or "READ_VARIABLE" in ops:
            raise ExportError(f"TFLite {variant} export kept resource variables; ops: {ops}")
    return data


def _convert_saved_model(
    saved_model_dir: str,
    variant: str,
    nms: str,
    representative_images: Callable[[], Iterable[np.ndarray]] | None,
) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if nms == "builtin":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative_images is None:
            raise ExportError("int8 TFLite export needs calibration images (--calibration-data SPEC)")

        def representative_dataset():
            for canvas in representative_images():
                yield [np.asarray(canvas, dtype=np.uint8)[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        # Int8 kernels for everything quantisable; the post-processing op (custom, float only) and any op
        # without an int8 kernel stay float, with Dequantize in front of them.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        if nms == "combined":
            converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    converter.allow_custom_ops = nms == "builtin"
    try:
        return converter.convert()
    except Exception as err:  # noqa: BLE001 - the converter raises many types; say which variant failed
        raise ExportError(f"TFLite conversion ({variant}, nms={nms}) failed: {err}") from err


class TFLiteRunner:
    """Runs an exported .tflite detector with ``ai_edge_litert`` (XNNPACK by default, no Flex delegate).

    The export's own minimal runner, for its parity and latency figures and as an independent reference in
    the tests. Applications use :class:`keras_retinanet.inference.TFLiteDetector` (class names, the common
    ``Detector`` interface, output lookup by name).

    Args:
        path: a .tflite file from this module (builtin or combined NMS).
        num_threads: interpreter threads; default 1. With ai-edge-litert 2.x and ``num_threads > 1``, the
            ``TFLite_Detection_PostProcess`` op with ``use_regular_nms=True`` drops whole classes from its
            output (measured: 3 classes, 2 threads -> class 2 never returned; see docs/export.md). Use more
            threads only for timing, or with class-agnostic NMS.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads or os.cpu_count() or 1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        shapes = [tuple(o["shape"]) for o in self.outputs]
        if len(shapes) != 4 or len(shapes[0]) != 3 or shapes[0][-1] != 4 or len(shapes[3]) != 1:
            raise ExportError(
                f"{path}: expected outputs boxes [1,M,4], classes, scores [1,M], num [1]; got {shapes}"
            )
        self.image_size: tuple[int, int] = (int(self.input["shape"][1]), int(self.input["shape"][2]))

    def run_canvas(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for one uint8 (H, W, 3) letterboxed canvas.

        Returns {"boxes": (M, 4) normalised ymin, xmin, ymax, xmax, "classes": (M,), "scores": (M,),
        "num_detections": int}.
        """
        self.interpreter.set_tensor(self.input["index"], np.asarray(canvas, dtype=np.uint8)[None])
        self.interpreter.invoke()
        boxes, classes, scores, num = (self.interpreter.get_tensor(o["index"]) for o in self.outputs)
        return {
            "boxes": boxes[0],
            "classes": classes[0],
            "scores": scores[0],
            "num_detections": int(num.ravel()[0]),
        }

    def detect_canvas(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        """Detections on one canvas: boxes (n, 4) xyxy in canvas pixels, scores (n,), classes (n,) int32."""
        raw = self.run_canvas(canvas)
        n = raw["num_detections"]
        height, width = self.image_size
        ymin, xmin, ymax, xmax = raw["boxes"][:n].T
        boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=1).astype(
            np.float32
        )
        return {
            "boxes": boxes,
            "scores": raw["scores"][:n].astype(np.float32),
            "classes": np.round(raw["classes"][:n]).astype(np.int32),
        }

    def detect(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Detections on one uint8 RGB (h, w, 3) image: boxes (n, 4) xyxy in its original pixels, clipped."""
        canvas, (scale_y, scale_x) = letterbox_image(image, self.image_size)
        result = self.detect_canvas(canvas)
        boxes = result["boxes"] / np.array([scale_x, scale_y, scale_x, scale_y], dtype=np.float32)
        height, width = image.shape[:2]
        result["boxes"] = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        return result


def benchmark_tflite(
    path: str | os.PathLike, num_threads: int | None = None, runs: int = 10, warmup: int = 2
) -> dict[str, Any]:
    """Latency of one .tflite file on this machine (LiteRT default CPU path: XNNPACK for float and int8).

    Returns {"file", "size_bytes", "num_threads", "median_ms", "min_ms", "runs"}; medians over ``runs``
    invokes after ``warmup`` invokes on a random uint8 canvas.
    """
    detector = TFLiteRunner(path, num_threads=num_threads or os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, size=(*detector.image_size, 3), dtype=np.uint8)
    for _ in range(warmup):
        detector.run_canvas(canvas)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        detector.run_canvas(canvas)
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "file": Path(path).name,
        "size_bytes": Path(path).stat().st_size,
        "num_threads": num_threads or os.cpu_count() or 1,
        "median_ms": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "runs": runs,
    }


# ----------------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------------


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) x (m, 4) xyxy -> (n, m) IoU."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    a = a.astype(np.float64)[:, None]
    b = b.astype(np.float64)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def match_detections(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    min_score: float = 0.0,
    iou_threshold: float = 0.99,
    score_tolerance: float = 1e-3,
) -> dict[str, Any]:
    """Find every reference detection with score > ``min_score`` among the candidate's detections.

    Both dicts hold one image's valid detections: "boxes" (n, 4) xyxy, "scores" (n,), "classes" (n,).
    A reference detection is found when a candidate detection of the same class has IoU >= ``iou_threshold``
    and |score difference| <= ``score_tolerance``. Returns {"checked", "found", "missing", "min_iou",
    "max_score_diff"} with min_iou / max_score_diff over the best same-class candidate of each checked one.
    """
    keep = reference["scores"] > min_score
    ref_boxes, ref_scores, ref_classes = (reference[k][keep] for k in ("boxes", "scores", "classes"))
    iou = _iou_matrix(ref_boxes, candidate["boxes"])
    found, min_iou, max_diff = 0, 1.0, 0.0
    for i in range(len(ref_boxes)):
        same = candidate["classes"] == ref_classes[i]
        if not same.any():
            min_iou, max_diff = 0.0, max(max_diff, float(ref_scores[i]))
            continue
        ious = np.where(same, iou[i], -1.0)
        j = int(np.argmax(ious))
        diff = abs(float(candidate["scores"][j]) - float(ref_scores[i]))
        min_iou = min(min_iou, float(ious[j]))
        max_diff = max(max_diff, diff)
        ok = ious[j] >= iou_threshold and diff <= score_tolerance
        if not ok:  # another same-class box may match both criteria
            good = (ious >= iou_threshold) & (np.abs(candidate["scores"] - ref_scores[i]) <= score_tolerance)
            ok = bool(good.any())
        found += int(ok)
    checked = int(len(ref_boxes))
    return {
        "checked": checked,
        "found": found,
        "missing": checked - found,
        "min_iou": round(min_iou, 6) if checked else None,
        "max_score_diff": float(f"{max_diff:.3g}") if checked else None,
    }


def _merge_matches(results: list[dict[str, Any]]) -> dict[str, Any]:
    checked = sum(r["checked"] for r in results)
    ious = [r["min_iou"] for r in results if r["min_iou"] is not None]
    diffs = [r["max_score_diff"] for r in results if r["max_score_diff"] is not None]
    return {
        "images": len(results),
        "checked": checked,
        "found": sum(r["found"] for r in results),
        "missing": sum(r["missing"] for r in results),
        "min_iou": min(ious) if ious else None,
        "max_score_diff": max(diffs) if diffs else None,
    }


def _valid(detections: dict[str, Any], index: int) -> dict[str, np.ndarray]:
    n = int(np.asarray(detections["num_detections"])[index])
    return {
        "boxes": np.asarray(detections["boxes"])[index, :n],
        "scores": np.asarray(detections["scores"])[index, :n],
        "classes": np.asarray(detections["classes"])[index, :n].astype(np.int32),
    }


def parity_report(
    model: Any,
    saved_model_dir: str | os.PathLike,
    tflite_files: dict[str, Path],
    canvases: Sequence[np.ndarray],
    min_score: float = 0.3,
) -> dict[str, Any]:
    """Compare Keras, SavedModel and TFLite detections on letterboxed uint8 canvases of the export size.

    - ``saved_model_vs_keras``: every Keras detection (any score) found in the SavedModel output, IoU >= 0.99,
      score within 1e-4.
    - ``tflite_<variant>_vs_saved_model``: every SavedModel detection above ``min_score`` found in the TFLite
      output (IoU >= 0.99, score within 1e-3 for float32; the same figures are reported, not enforced, for
      float16 and int8, whose "found" counts measure the quantisation cost).
    """
    import tensorflow as tf

    batch = np.stack([np.asarray(c, dtype=np.uint8) for c in canvases])
    keras_det = {k: np.asarray(v) for k, v in model.detect(batch.astype(np.float32)).items()}
    loaded = tf.saved_model.load(str(saved_model_dir))
    sm_det = {k: v.numpy() for k, v in loaded.signatures["detect_uint8"](images=tf.constant(batch)).items()}
    report: dict[str, Any] = {"images": len(canvases), "min_score": min_score}
    keras_list = [_valid(keras_det, i) for i in range(len(batch))]
    sm_list = [_valid(sm_det, i) for i in range(len(batch))]
    report["keras_detections"] = int(sum(len(d["scores"]) for d in keras_list))
    report["keras_detections_above_min_score"] = int(sum((d["scores"] > min_score).sum() for d in keras_list))
    # All detections, except where an output is full: its last rows sit at the cut-off, where a 1e-7 score
    # change swaps which of two near-equal boxes is kept; skip those within 1e-4 of the lowest kept score.
    max_det = int(np.asarray(keras_det["scores"]).shape[1])

    def floor(d):
        return float(d["scores"].min()) + 1e-4 if len(d["scores"]) >= max_det else 0.0

    report["saved_model_vs_keras"] = _merge_matches(
        [match_detections(k, s, floor(k), 0.99, 1e-4) for k, s in zip(keras_list, sm_list, strict=True)]
    )
    report["saved_model_vs_keras_above_min_score"] = _merge_matches(
        [match_detections(k, s, min_score, 0.99, 1e-4) for k, s in zip(keras_list, sm_list, strict=True)]
    )
    for variant, path in tflite_files.items():
        detector = TFLiteRunner(path)
        tfl_list = [detector.detect_canvas(c) for c in batch]
        report[f"tflite_{variant}_vs_saved_model"] = _merge_matches(
            [match_detections(s, t, min_score, 0.99, 1e-3) for s, t in zip(sm_list, tfl_list, strict=True)]
        )
        # Looser view for quantised files: found with IoU >= 0.5, score within 0.1.
        report[f"tflite_{variant}_vs_saved_model_loose"] = _merge_matches(
            [match_detections(s, t, min_score, 0.5, 0.1) for s, t in zip(sm_list, tfl_list, strict=True)]
        )
    return report


# ----------------------------------------------------------------------------------------------------
# Calibration data
# ----------------------------------------------------------------------------------------------------


def calibration_paths(spec: str, limit: int, seed: int = 0) -> list[str]:
    """Image paths of up to ``limit`` examples of dataset ``spec`` (``keras_retinanet.data.load_dataset``).

    Raises ExportError when the spec cannot be read or holds no images.
    """
    try:
        from keras_retinanet.data import load_dataset

        # Calibration needs only the images: records with bad boxes are still good images.
        dataset = load_dataset(spec, skip_bad=True)
        paths = [str(example["image_path"]) for example in dataset.examples]
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - readers raise many types; all mean "cannot read the data"
        raise ExportError(f"cannot read calibration data {spec!r} ({type(err).__name__}: {err})") from err
    if not paths:
        raise ExportError(f"calibration data {spec!r} holds no images")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))[:limit]
    return [paths[i] for i in order]


def load_canvases(paths: Sequence[str], image_size: Sequence[int]) -> list[np.ndarray]:
    """Read and letterbox images to uint8 (H, W, 3) canvases; ExportError if one cannot be read."""
    return [letterbox_image(read_rgb(p), image_size)[0] for p in paths]


# ----------------------------------------------------------------------------------------------------
# The whole export
# ----------------------------------------------------------------------------------------------------


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_model(
    model_or_path: Any,
    output_dir: str | os.PathLike,
    *,
    image_size: int | str | Sequence[int] = DEFAULT_IMAGE_SIZE,
    saved_model: bool = True,
    tflite_variants: Sequence[str] = TFLITE_VARIANTS,
    tflite_nms: str = "builtin",
    calibration_data: str | None = None,
    calibration_steps: int = 200,
    parity_images: int = 8,
    benchmark: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a RetinaNet to ``output_dir`` (layout in the module docstring); returns the report dict.

    Args:
        model_or_path: a RetinaNet or the path of a ``.keras`` file holding one.
        output_dir: the directory to create; refused if it exists unless ``overwrite``.
        image_size: network input size for the SavedModel letterbox and the fixed TFLite input (N or HxW).
        saved_model: write ``saved_model/``.
        tflite_variants: any of "float32", "float16", "int8".
        tflite_nms: "builtin" (default) or "combined": also write ``model_float32_combined_nms.tflite``, which
            needs the Flex runtime.
        calibration_data: dataset spec for int8 calibration and for the parity figures.
        calibration_steps: number of calibration images (a few hundred).
        parity_images: images for the parity figures (from ``calibration_data``; skipped without it).
        benchmark: also measure TFLite latency (``benchmark_tflite``) into the report.
        overwrite: replace an existing ``output_dir``.
    """
    output = Path(output_dir).resolve()
    tflite_variants = list(dict.fromkeys(tflite_variants))
    for variant in tflite_variants:
        if variant not in TFLITE_VARIANTS:
            raise ExportError(f"unknown TFLite variant {variant!r}; choose from {', '.join(TFLITE_VARIANTS)}")
    if tflite_nms not in TFLITE_NMS_CHOICES:
        raise ExportError(f"--tflite-nms must be one of {', '.join(TFLITE_NMS_CHOICES)}, got {tflite_nms!r}")
    if output.exists() and not overwrite:
        raise ExportError(f"output directory {output} exists; pass --overwrite to replace it")
    if "int8" in tflite_variants and not calibration_data:
        raise ExportError(
            "int8 TFLite needs real calibration images: pass --calibration-data SPEC (e.g. the train set), "
            "or leave int8 out with --tflite float32,float16"
        )
    size = parse_image_size(image_size)
    # Read the calibration data before any slow work, so a bad spec fails at once.
    calib_paths = (
        calibration_paths(calibration_data, max(calibration_steps, parity_images)) if calibration_data else []
    )
    model = load_retinanet(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    config = PostProcessConfig.from_model(model)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        report: dict[str, Any] = {
            "model": str(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model.name,
            "num_classes": int(model.num_classes),
            "class_names": _class_names(model),
            "image_size": list(size),
            "postprocess": dataclasses.asdict(config),
            "tflite_detections_per_class": TFLITE_DETECTIONS_PER_CLASS,
            "num_anchors": int(model.anchor_generator.num_anchors(size)),
            "files": {},
        }
        (staging / LABELS_FILE).write_text("\n".join(_class_names(model)) + "\n")
        if saved_model:
            logger.info("writing SavedModel")
            info = build_saved_model(model, staging / SAVED_MODEL_DIR, size)
            report["files"][SAVED_MODEL_DIR] = info

        calib_canvases: list[np.ndarray] | None = None

        def representative() -> Iterable[np.ndarray]:
            nonlocal calib_canvases
            if calib_canvases is None:
                calib_canvases = load_canvases(calib_paths[:calibration_steps], size)
            return calib_canvases

        tflite_files: dict[str, Path] = {}
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
            )
            (staging / name).write_bytes(data)
            ops = tflite_ops(data)
            report["files"][name] = {
                "size_bytes": len(data),
                "ops": ops,
                "flex_ops": flex_ops(ops),
                "runtime": "LiteRT builtin ops"
                if nms == "builtin"
                else "needs the Flex delegate (SELECT_TF_OPS)",
            }
            if nms == "builtin":
                tflite_files[variant] = staging / name

        if calib_paths and parity_images > 0 and saved_model:
            canvases = load_canvases(calib_paths[:parity_images], size)
            report["parity"] = parity_report(model, staging / SAVED_MODEL_DIR, tflite_files, canvases)
        else:
            report["parity"] = None
            report["parity_note"] = "no parity figures: needs --calibration-data images and the SavedModel"
        if benchmark:
            report["latency"] = {v: benchmark_tflite(p) for v, p in tflite_files.items()}
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")

        # Move into place: an old export is only removed once the new one is complete.
        backup = None
        if output.exists():
            backup = output.parent / f".{output.name}.old-{os.getpid()}"
            output.rename(backup)
        staging.rename(output)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report["output"] = str(output)
    return report


__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "ExportError",
    "PostProcessConfig",
    "TFLiteRunner",
    "benchmark_tflite",
    "build_saved_model",
    "convert_tflite",
    "export_model",
    "flex_ops",
    "letterbox_image",
    "letterbox_params",
    "load_retinanet",
    "match_detections",
    "parity_report",
    "tflite_anchors",
    "tflite_ops",
]
