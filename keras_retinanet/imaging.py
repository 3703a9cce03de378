"""Image handling outside ``tf.data``: decoding, EXIF orientation, letterbox, stretch and their inverse.

Images are (H, W, 3) uint8 **RGB** arrays, upright by their EXIF orientation; sizes are (height, width).
Letterbox: resized keeping the aspect ratio to fit the (H, W) canvas, at its **top-left**, the rest zero;
stretch (MediaPipe Tasks, for a ``.tflite``): the whole image resized to (H, W). Either way a canvas box maps
back by dividing x by ``scale_x`` and y by ``scale_y`` (:func:`boxes_to_original`). The training pipeline
resizes inside ``tf.data`` by the same rule (:func:`letterbox_params`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence

import numpy as np

from keras_retinanet._quiet import filtered_stderr
from keras_retinanet.boxes import clip_boxes

MIN_IMAGE_SIDE = 32
"""The smallest network input side: the coarsest backbone stride."""


class ImageReadError(OSError):
    """An image file that cannot be read or decoded; ``path`` names it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# libjpeg's warnings about the entropy-coded data (jerror.h JWRN_*): the decoder fills the rest of the image
# with grey and returns success, so these stderr lines are the only sign.
_LIBJPEG_WARNING = re.compile(r"^(Corrupt JPEG data|Premature end of JPEG file|Warning: )", re.MULTILINE)
_stderr_lock = threading.Lock()


def jpeg_data_warnings(data: bytes) -> list[str]:
    """The warnings libjpeg prints while decoding a JPEG's scans (``"Corrupt JPEG data: premature end of data
    segment"``), as a list of lines; [] for a sound file. Decodes at 1/8 scale (every coefficient is read)."""
    import cv2

    buffer = np.frombuffer(bytes(data), np.uint8)
    return decode_with_libjpeg_warnings(
        buffer, cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION
    )[1]


def decode_with_libjpeg_warnings(buffer: np.ndarray, flags: int) -> tuple[np.ndarray | None, list[str]]:
    """``cv2.imdecode(buffer, flags)`` and the warning lines libjpeg wrote to stderr meanwhile (the lock keeps
    another thread's decode from lending its warnings to this one)."""
    import cv2

    with _stderr_lock, filtered_stderr(_LIBJPEG_WARNING) as warnings:
        image = cv2.imdecode(buffer, flags)
    return image, [line.strip() for line in warnings]


def parse_image_size(value: int | str | Sequence[int]) -> tuple[int, int]:
    """``512``, ``"512"``, ``"384x640"`` (H x W) or ``(384, 640)`` -> (H, W).

    Raises:
        ValueError: not one or two positive integers, or a side below 32 pixels.
    """
    if isinstance(value, str):
        parts = [p for p in value.lower().replace(",", "x").split("x") if p.strip()]
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"image size must be N or HxW, got {value!r}") from None
    elif isinstance(value, (int, np.integer)):
        sizes = [int(value)]
    else:
        sizes = [int(v) for v in value]
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2 or min(sizes) < MIN_IMAGE_SIDE:
        raise ValueError(f"image size must be N or HxW with sides >= {MIN_IMAGE_SIDE}, got {value!r}")
    return sizes[0], sizes[1]


def median_aspect_ratio(examples: Sequence[dict]) -> float | None:
    """The median width / height of dataset examples (their ``"width"`` and ``"height"``); None without sizes."""
    ratios = [e["width"] / e["height"] for e in examples if e.get("height") and e.get("width")]
    return float(np.median(ratios)) if ratios else None


def shape_for_aspect_ratio(aspect_ratio: float, longest_side: int, divisor: int = 32) -> tuple[int, int]:
    """(H, W) with ``longest_side`` on the longer side and ``aspect_ratio`` (W / H) kept as nearly as a multiple
    of ``divisor`` allows on the other (4:3 at 384 -> (288, 384)): the shape MediaPipe Tasks stretches to
    without distorting the images."""
    short = max(divisor, int(round(longest_side * min(aspect_ratio, 1 / aspect_ratio) / divisor)) * divisor)
    return (short, longest_side) if aspect_ratio >= 1 else (longest_side, short)


