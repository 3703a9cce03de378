"""Anchor boxes for the feature pyramid levels P3-P7."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

PAPER_SCALES = (1.0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0))
PAPER_ASPECT_RATIOS = (0.5, 1.0, 2.0)
PAPER_SIZES = (32.0, 64.0, 128.0, 256.0, 512.0)


def _positive_numbers(name: str, values) -> None:
    """``values`` is a non-empty sequence of finite numbers > 0, or a ValueError naming ``name``."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(
            f"AnchorGenerator: {name} must be a list of positive numbers, got {values!r}"
        ) from None
    if not numbers or not all(math.isfinite(v) and v > 0 for v in numbers):
        raise ValueError(
            f"AnchorGenerator: {name} must be a non-empty list of positive numbers, got {values!r}"
        )


def _check_arguments(min_level, max_level, sizes, scales, aspect_ratios, offset) -> None:
    """AnchorGenerator's arguments checked, with messages that name them."""
    for name, level in (("min_level", min_level), ("max_level", max_level)):
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
            raise ValueError(f"AnchorGenerator: {name} must be an integer >= 0, got {level!r}")
    if max_level < min_level:
        raise ValueError(f"AnchorGenerator: max_level {max_level} is below min_level {min_level}")
    for name, values in (("sizes", sizes), ("scales", scales), ("aspect_ratios", aspect_ratios)):
        _positive_numbers(name, values)
    if len(sizes) != max_level - min_level + 1:
        raise ValueError(
            f"AnchorGenerator needs one size per level {min_level}..{max_level} "
            f"({max_level - min_level + 1} sizes), got {len(sizes)} sizes: {list(sizes)}"
        )
    if isinstance(offset, bool) or not isinstance(offset, (int, float, np.number)) or not 0 <= offset <= 1:
        raise ValueError(f"AnchorGenerator: offset must be a number in [0, 1] (in strides), got {offset!r}")


@keras.saving.register_keras_serializable(package="keras_retinanet")
class AnchorGenerator(keras.layers.Layer):
    """Generates the anchors of every pyramid level for an image size.

    Level ``l`` has stride ``s = 2**l`` and anchors of area ``(sizes[l - min_level] * scale)**2``, height /
    width = aspect ratio, ordered ratio by ratio, then scale by scale (torchvision's order); cell ``(i, j)`` is
    centred at ``((j + offset) * s, (i + offset) * s)``.

    Args:
        sizes: base anchor size per level, pixels; ``len(sizes) == max_level - min_level + 1``.
        scales, aspect_ratios: size multipliers and height / width ratios per location.
        offset: centre offset in strides: 0.5 on the cell centre (fizyr), 0.0 on its top-left corner
            (torchvision, detectron2, keras-hub).
        round_sizes: torchvision's integer anchors (``int(size * scale)``, corners rounded to whole pixels).

    Calling the layer with ``image_shape=(H, W)`` returns (N, 4) float32 anchors in absolute xyxy pixels,
    ordered level, row, column, anchor; N = sum over levels of ceil(H / s) * ceil(W / s) * A.
    """

    def __init__(
        self,
        min_level: int = 3,
        max_level: int = 7,
        sizes: Sequence[float] = PAPER_SIZES,
        scales: Sequence[float] = PAPER_SCALES,
        aspect_ratios: Sequence[float] = PAPER_ASPECT_RATIOS,
        offset: float = 0.5,
        round_sizes: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_arguments(min_level, max_level, sizes, scales, aspect_ratios, offset)
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.sizes = [float(s) for s in sizes]
        self.scales = [float(s) for s in scales]
        self.aspect_ratios = [float(r) for r in aspect_ratios]
        self.offset = float(offset)
        self.round_sizes = bool(round_sizes)

    @property
    def levels(self) -> list[int]:
        return list(range(self.min_level, self.max_level + 1))

    @property
    def strides(self) -> list[int]:
        return [2**level for level in self.levels]

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.scales) * len(self.aspect_ratios)

    def cell_anchors(self, level: int) -> np.ndarray:
        """(A, 4) anchors of one cell of ``level`` centred on (0, 0), xyxy."""
        size = self.sizes[level - self.min_level]
        anchors = []
        for ratio in self.aspect_ratios:
            for scale in self.scales:
                scaled = float(int(size * scale)) if self.round_sizes else size * scale
                width = scaled / math.sqrt(ratio)
                height = scaled * math.sqrt(ratio)
                anchors.append([-width / 2, -height / 2, width / 2, height / 2])
        anchors = np.asarray(anchors, dtype="float32")
        return np.round(anchors) if self.round_sizes else anchors

    def feature_shapes(self, image_shape: Sequence[int]) -> list[tuple[int, int]]:
        """Feature-map sizes (ceil(H / stride), ceil(W / stride)) of every level; H, W ints or scalar tensors."""
        height, width = (int(x) if isinstance(x, (int, np.integer)) else x for x in image_shape[:2])
        return [(-(-height // s), -(-width // s)) for s in self.strides]

    def call(self, image_shape=None, feature_shapes=None):
        """(N, 4) float32 anchors, absolute xyxy pixels, for an (H, W) network input or the (h, w) of each
        level (``feature_shapes``: ints or scalar tensors)."""
        per_level = []
        for level, (height, width) in zip(self.levels, feature_shapes or self.feature_shapes(image_shape)):
            shifts_x = (ops.cast(ops.arange(width), "float32") + self.offset) * float(2**level)
            shifts_y = (ops.cast(ops.arange(height), "float32") + self.offset) * float(2**level)
            grid_y, grid_x = ops.meshgrid(shifts_y, shifts_x, indexing="ij")
            centres = ops.reshape(ops.stack([grid_x, grid_y, grid_x, grid_y], axis=-1), (-1, 1, 4))
            cell = ops.convert_to_tensor(self.cell_anchors(level))[None, :, :]
            per_level.append(ops.reshape(centres + cell, (-1, 4)))
        return ops.concatenate(per_level, axis=0)

    def num_anchors(self, image_shape: Sequence[int]) -> int:
        return sum(h * w for h, w in self.feature_shapes(image_shape)) * self.num_anchors_per_location

    def level_sizes(self, image_shape: Sequence[int]) -> list[int]:
        """Number of anchors on each level (ints, or scalar tensors for a traced image size)."""
        return [h * w * self.num_anchors_per_location for h, w in self.feature_shapes(image_shape)]

    def get_config(self) -> dict:
        config = super().get_config()
        names = ("min_level", "max_level", "sizes", "scales", "aspect_ratios", "offset", "round_sizes")
        return {**config, **{name: getattr(self, name) for name in names}}
