"""Encodes boxes as centre/size deltas relative to anchors, and decodes them back."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

DEFAULT_CLAMP = math.log(1000.0 / 16.0)


@keras.saving.register_keras_serializable(package="keras_retinanet")
class BoxCoder:
    """Faster R-CNN box coding, as torchvision's ``BoxCoder``.

    For an anchor with centre (xa, ya) and size (wa, ha) and a box with centre (x, y) and size (w, h):
    ``dx = wx * (x - xa) / wa``, ``dy = wy * (y - ya) / ha``, ``dw = ww * log(w / wa)``,
    ``dh = wh * log(h / ha)``; keras.io's "variances" (0.1, 0.1, 0.2, 0.2) are weights (10, 10, 5, 5). Always
    float32 (exp() of float16 deltas overflows).

    Args:
        clamp: dw and dh are clamped to this value before exp() when decoding.
    """

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), clamp: float = DEFAULT_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"BoxCoder weights must have 4 values (wx, wy, ww, wh), got {weights}")
        self.weights = [float(w) for w in weights]
        self.clamp = float(clamp)

    @staticmethod
    def _centre_size(boxes):
        width = boxes[..., 2] - boxes[..., 0]
        height = boxes[..., 3] - boxes[..., 1]
        return boxes[..., 0] + 0.5 * width, boxes[..., 1] + 0.5 * height, width, height

    def encode(self, anchors, boxes):
        """(..., 4) xyxy anchors and boxes -> (..., 4) float32 deltas (dx, dy, dw, dh)."""
        anchors = ops.cast(anchors, "float32")
        boxes = ops.cast(boxes, "float32")
        xa, ya, wa, ha = self._centre_size(anchors)
        x, y, w, h = self._centre_size(boxes)
        # Degenerate boxes only reach here as non-positive anchors' dummy targets; keep them finite.
        w = ops.maximum(w, 1e-6)
        h = ops.maximum(h, 1e-6)
        wx, wy, ww, wh = self.weights
        return ops.stack(
            [wx * (x - xa) / wa, wy * (y - ya) / ha, ww * ops.log(w / wa), wh * ops.log(h / ha)], axis=-1
        )

    def decode(self, anchors, deltas):
        """(..., 4) xyxy anchors and (..., 4) deltas -> (..., 4) float32 xyxy boxes."""
        anchors = ops.cast(anchors, "float32")
        deltas = ops.cast(deltas, "float32")
        xa, ya, wa, ha = self._centre_size(anchors)
        wx, wy, ww, wh = self.weights
        x = deltas[..., 0] / wx * wa + xa
        y = deltas[..., 1] / wy * ha + ya
        w = ops.exp(ops.minimum(deltas[..., 2] / ww, self.clamp)) * wa
        h = ops.exp(ops.minimum(deltas[..., 3] / wh, self.clamp)) * ha
        return ops.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], axis=-1)

    def get_config(self) -> dict:
        return {"weights": self.weights, "clamp": self.clamp}

    @classmethod
    def from_config(cls, config: dict) -> BoxCoder:
        return cls(**config)
