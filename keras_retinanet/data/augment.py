"""Box-aware image transforms: pure TensorFlow functions on one image (H, W, 3) and its boxes (M, 4) absolute
xyxy pixels. Randomness comes only from an explicit stateless ``seed`` (shape (2,) int), so a result is the same
eagerly and inside a parallel ``tf.data`` map (unlike Keras preprocessing layers' shared ``SeedGenerator``).

Box rule after a crop (:func:`resize_crop_pad`), with ``visible = clipped area / area before the crop``:
``visible >= min_visibility``: kept, clipped; ``0 < visible < min_visibility``: kept, clipped, marked ignore
(class -2); nothing visible or under 1 px wide / high: dropped (class -1, padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from keras_retinanet.boxes import clip_boxes
from keras_retinanet.imaging import resize_tensor

PADDING_CLASS = -1
IGNORE_CLASS = -2
DEFAULT_MIN_VISIBILITY = 0.5


def flip_horizontal(image: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirrors the image left-right; box ``(x1, y1, x2, y2)`` becomes ``(W - x2, y1, W - x1, y2)``."""
    width = tf.cast(tf.shape(image)[1], boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.reverse(image, axis=[1]), tf.stack([width - x2, y1, width - x1, y2], axis=-1)


def random_flip(image, boxes, seed, probability: float = 0.5):
    """:func:`flip_horizontal` with the given probability (decided by ``seed``)."""
    flip = tf.random.stateless_uniform([], seed) < probability
    return tf.cond(flip, lambda: flip_horizontal(image, boxes), lambda: (image, boxes))


def photometric_jitter(
    image,
    seed,
    brightness: float = 32.0,
    contrast: Sequence[float] = (0.8, 1.2),
    saturation: Sequence[float] = (0.8, 1.2),
    hue: float = 0.02,
):
    """Random brightness (+-``brightness`` on the 0..255 scale), contrast, saturation and hue.

    Args:
        image: (H, W, 3) float32 RGB in [0, 255]. Returns the same, clipped to [0, 255].
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    image = tf.image.stateless_random_brightness(image, brightness, seeds[0])
    image = tf.image.stateless_random_contrast(image, contrast[0], contrast[1], seeds[1])
    image = tf.image.stateless_random_saturation(image, saturation[0], saturation[1], seeds[2])
    image = tf.image.stateless_random_hue(image / 255.0, hue, seeds[3]) * 255.0  # hue works on [0, 1]
    return tf.clip_by_value(image, 0.0, 255.0)


def resize_scale(height, width, image_size: Sequence[int]) -> tf.Tensor:
    """Largest scale at which an ``height x width`` image fits ``image_size`` = (H, W), keeping aspect."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    return tf.minimum(image_size[0] / height, image_size[1] / width)


def resize_crop_pad(
    image: tf.Tensor,
    boxes: tf.Tensor,
    classes: tf.Tensor,
    image_size: Sequence[int],
    scale_range: Sequence[float] = (1.0, 1.0),
    seed=None,
    min_visibility: float = DEFAULT_MIN_VISIBILITY,
):
    """Scales ``image`` (h, w, 3) to fit ``image_size`` (H, W) keeping the aspect ratio, then by a factor drawn
    from ``scale_range`` (scale jitter as detectron2's ``ResizeScale``; (1, 1): none, no ``seed`` needed), crops
    a random window where larger and pads with zeros at the bottom / right where smaller. ``boxes`` (M, 4)
    absolute xyxy and ``classes`` (M,) (-1 padding, -2 ignore) follow by the module docstring's rule.

    Returns:
        ``(image (H, W, 3) float32, boxes (M, 4) float32 in output pixels, classes (M,) int32,
        scale (2,) float32 = (scale_y, scale_x) from input to output pixels)``.
    """
    out_h, out_w = int(image_size[0]), int(image_size[1])
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    scale = resize_scale(height, width, (out_h, out_w))
    jitter = tuple(scale_range) != (1.0, 1.0)
    if jitter:
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        scale *= tf.random.stateless_uniform([], seeds[0], scale_range[0], scale_range[1])
    new_h = tf.maximum(1, tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32))
    new_w = tf.maximum(1, tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32))
    # Exact per-axis factors of the resized pixel grid (rounding makes them differ slightly from `scale`).
    scale_y = tf.cast(new_h, tf.float32) / tf.cast(height, tf.float32)
    scale_x = tf.cast(new_w, tf.float32) / tf.cast(width, tf.float32)
    boxes = boxes * tf.stack([scale_x, scale_y, scale_x, scale_y])
    image = resize_tensor(image, tf.stack([new_h, new_w]))

    if jitter:
        off_y = _random_offset(new_h - out_h, seeds[1])
        off_x = _random_offset(new_w - out_w, seeds[2])
        image = image[off_y : off_y + out_h, off_x : off_x + out_w]
        offset = tf.cast(tf.stack([off_x, off_y, off_x, off_y]), tf.float32)
        boxes, classes = _crop_boxes(boxes - offset, classes, out_h, out_w, min_visibility)
    image = tf.image.pad_to_bounding_box(image, 0, 0, out_h, out_w)
    return image, boxes, classes, tf.stack([scale_y, scale_x])


def _random_offset(excess, seed):
    """Uniform integer in [0, excess] (0 when the image is not larger than the canvas)."""
    excess = tf.maximum(excess, 0)
    return tf.random.stateless_uniform([], seed, 0, excess + 1, dtype=tf.int32)


def _crop_boxes(boxes, classes, height: int, width: int, min_visibility: float):
    """Clips boxes to the (height, width) window and applies the keep / ignore / drop rule."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = clip_boxes(boxes, height, width)
    box_w, box_h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    visible = tf.math.divide_no_nan(box_w * box_h, area)
    real = classes != PADDING_CLASS
    dropped = (box_w < 1.0) | (box_h < 1.0) | (visible <= 0.0)
    mostly_hidden = visible < min_visibility
    classes = tf.where(real & dropped, PADDING_CLASS, tf.where(real & mostly_hidden, IGNORE_CLASS, classes))
    return clipped, classes
