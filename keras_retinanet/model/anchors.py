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

    Level ``l`` has stride ``2**l`` and anchors of area ``(sizes[l - min_level] * scale)**2`` for every scale,
    with height / width = aspect ratio, at every feature-map cell. The anchors of one cell are ordered ratio
    by ratio and, within a ratio, scale by scale (torchvision's order). Cell ``(i, j)`` of a level with
    stride ``s`` is centred at ``((j + offset) * s, (i + offset) * s)``.

    Args:
        min_level, max_level: pyramid levels (3 and 7 in the paper).
        sizes: base anchor size per level, pixels; ``len(sizes) == max_level - min_level + 1``.
        scales: size multipliers per location (paper: 2^0, 2^(1/3), 2^(2/3)).
        aspect_ratios: height / width ratios per location (paper: 0.5, 1, 2).
        offset: centre offset in strides: 0.5 centres anchors on the cells (fizyr), 0.0 puts them on the cell's
            top-left corner (torchvision, detectron2, keras-hub).
        round_sizes: torchvision's integer anchors: each scaled size is truncated to an int
            (``int(size * scale)``) and the cell's anchor corners are rounded to whole pixels.

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
        """Feature-map sizes (ceil(H / stride), ceil(W / stride)) of every level for a static image size."""
        height, width = int(image_shape[0]), int(image_shape[1])
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.strides]

    def anchors_for_level(self, level: int, feature_height, feature_width):
        """(h * w * A, 4) anchors of one level; ``feature_height/width`` may be Python ints or scalar tensors."""
        stride = float(2**level)
        shifts_x = (ops.cast(ops.arange(feature_width), "float32") + self.offset) * stride
        shifts_y = (ops.cast(ops.arange(feature_height), "float32") + self.offset) * stride
        grid_y, grid_x = ops.meshgrid(shifts_y, shifts_x, indexing="ij")
        centres = ops.stack([grid_x, grid_y, grid_x, grid_y], axis=-1)
        centres = ops.reshape(centres, (-1, 1, 4))
        cell = ops.convert_to_tensor(self.cell_anchors(level))[None, :, :]
        return ops.reshape(centres + cell, (-1, 4))

    def call(self, image_shape=None, feature_shapes=None):
        """Anchors for an image.

        Args:
            image_shape: (H, W) of the network input; the feature shapes are derived as ceil(H / stride).
            feature_shapes: alternatively, the actual (h, w) of each level (ints or scalar tensors).
        Returns:
            (N, 4) float32 anchors, absolute xyxy pixels.
        """
        if feature_shapes is None:
            feature_shapes = self.feature_shapes(image_shape)
        per_level = [
            self.anchors_for_level(level, h, w) for level, (h, w) in zip(self.levels, feature_shapes)
        ]
        return ops.concatenate(per_level, axis=0)

    def num_anchors(self, image_shape: Sequence[int]) -> int:
        return sum(h * w for h, w in self.feature_shapes(image_shape)) * self.num_anchors_per_location

    def level_sizes(self, image_shape: Sequence[int]) -> list[int]:
        """Number of anchors on each level for a static image size."""
        return [h * w * self.num_anchors_per_location for h, w in self.feature_shapes(image_shape)]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            min_level=self.min_level,
            max_level=self.max_level,
            sizes=self.sizes,
            scales=self.scales,
            aspect_ratios=self.aspect_ratios,
            offset=self.offset,
            round_sizes=self.round_sizes,
        )
        return config
