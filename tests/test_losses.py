import math

import numpy as np
import pytest

from keras_retinanet import BoxRegressionLoss, FocalLoss


def _numpy_focal(class_targets, logits, alpha=0.25, gamma=2.0):
    """Independent formula: sum over non-ignored anchors and classes / max(1, positives), per image."""
    probs = 1.0 / (1.0 + np.exp(-logits))
    out = []
    for targets, p in zip(class_targets, probs):
        total = 0.0
        for anchor, target in enumerate(targets):
            if target == -2:
                continue
            for k in range(p.shape[1]):
                y = 1.0 if target == k else 0.0
                p_t = p[anchor, k] if y else 1.0 - p[anchor, k]
                alpha_t = alpha if y else 1.0 - alpha
                total += -alpha_t * (1.0 - p_t) ** gamma * math.log(p_t)
        out.append(total / max(1, int(np.sum(targets >= 0))))
    return np.array(out)


def test_focal_loss_hand_computed_value():
    # One anchor, one class, positive, logit 0 -> p = 0.5: FL = -0.25 * 0.5^2 * log(0.5) = 0.0433217
    loss = FocalLoss(reduction=None)(np.array([[0]]), np.array([[[0.0]]]))
    np.testing.assert_allclose(np.asarray(loss), [0.25 * 0.25 * math.log(2.0)], rtol=1e-6)


def test_focal_loss_matches_numpy_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 40, 5)).astype("float32")
    targets = rng.choice([-2, -1, -1, -1, 0, 1, 2, 3, 4], size=(3, 40)).astype("int32")
    targets[2] = -1  # an image with no positives: normaliser 1
    expected = _numpy_focal(targets, logits)
    np.testing.assert_allclose(np.asarray(FocalLoss(reduction=None)(targets, logits)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(FocalLoss()(targets, logits)), expected.mean(), rtol=1e-5)


def test_focal_loss_is_stable_for_extreme_logits_and_empty_images():
    logits = np.array([[[80.0, -80.0], [-80.0, 80.0]]], "float32")
    loss = float(FocalLoss()(np.array([[-1, -1]]), logits))
    # Two confident mistakes, no positives: finite and large (each ~ 0.75 * 80).
    assert np.isfinite(loss) and loss > 100
    assert float(FocalLoss()(np.array([[-1, -1]]), -np.abs(logits))) < 1e-6


def test_box_loss_by_hand_and_only_on_positives():
    # Anchor 0 positive with error (0.05, 1.0, 0, 0); anchor 1 background with a huge error that must not count.
    y_true = np.array([[[0, 0, 0, 0, 1], [0, 0, 0, 0, -1]]], "float32")
    y_pred = np.array([[[0.05, 1.0, 0, 0], [9, 9, 9, 9]]], "float32")
    smooth = float(BoxRegressionLoss(beta=0.11)(y_true, y_pred))
    np.testing.assert_allclose(smooth, 0.5 * 0.05**2 / 0.11 + (1.0 - 0.055), rtol=1e-6)
    np.testing.assert_allclose(float(BoxRegressionLoss(box_loss="l1")(y_true, y_pred)), 1.05, rtol=1e-6)


def test_box_loss_is_zero_without_boxes():
    y_true = np.zeros((2, 10, 5), "float32")
    y_true[..., 4] = -1
    assert float(BoxRegressionLoss()(y_true, np.ones((2, 10, 4), "float32"))) == 0.0


def test_losses_normalise_by_positives_per_image():
    # Image 0 has 2 positives with L1 error 1 each; image 1 has 1 positive with error 4: per-image 1 and 4.
    y_true = np.zeros((2, 2, 5), "float32")
    y_true[0, :, 4] = [0, 1]
    y_true[1, :, 4] = [0, -1]
    y_pred = np.zeros((2, 2, 4), "float32")
    y_pred[0, :, 0] = 1.0
    y_pred[1, 0, 0] = 4.0
    per_image = np.asarray(BoxRegressionLoss(box_loss="l1", reduction=None)(y_true, y_pred))
    np.testing.assert_allclose(per_image, [1.0, 4.0])


def _numpy_focal_gradient(class_targets, logits, alpha=0.25, gamma=2.0):
    """d FL / d logit by hand, per image divided by its positives: positives alpha (1-p)^g (g p log p - (1-p)),
    negatives (1-alpha) p^g (p - g (1-p) log(1-p)), ignored anchors 0."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    labels = (class_targets[..., None] == np.arange(logits.shape[-1])).astype(np.float64)
    positive = alpha * (1 - p) ** gamma * (gamma * p * np.log(p) - (1 - p))
    negative = (1 - alpha) * p**gamma * (p - gamma * (1 - p) * np.log(1 - p))
    grad = np.where(labels == 1, positive, negative) * (class_targets != -2)[..., None]
    return grad / np.maximum((class_targets >= 0).sum(-1), 1)[:, None, None]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "inside-xla"])
def test_focal_loss_gradient_matches_the_hand_derived_one(jit_compile):
    """The gradient the training step sees, with per-image weights (as Keras and tf.distribute scale them).

    On TensorFlow the loss is one XLA function behind a custom gradient; "inside-xla" runs it in a training
    step that is itself compiled (``compile(jit_compile=True)``)."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    targets = np.array([[0, -1, 2, -2, -1, 1], [-1, -1, -2, -1, -1, -1]])
    logits = tf.Variable(rng.normal(-1, 2, (2, 6, 3)).astype(np.float32))
    weights = np.array([0.5, 3.0], np.float32)

    @tf.function(jit_compile=jit_compile)
    def loss_and_gradient():
        with tf.GradientTape() as tape:
            loss = FocalLoss(reduction="sum")(targets, logits, sample_weight=weights)
        return loss, tape.gradient(loss, logits)

    loss, gradient = loss_and_gradient()
    expected_loss = (weights * _numpy_focal(targets, logits.numpy())).sum()
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5)
    expected = weights[:, None, None] * _numpy_focal_gradient(targets, logits.numpy())
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_box_loss_saved_under_its_old_name_still_loads():
    # Files saved before 0.4 name the box loss "kind"; the matcher's old key is loaded by test_saved_before_regroup.
    restored = BoxRegressionLoss.from_config({"kind": "giou", "beta": 0.2})
    assert (restored.box_loss, restored.beta) == ("giou", 0.2)
    assert BoxRegressionLoss.from_config(restored.get_config()).box_loss == "giou"
