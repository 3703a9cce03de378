"""RetinaNet losses: the alpha-balanced focal loss and the box regression loss.

Both are normalised **per image** by that image's number of positive anchors (at least 1), then averaged
over the batch by Keras' default ``"sum_over_batch_size"`` reduction, as torchvision does. Because every
image carries its own normaliser, the loss of a global batch is the same however ``tf.distribute`` splits it
over replicas: Keras divides each replica's mean by the number of replicas and sums the gradients.
"""

from __future__ import annotations

import keras
from keras import ops


def _num_positives(class_targets):
    """(B, N) classification targets -> (B,) float32 count of positive anchors, at least 1."""
    return ops.maximum(ops.sum(ops.cast(class_targets >= 0, "float32"), axis=-1), 1.0)


@keras.saving.register_keras_serializable(package="keras_retinanet")
class FocalLoss(keras.losses.Loss):
    """Sigmoid focal loss, ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` (Lin et al. 2017, eq. 5).

    Summed over every non-ignored anchor and every class, divided by the image's number of positive anchors.

    Args:
        alpha: weight of the positive class (0.25); negatives get 1 - alpha. ``None`` disables balancing.
        gamma: focusing parameter (2.0).

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
        num_classes = ops.shape(logits)[-1]
        # one_hot of -1 / -2 is all zeros: background anchors are negatives for every class.
        labels = ops.one_hot(ops.maximum(class_targets, -1), num_classes, dtype="float32")
        labels = labels * ops.cast(class_targets >= 0, "float32")[..., None]

        # Stable log(p) and log(1 - p) straight from the logits.
        cross_entropy = ops.binary_crossentropy(labels, logits, from_logits=True)
        probs = ops.sigmoid(logits)
        p_t = labels * probs + (1.0 - labels) * (1.0 - probs)
        loss = cross_entropy * ops.power(1.0 - p_t, self.gamma)
        if self.alpha is not None:
            loss = loss * (labels * self.alpha + (1.0 - labels) * (1.0 - self.alpha))

        not_ignored = ops.cast(class_targets != -2, "float32")[..., None]
        per_image = ops.sum(loss * not_ignored, axis=(-2, -1))
        return per_image / _num_positives(class_targets)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(alpha=self.alpha, gamma=self.gamma)
        return config


@keras.saving.register_keras_serializable(package="keras_retinanet")
class BoxRegressionLoss(keras.losses.Loss):
    """Box regression loss over the positive anchors, divided by the image's number of positives.

    Args:
        kind: ``"smooth_l1"`` (Detectron, with ``beta``) or ``"l1"`` (torchvision v1, detectron2).
        beta: smooth L1 transition point (0.11 in Detectron's RetinaNet); ``beta=0`` is plain L1.

    Call arguments:
        y_true: (B, N, 5): encoded target deltas in [..., :4] and the anchor's classification target in
            [..., 4] (as made by ``LabelEncoder``); only anchors with a class id >= 0 count.
        y_pred: (B, N, 4) predicted deltas.
    Returns (with ``reduction=None``): (B,) loss per image.
    """

    def __init__(self, kind: str = "smooth_l1", beta: float = 0.11, name: str = "box_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in ("smooth_l1", "l1"):
            raise ValueError(f"BoxRegressionLoss kind must be 'smooth_l1' or 'l1', got {kind!r}")
        self.kind = kind
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        deltas = ops.cast(y_pred, "float32")
        target_deltas, class_targets = y_true[..., :4], y_true[..., 4]
        difference = ops.abs(deltas - target_deltas)
        if self.kind == "smooth_l1" and self.beta > 0.0:
            loss = ops.where(
                difference < self.beta, 0.5 * difference**2 / self.beta, difference - 0.5 * self.beta
            )
        else:
            loss = difference
        positive = ops.cast(class_targets >= 0, "float32")
        per_image = ops.sum(ops.sum(loss, axis=-1) * positive, axis=-1)
        return per_image / _num_positives(class_targets)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(kind=self.kind, beta=self.beta)
        return config