def apply_orientation(image: np.ndarray, orientation: int | None) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, C) array, giving the displayed image."""
    if orientation in (None, 0, 1):
        return image
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: np.swapaxes(x, 0, 1),
        6: lambda x: np.rot90(x, k=-1),
        7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
        8: lambda x: np.rot90(x, k=1),
    }
    if orientation not in ops:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    return np.ascontiguousarray(ops[orientation](image))


def decode_image(
    data: bytes | np.ndarray, orientation: int | None = None, name: str = "<bytes>"
) -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) uint8 RGB array (greyscale repeated, alpha dropped).

    Args:
        orientation: None applies the file's own EXIF orientation; an int 1..8 applies that one instead.
        name: used in the error message.
    Raises:
        ImageReadError: the bytes cannot be decoded.
    """
    import cv2

    flags = cv2.IMREAD_COLOR if orientation is None else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    buffer = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data, np.uint8)
    if buffer[:2].tobytes() == b"\xff\xd8":
        # A JPEG cut short decodes "successfully", the rest grey: libjpeg's warning is the only sign.
        image, warnings = decode_with_libjpeg_warnings(buffer, flags)
        if warnings:
            raise ImageReadError(
                name, f"truncated or corrupt JPEG data (libjpeg: {'; '.join(dict.fromkeys(warnings))})"
            )
    else:
        image = cv2.imdecode(buffer, flags) if buffer.size else None
    if image is None:
        raise ImageReadError(name, "not a readable image (corrupt, truncated or unsupported format)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return apply_orientation(image, orientation) if orientation is not None else image


def read_image(path: str | os.PathLike, orientation: int | None = None) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (see :func:`decode_image` for ``orientation``).

    Raises:
        ImageReadError: missing, unreadable or corrupt file (the message names it).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ImageReadError(path, err.strerror or str(err)) from None
    return decode_image(data, orientation, name=path)


def apply_orientation_tensor(image, orientation):
    """:func:`apply_orientation` as TensorFlow ops: stored pixels -> displayed image, EXIF orientation 1..8."""
    import tensorflow as tf

    transpose = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731
    branches = [
        lambda: image,  # 1: as stored
        lambda: tf.reverse(image, [1]),  # 2: mirrored left-right
        lambda: tf.image.rot90(image, 2),  # 3: rotated 180
        lambda: tf.reverse(image, [0]),  # 4: mirrored top-bottom
        lambda: transpose(image),  # 5: transposed
        lambda: tf.image.rot90(image, 3),  # 6: rotate 90 clockwise to display
        lambda: tf.image.rot90(transpose(image), 2),  # 7: transverse
        lambda: tf.image.rot90(image, 1),  # 8: rotate 90 counter-clockwise to display
    ]
    return tf.switch_case(tf.clip_by_value(tf.cast(orientation, tf.int32) - 1, 0, 7), branches)


def decode_image_tensor(encoded, orientation=1):
    """:func:`decode_image` as TensorFlow ops, for ``tf.data`` and graphs (the exported SavedModel): JPEG / PNG /
    BMP / GIF bytes to (H, W, 3) uint8 RGB, with the EXIF ``orientation`` given (TensorFlow reads no EXIF)."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image = apply_orientation_tensor(image, orientation)
    image.set_shape([None, None, 3])
    return image


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA array as a contiguous (H, W, 3) uint8 RGB array."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"an image must be (H, W), (H, W, 3) or (H, W, 4); got shape {image.shape}")
    if 0 in image.shape[:2]:
        raise ValueError(f"an image must be at least 1 x 1 pixel; got an empty array of shape {image.shape}")
    if image.dtype.kind not in "uif":
        raise ValueError(f"an image must hold numbers (uint8 or float pixels); got dtype {image.dtype}")
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def letterbox_params(height: int, width: int, size: Sequence[int]) -> tuple[int, int, float, float]:
    """Resize that fits (height, width) into ``size`` (H, W) keeping the aspect ratio: (new_height, new_width,
    scale_y, scale_x), ``new = round(side * min(H / height, W / width))`` clamped to [1, size] and
    ``scale_y = new_height / height``."""
    if height < 1 or width < 1:
        raise ValueError(
            f"cannot letterbox an empty image of {height} x {width} pixels; images need >= 1 pixel"
        )
    scale = min(size[0] / height, size[1] / width)
    new_h = int(min(max(round(height * scale), 1), size[0]))
    new_w = int(min(max(round(width * scale), 1), size[1]))
    return new_h, new_w, new_h / height, new_w / width


def letterbox(image: np.ndarray, size: int | Sequence[int]) -> tuple[np.ndarray, tuple[float, float]]:
    """Letterbox an (h, w, 3) uint8 RGB image into an (H, W, 3) uint8 canvas (``size``: (H, W) or N; OpenCV
    bilinear): ``(canvas, (scale_y, scale_x))``, see :func:`boxes_to_original`."""
    import cv2

    target = parse_image_size(size)
    height, width = image.shape[:2]
    new_h, new_w, scale_y, scale_x = letterbox_params(height, width, target)
    resized = image
    if (new_h, new_w) != (height, width):
        resized = cv2.resize(np.asarray(image, np.float32), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((target[0], target[1], 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    return canvas, (scale_y, scale_x)


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize an (h, w, C) image by ``scale`` on both axes (OpenCV; output ``round(h * scale) x round(w * scale)``).

    Area averaging when shrinking (no aliasing in a picture for people), bilinear when enlarging.
    """
    import cv2

    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=interpolation)


