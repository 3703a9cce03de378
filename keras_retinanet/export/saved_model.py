"""The SavedModel export for TF Serving: letterbox, network, decoding and NMS in one graph.

Output contract: SavedModel (stable; ``keras_retinanet.detectors`` relies on it)
------------------------------------------------------------------------------
Signatures (``tf.saved_model.load(path).signatures[NAME]``; all take keyword arguments):

- ``serving_default(images)``: ``images`` tf.string ``[B]``, encoded JPEG / PNG / BMP / GIF (first frame) of
  any sizes.
- ``detect_float32(images)``: float32 ``[B, H, W, 3]`` RGB in [0, 255]; ``detect_uint8(images)``: uint8.

Every image is letterboxed to ``image_size`` (``keras_retinanet.imaging.letterbox``), run through the network,
decoded and filtered by the model's NMS. All signatures return::

    boxes           float32 [B, M, 4]  x1, y1, x2, y2 in each image's ORIGINAL pixels, clipped to the image
    scores          float32 [B, M]     sigmoid probability, sorted descending; 0 for padding
    classes         int32   [B, M]     class id 0..K-1 (line of labels.txt); -1 for padding
    num_detections  int32   [B]        number of valid rows

with ``M = max_detections``. With per-class thresholds (``--class-thresholds``) a detection of class k is kept
only when its score is >= ``class_thresholds[k]`` (kept rows first, sorted). The loaded object also has
``class_names`` (tf.string [K]), ``image_size`` (int32 [2], H, W), ``precision`` (tf.string: ``float32`` or
``bf16``), ``labels_file`` (the asset) and, with thresholds, ``class_thresholds`` (float32 [K]).

The network is the inference graph (BatchNorm folded). With ``precision="bf16"`` it computes in bfloat16;
letterbox, decoding and NMS stay float32, and inputs and outputs are unchanged.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_retinanet.conventions import LABELS_FILE
from keras_retinanet.export.config import SAVED_MODEL_DIR, ExportJob
from keras_retinanet.imaging import (
    boxes_to_original_tensor,
    decode_image_tensor,
    letterbox_tensor,
    parse_image_size,
    resize_tensor,
)


def _keep_above_class_thresholds(boxes, scores, classes, num, thresholds):
    """Drops the rows of (B, M) detections under their class's threshold (``thresholds`` float32 [K]); a stable
    sort moves the rows kept to the front, in their (score) order. Returns (boxes, scores, classes, num)."""
    import tensorflow as tf

    valid = tf.sequence_mask(num, tf.shape(scores)[1])
    valid &= scores >= tf.gather(thresholds, tf.maximum(classes, 0))
    order = tf.argsort(tf.cast(valid, tf.int32), axis=1, direction="DESCENDING", stable=True)
    boxes, scores, classes = (tf.gather(t, order, batch_dims=1) for t in (boxes, scores, classes))
    return boxes, scores, classes, tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)


def serving_module(
    model: Any,
    image_size: Sequence[int] | None,
    labels_path: Path,
    precision: str = "float32",
    fold_batchnorm: bool = True,
    class_thresholds: Any = None,
):
    """The tf.Module whose signatures follow the module docstring's contract (arguments as
    :func:`build_saved_model`'s; ``labels_path``: the ``labels.txt`` its asset names). Its ``detect_float32``
    is also what the ONNX export converts."""
    import tensorflow as tf

    from keras_retinanet.model.inference_graph import inference_model

    image_size = parse_image_size(image_size) if image_size is not None else model.image_size
    if class_thresholds is not None:
        from keras_retinanet.detectors.class_thresholds import class_threshold_array

        class_thresholds = class_threshold_array(class_thresholds, model.class_names, model.num_classes)
    if fold_batchnorm or precision != "float32":
        model = inference_model(model, precision, fold_batchnorm)
    target_h, target_w = image_size

    class RetinaNetServing(tf.Module):
        def __init__(self):
            super().__init__(name="retinanet_serving")
            self.model = model
            self.labels_file = tf.saved_model.Asset(str(labels_path))
            self.class_names = tf.Variable(list(model.class_names), trainable=False, dtype=tf.string)
            self.image_size = tf.Variable([target_h, target_w], trainable=False, dtype=tf.int32)
            self.precision = tf.Variable(precision, trainable=False, dtype=tf.string)
            if class_thresholds is not None:
                self.class_thresholds = tf.Variable(class_thresholds, trainable=False, dtype=tf.float32)

        def _detect_batch(self, images):
            """images: float32 (B, h, w, 3): one letterbox for the whole batch, with neither ``tf.map_fn`` nor
            ``tf.cond`` (OpenVINO cannot read their ONNX Loop and If)."""
            shape = tf.shape(images)
            size = tf.cast(shape[1:3], tf.float32)
            scale = tf.minimum(target_h / size[0], target_w / size[1])
            new_size = tf.clip_by_value(tf.round(size * scale), 1.0, [float(target_h), float(target_w)])
            resized = resize_tensor(images, tf.cast(new_size, tf.int32))
            canvases = tf.ensure_shape(
                tf.image.pad_to_bounding_box(resized, 0, 0, target_h, target_w), (None, target_h, target_w, 3)
            )
            batch = tf.stack([shape[0], 1])
            return self._detect_canvases(
                canvases, tf.tile((new_size / size)[None], batch), tf.tile(size[None], batch)
            )

        def _detect_canvases(self, canvases, scales, original_sizes):
            detections = model.detect(canvases)
            boxes = tf.cast(detections["boxes"], tf.float32)
            scores = tf.cast(detections["scores"], tf.float32)
            classes = tf.cast(detections["classes"], tf.int32)
            num = tf.cast(detections["num_detections"], tf.int32)
            boxes = boxes_to_original_tensor(boxes, scales, original_sizes)
            if class_thresholds is not None:
                boxes, scores, classes, num = _keep_above_class_thresholds(
                    boxes, scores, classes, num, self.class_thresholds
                )
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
                image = tf.cast(decode_image_tensor(data), tf.float32)
                canvas, scale = letterbox_tensor(image, image_size)
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


def build_saved_model(
    model: Any,
    path: str | os.PathLike,
    image_size: Sequence[int] | None = None,
    precision: str = "float32",
    fold_batchnorm: bool = True,
    class_thresholds: Any = None,
) -> dict:
    """Write a SavedModel with the module docstring's signatures to ``path`` (a new directory).

    Args:
        image_size: letterbox size (H, W); default the model's ``image_size``.
        precision: ``"float32"`` or ``"bf16"``.
        fold_batchnorm: export the inference graph with BatchNorm folded (default) rather than the model's own.
        class_thresholds: a thresholds file or ``{class name: score}``, applied in the graph; None: none.
    Returns {"signatures": [...], "size_bytes": int, "precision": precision}.
    """
    import tensorflow as tf

    path = Path(path)
    # Beside the SavedModel (inside export_model's staging folder), so that what a kill leaves goes with it.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".labels-", dir=path.parent) as scratch:
        labels_path = Path(scratch) / LABELS_FILE
        labels_path.write_text("\n".join(model.class_names) + "\n")
        module = serving_module(model, image_size, labels_path, precision, fold_batchnorm, class_thresholds)
        signatures = {
            "serving_default": module.serve_encoded.get_concrete_function(),
            "detect_float32": module.detect_float32.get_concrete_function(),
            "detect_uint8": module.detect_uint8.get_concrete_function(),
        }
        tf.saved_model.save(module, str(path), signatures=signatures)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"signatures": sorted(signatures), "size_bytes": size, "precision": precision}


def write_saved_model(job: ExportJob) -> dict[str, dict]:
    """The ``saved_model`` format's writer: ``saved_model/`` in ``job.folder``; returns its report entry."""
    path = job.folder / SAVED_MODEL_DIR
    info = build_saved_model(
        job.model,
        path,
        job.image_size,
        precision=job.options["precision"],
        class_thresholds=job.options["class_thresholds"],
    )
    return {SAVED_MODEL_DIR: info}
