"""``tf.data`` input pipelines: common examples -> decoded, augmented, resized, label-encoded batches.

Training: read -> decode (EXIF orientation applied) -> [cache] -> shuffle -> flip / scale jitter + crop /
photometric -> resize keeping aspect, pad bottom / right to image_size -> batch -> label encoder -> prefetch.
Inference: decode -> resize -> pad -> batch, with ``meta`` for :func:`restore_boxes`. Every random choice comes
from a stateless seed derived from ``seed``: deterministic, yet new every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_retinanet.conventions import DEFAULT_IMAGE_SIZE
from keras_retinanet.data import augment as aug
from keras_retinanet.data.dataset import Dataset
from keras_retinanet.imaging import boxes_to_original_tensor, decode_image_tensor, parse_image_size

AUTOTUNE = tf.data.AUTOTUNE


def _source_tensors(dataset: Dataset) -> dict:
    """Columns of the examples, boxes ragged (one row per image). Ignore boxes get class -2."""
    ex = dataset.examples
    lengths = np.asarray([len(e["classes"]) for e in ex], np.int64)

    def ragged(rows: list[np.ndarray], empty: np.ndarray) -> tf.RaggedTensor:
        return tf.RaggedTensor.from_row_lengths(np.concatenate([empty, *rows]).astype(empty.dtype), lengths)

    return {
        "image_path": tf.constant([e["image_path"] for e in ex], tf.string),
        "image_id": tf.constant([e["image_id"] for e in ex], tf.int64),
        "boxes": ragged([e["boxes"].reshape(-1, 4) for e in ex], np.zeros((0, 4), np.float32)),
        "classes": ragged(
            [np.where(e["ignore"], aug.IGNORE_CLASS, e["classes"]) for e in ex], np.zeros(0, np.int32)
        ),
        "original_size": tf.constant([[e["height"], e["width"]] for e in ex], tf.int32),
        "orientation": tf.constant([e.get("orientation", 1) for e in ex], tf.int32),
    }


def _pad_boxes(boxes, classes, max_boxes: int):
    """Pads (M, 4) / (M,) to (max_boxes, 4) / (max_boxes,) with class -1 (static shapes for batching)."""
    pad = max_boxes - tf.shape(classes)[0]
    boxes = tf.pad(boxes, [[0, pad], [0, 0]])
    classes = tf.pad(classes, [[0, pad]], constant_values=aug.PADDING_CLASS)
    return tf.ensure_shape(boxes, [max_boxes, 4]), tf.ensure_shape(classes, [max_boxes])


def _decoded(dataset: Dataset, num_parallel_calls) -> tf.data.Dataset:
    """Examples with decoded uint8 images, in example order."""
    ds = tf.data.Dataset.from_tensor_slices(_source_tensors(dataset))
    if dataset.encoded_images is not None:
        ds = tf.data.Dataset.zip(ds, dataset.encoded_images())
    else:
        ds = ds.map(lambda e: (e, tf.io.read_file(e["image_path"])), num_parallel_calls=num_parallel_calls)

    def decode(e, encoded):
        e = dict(e)
        e["image"] = decode_image_tensor(encoded, e["orientation"])
        return e

    return ds.map(decode, num_parallel_calls=num_parallel_calls)


def train_transform(
    example: dict,
    seed,
    image_size: Sequence[int],
    max_boxes: int,
    augment: bool = True,
    flip_probability: float = 0.5,
    scale_range: Sequence[float] = (0.75, 1.25),
    min_visibility: float = aug.DEFAULT_MIN_VISIBILITY,
    photometric: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The per-image training transform of ``example`` ``{"image": (h, w, 3) uint8, "boxes": (M, 4) xyxy pixels,
    "classes": (M,) int32}`` by a (2,) int ``seed``, pure (same output eagerly and in ``tf.data.map``), onto an
    (H, W) ``image_size`` canvas, boxes padded to ``max_boxes`` (class -1).

    Returns:
        ``image (H, W, 3) float32 in [0, 255], boxes (max_boxes, 4) float32 xyxy canvas pixels,
        classes (max_boxes,) int32`` (-1 padding, -2 ignore).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    image, boxes = example["image"], tf.cast(example["boxes"], tf.float32)
    classes = tf.cast(example["classes"], tf.int32)
    if augment and flip_probability > 0:
        image, boxes = aug.random_flip(image, boxes, seeds[0], flip_probability)
    image, boxes, classes, _ = aug.resize_crop_pad(
        image,
        boxes,
        classes,
        image_size,
        scale_range if augment else (1.0, 1.0),
        seeds[1],
        min_visibility,
    )
    if augment and photometric:
        # Jitter only the content, not the zero padding.
        mask = tf.reduce_any(image > 0, axis=-1, keepdims=True)
        image = tf.where(mask, aug.photometric_jitter(image, seeds[2]), image)
    boxes, classes = _pad_boxes(boxes, classes, max_boxes)
    return image, boxes, classes


def make_training_dataset(
    dataset: Dataset,
    label_encoder,
    image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE,
    batch_size: int = 8,
    augment: bool = True,
    shuffle: bool = True,
    seed: int | None = None,
    flip_probability: float = 0.5,
    scale_range: Sequence[float] = (0.75, 1.25),
    min_visibility: float = aug.DEFAULT_MIN_VISIBILITY,
    photometric: bool = False,
    cache: bool = False,
    drop_remainder: bool = True,
    repeat: bool = False,
    jit_encode: bool = True,
    num_parallel_calls=AUTOTUNE,
) -> tf.data.Dataset:
    """Training batches for ``model.fit``.

    Args:
        label_encoder: a ``LabelEncoder`` (``model.label_encoder()``), called once per batch.
        image_size: output canvas, int (square) or (H, W); a multiple of 128 suits the P3-P7 pyramid.
        augment: flip + scale jitter with random crop (+ ``photometric``: brightness / contrast / saturation /
            hue). False: plain resize and pad.
        seed: makes shuffling and augmentation deterministic (still different from epoch to epoch).
        scale_range: scale jitter factors relative to "fit the canvas"; (1, 1) disables jitter and crop.
        min_visibility: boxes cut by the crop to less than this visible share become ignore boxes.
        cache: keep decoded images in memory after the first epoch (about h*w*3 bytes per image).
        repeat: repeat forever (then pass ``steps_per_epoch`` to ``fit``).
        jit_encode: compile the label encoder with XLA (about 3x faster on CPU, tools/benchmark_pipeline.py).
    Returns:
        ``tf.data.Dataset`` of ``(images (B, H, W, 3) float32 in [0, 255], {"classification": (B, N) int32,
        "box_regression": (B, N, 5) float32})``, N = anchors for (H, W) (see ``LabelEncoder.encode``).
    """
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name!r} has no examples")
    size = parse_image_size(image_size)
    max_boxes = max(dataset.max_boxes, 1)
    ds = _decoded(dataset, num_parallel_calls)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(dataset), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # One (2,) stateless seed per element, new every epoch, reproducible given `seed`.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)

    options = (augment, flip_probability, scale_range, min_visibility, photometric)
    ds = ds.map(
        lambda e, s: train_transform(e, s, size, max_boxes, *options), num_parallel_calls=num_parallel_calls
    )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    encode_fn = tf.function(lambda b, c: label_encoder.encode(size, b, c), jit_compile=jit_encode)

    def encode(images, boxes, classes):
        targets = encode_fn(boxes, classes)
        return images, {key: targets[key] for key in ("classification", "box_regression")}

    ds = ds.map(encode, num_parallel_calls=num_parallel_calls)
    options = tf.data.Options()
    options.deterministic = True
    # tf.data's autotuner sometimes left a whole epoch on one core; without it the parallel maps use every core
    # (docs/data.md, "Pipeline speed").
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(AUTOTUNE)


def make_inference_dataset(
    dataset: Dataset,
    image_size: int | Sequence[int] = DEFAULT_IMAGE_SIZE,
    batch_size: int = 8,
    num_parallel_calls=AUTOTUNE,
) -> tf.data.Dataset:
    """Evaluation / prediction batches in example order: each image resized keeping its aspect ratio to fit
    ``image_size`` (int or (H, W)) and padded bottom / right.

    Returns:
        ``tf.data.Dataset`` of ``(images (B, H, W, 3) float32 in [0, 255], meta)`` with meta
        ``{"image_id": (B,) int64, "scale": (B, 2) float32 (scale_y, scale_x) from original to network
        pixels, "original_size": (B, 2) int32 (height, width)}``. Use :func:`restore_boxes` on detections.
    """
    size = parse_image_size(image_size)
    no_boxes, no_classes = tf.zeros([0, 4]), tf.zeros([0], tf.int32)

    def transform(e):
        image, _, _, scale = aug.resize_crop_pad(e["image"], no_boxes, no_classes, size)
        return image, {"image_id": e["image_id"], "scale": scale, "original_size": e["original_size"]}

    ds = _decoded(dataset, num_parallel_calls).map(transform, num_parallel_calls=num_parallel_calls)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def restore_boxes(boxes, meta: dict):
    """Maps boxes from network-input pixels back to original image pixels, clipped to the image.

    Args:
        boxes: (B, M, 4) xyxy in the pixels of the resized / padded batch (e.g. ``model.predict`` output).
        meta: the batch's meta from :func:`make_inference_dataset`.
    Returns:
        (B, M, 4) float32 xyxy in original image pixels.
    """
    return boxes_to_original_tensor(boxes, meta["scale"], meta["original_size"])