def stretch(image: np.ndarray, size: int | Sequence[int]) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize the whole image to (H, W) without keeping its aspect ratio, byte for byte as MediaPipe Tasks does.

    MediaPipe's ``cv::warpPerspective`` (bilinear, border replicated, corners aligned) works in fixed point:
    source positions in 1/32 pixel, per block of columns; the same positions go to ``cv2.remap`` here.

    Returns:
        ``(canvas (H, W, 3) uint8, (scale_y, scale_x) = (H / h, W / w))``; see :func:`boxes_to_original`.
    """
    import cv2

    out_h, out_w = parse_image_size(size)
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(
            f"cannot stretch an empty image of {height} x {width} pixels; images need >= 1 pixel"
        )
    # The matrix as MediaPipe builds it (float32 corner points in cv::boxPoints order, LU solve), inverted as
    # warpPerspective inverts it.
    src = np.array([[0, height], [0, 0], [width, 0], [width, height]], np.float32)
    dst = np.array([[0, out_h], [0, 0], [out_w, 0], [out_w, out_h]], np.float32)
    m = cv2.invert(cv2.getPerspectiveTransform(src, dst), flags=cv2.DECOMP_LU)[1].reshape(-1)
    # OpenCV's WarpPerspectiveInvoker: blocks of columns; each block's start term first, then + M[0] * x.
    block = min(1024 // min(16, out_h), out_w)
    xs = np.arange(out_w, dtype=np.float64)[None, :]
    ys = np.arange(out_h, dtype=np.float64)[:, None]
    start = (xs // block) * block
    offset = xs - start
    scale = m[6] * start + m[7] * ys + m[8] + m[6] * offset
    scale = np.where(scale != 0, 32.0 / scale, 0.0)
    qx = np.rint((m[0] * start + m[1] * ys + m[2] + m[0] * offset) * scale).astype(np.int32)
    qy = np.rint((m[3] * start + m[4] * ys + m[5] + m[3] * offset) * scale).astype(np.int32)
    whole = np.stack([qx >> 5, qy >> 5], axis=-1).astype(np.int16)
    fraction = ((qy & 31) * 32 + (qx & 31)).astype(np.uint16)
    canvas = cv2.remap(
        np.ascontiguousarray(image), whole, fraction, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return canvas, (out_h / height, out_w / width)


# How an image becomes a model input: letterbox (training, Keras, SavedModel) or stretch (MediaPipe, TFLite).
RESIZE_RULES = {"letterbox": letterbox, "stretch": stretch}


def boxes_to_original(boxes: np.ndarray, scale: Sequence[float], original_size: Sequence[int]) -> np.ndarray:
    """(..., 4) xyxy boxes in canvas pixels -> float32 xyxy pixels of the (height, width) original image,
    clipped to it; ``scale``: the (scale_y, scale_x) of :func:`letterbox` or :func:`stretch`."""
    scale_y, scale_x = (float(s) for s in scale)
    height, width = (float(s) for s in original_size)
    boxes = np.asarray(boxes, np.float32) / np.array([scale_x, scale_y, scale_x, scale_y], np.float32)
    return clip_boxes(boxes, height, width)


def letterbox_tensor(image, size: Sequence[int]):
    """:func:`letterbox` as TensorFlow ops: (h, w, 3) float32 -> ``(canvas (H, W, 3) float32, (scale_y,
    scale_x) (2,) float32)`` for ``size`` = (H, W), sizes as :func:`letterbox_params`."""
    import tensorflow as tf

    height_out, width_out = int(size[0]), int(size[1])
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    scale = tf.minimum(height_out / height, width_out / width)
    new_h = tf.clip_by_value(tf.round(height * scale), 1.0, float(height_out))
    new_w = tf.clip_by_value(tf.round(width * scale), 1.0, float(width_out))
    new_size = tf.cast(tf.stack([new_h, new_w]), tf.int32)
    resized = tf.cond(
        tf.reduce_all(tf.equal(new_size, shape[:2])), lambda: image, lambda: resize_tensor(image, new_size)
    )
    canvas = tf.image.pad_to_bounding_box(resized, 0, 0, height_out, width_out)
    canvas = tf.ensure_shape(canvas, (height_out, width_out, 3))
    return canvas, tf.stack([new_h / height, new_w / width])


def resize_tensor(image, size):
    """Bilinear resize as TensorFlow ops, the package's one tensor resize: (h, w, C) or (B, h, w, C) ->
    float32 of (H, W) = ``size`` (half-pixel rule as OpenCV's ``INTER_LINEAR``, no antialiasing)."""
    import tensorflow as tf

    return tf.image.resize(image, size, method="bilinear")


def boxes_to_original_tensor(boxes, scale, original_size):
    """:func:`boxes_to_original` for batches of tensors: (B, M, 4) boxes, (B, 2) scales and (B, 2) sizes."""
    import tensorflow as tf

    scale = tf.cast(scale, tf.float32)
    size = tf.cast(original_size, tf.float32)
    scale_xyxy = tf.tile(tf.reverse(scale, axis=[1]), [1, 2])[:, None, :]
    # (B, 1) heights and widths: each image's boxes clipped to its own size.
    return clip_boxes(tf.cast(boxes, tf.float32) / scale_xyxy, size[:, 0:1], size[:, 1:2])
