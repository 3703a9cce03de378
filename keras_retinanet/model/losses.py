"""RetinaNet losses: the alpha-balanced focal loss and the box regression loss.

Both are normalised **per image** by its number of positive anchors (at least 1), then averaged over the
batch (Keras' ``"sum_over_batch_size"``), as torchvision does: a global batch's loss is the same however
``tf.distribute`` splits it over replicas.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from keras_retinanet.model.box_coder import BoxCoder


def _num_positives(class_targets):
    """(B, N) classification targets -> (B,) float32 count of positive anchors, at least 1."""
    return ops.maximum(ops.sum(ops.cast(class_targets >= 0, "float32"), axis=-1), 1.0)


def focal_loss(class_targets, logits, alpha: float | None = 0.25, gamma: float = 2.0):
    """The focal loss per image, in plain ops (see :class:`FocalLoss` for the arguments and shapes)."""
    num_classes = ops.shape(logits)[-1]
    # one_hot of -1 / -2 is all zeros: background anchors are negatives for every class.
    labels = ops.one_hot(ops.maximum(class_targets, -1), num_classes, dtype="float32")
    labels = labels * ops.cast(class_targets >= 0, "float32")[..., None]

    # Stable log(p) and log(1 - p) straight from the logits.
    cross_entropy = ops.binary_crossentropy(labels, logits, from_logits=True)
    probs = ops.sigmoid(logits)
    p_t = labels * probs + (1.0 - labels) * (1.0 - probs)
    loss = cross_entropy * ops.power(1.0 - p_t, gamma)
    if alpha is not None:
        loss = loss * (labels * alpha + (1.0 - labels) * (1.0 - alpha))

    not_ignored = ops.cast(class_targets != -2, "float32")[..., None]
    per_image = ops.sum(loss * not_ignored, axis=(-2, -1))
    return per_image / _num_positives(class_targets)


@functools.cache
def _value_and_gradient_function(alpha: float | None, gamma: float):
    """An XLA-compiled ``(class_targets, logits) -> (per-image loss (B,), its gradient (B, N, K))``."""
    import tensorflow as tf

    def value_and_gradient(class_targets, logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            per_image = focal_loss(class_targets, logits, alpha, gamma)
        # Each image's loss depends only on its own logits, so the gradient of the sum holds all of them.
        return per_image, tape.gradient(per_image, logits)

    return tf.function(value_and_gradient, jit_compile=True, autograph=False)


def _compiled_focal_loss(class_targets, logits, alpha: float | None, gamma: float):
    """:func:`focal_loss` with its value and gradient from one XLA-compiled function, which fuses its dozen
    element-wise passes over (B, N, K) (the same values up to float rounding)."""
    import tensorflow as tf

    compiled = _value_and_gradient_function(alpha, gamma)

    @tf.custom_gradient
    def loss(logits):
        per_image, gradient = compiled(class_targets, logits)

        def backward(upstream):  # upstream: (B,) d(total loss) / d(per-image loss)
            return upstream[..., None, None] * gradient

        return per_image, backward

    return loss(logits)


@keras.saving.register_keras_serializable(package="keras_retinanet")
class FocalLoss(keras.losses.Loss):
    """Sigmoid focal loss, ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` (Lin et al. 2017, eq. 5), summed over
    every non-ignored anchor and class.

    Args:
        alpha: weight of the positive class; negatives get 1 - alpha. ``None`` disables balancing.

    Call arguments:
        y_true: (B, N) classification targets: class id for positive anchors, -1 background, -2 ignored.
        y_pred: (B, N, K) logits (not probabilities).
    Returns (with ``reduction=None``): (B,) loss per image.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, name: str = "focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = None if alpha is None else float(alpha)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        class_targets = ops.cast(y_true, "int32")
        if keras.backend.backend() == "tensorflow":
            return _compiled_focal_loss(class_targets, logits, self.alpha, self.gamma)
        return focal_loss(class_targets, logits, self.alpha, self.gamma)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(alpha=self.alpha, gamma=self.gamma)
        return config


@keras.saving.register_keras_serializable(package="keras_retinanet")
class BoxRegressionLoss(keras.losses.Loss):
    """Box regression loss over the positive anchors, divided by the image's number of positives.

    Args:
        box_loss: ``"smooth_l1"`` (Detectron, with ``beta``), ``"l1"`` (torchvision v1) or ``"giou"``
            (torchvision v2: ``1 - GIoU`` of the decoded predicted and target boxes).
        beta: smooth L1 transition point; ``beta=0`` is plain L1.
        box_coder: for ``"giou"``, the ``BoxCoder`` the deltas are encoded with. Both deltas are decoded
            against one unit anchor: that frame scales all areas alike, so GIoU is the pixel boxes' GIoU.

    Call arguments:
        y_true: (B, N, 5): target deltas and the classification target (``LabelEncoder``'s); only anchors
            with a class id >= 0 count.
        y_pred: (B, N, 4) predicted deltas.
    Returns (with ``reduction=None``): (B,) loss per image.
    """

    def __init__(
        self,
        box_loss: str = "smooth_l1",
        beta: float = 0.11,
        box_coder: BoxCoder | None = None,
        name: str = "box_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if box_loss not in ("smooth_l1", "l1", "giou"):
            raise ValueError(
                f"BoxRegressionLoss box_loss must be 'smooth_l1', 'l1' or 'giou', got {box_loss!r}"
            )
        self.box_loss = box_loss
        self.beta = float(beta)
        if isinstance(box_coder, dict):
            box_coder = keras.saving.deserialize_keras_object(box_coder)
        self.box_coder = box_coder or BoxCoder()

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        deltas = ops.cast(y_pred, "float32")
        target_deltas, class_targets = y_true[..., :4], y_true[..., 4]
        positive = ops.cast(class_targets >= 0, "float32")
        if self.box_loss == "giou":
            # Other anchors' deltas may be anything: zeroed before exp(), no inf in the loss or its gradient.
            keep = positive[..., None] > 0.0
            deltas = ops.where(keep, deltas, 0.0)
            target_deltas = ops.where(keep, target_deltas, 0.0)
            loss = 1.0 - _giou(
                self._unit_boxes(deltas, clamp=True), self._unit_boxes(target_deltas, clamp=False)
            )
            return ops.sum(loss * positive, axis=-1) / _num_positives(class_targets)
        difference = ops.abs(deltas - target_deltas)
        if self.box_loss == "smooth_l1" and self.beta > 0.0:
            loss = ops.where(
                difference < self.beta, 0.5 * difference**2 / self.beta, difference - 0.5 * self.beta
            )
        else:
            loss = difference
        per_image = ops.sum(ops.sum(loss, axis=-1) * positive, axis=-1)
        return per_image / _num_positives(class_targets)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            box_loss=self.box_loss,
            beta=self.beta,
            box_coder=keras.saving.serialize_keras_object(self.box_coder),
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> BoxRegressionLoss:
        config = dict(config)
        if "kind" in config:  # files saved before 0.4 named the loss "kind"
            config["box_loss"] = config.pop("kind")
        return cls(**config)

    def _unit_boxes(self, deltas, clamp: bool):
        """(..., 4) deltas -> x1, y1, x2, y2 of the box they encode against the anchor (-0.5, -0.5, 0.5, 0.5)."""
        wx, wy, ww, wh = self.box_coder.weights
        dw, dh = deltas[..., 2] / ww, deltas[..., 3] / wh
        if clamp:
            dw, dh = ops.minimum(dw, self.box_coder.clamp), ops.minimum(dh, self.box_coder.clamp)
        x, y = deltas[..., 0] / wx, deltas[..., 1] / wy
        half_w, half_h = 0.5 * ops.exp(dw), 0.5 * ops.exp(dh)
        return x - half_w, y - half_h, x + half_w, y + half_h


def _giou(boxes, other, eps: float = 1e-7):
    """Generalised IoU of matching boxes given as (x1, y1, x2, y2) tuples of (...) tensors (torchvision's eps)."""
    x1, y1, x2, y2 = boxes
    u1, v1, u2, v2 = other
    intersection = ops.maximum(ops.minimum(x2, u2) - ops.maximum(x1, u1), 0.0) * ops.maximum(
        ops.minimum(y2, v2) - ops.maximum(y1, v1), 0.0
    )
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - intersection
    iou = intersection / (union + eps)
    enclosing = (ops.maximum(x2, u2) - ops.minimum(x1, u1)) * (ops.maximum(y2, v2) - ops.minimum(y1, v1))
    return iou - (enclosing - union) / (enclosing + eps)
