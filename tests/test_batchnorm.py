"""FusedBatchNormalization against Keras' own BatchNormalization and against numpy."""

import keras
import numpy as np
import tensorflow as tf

from keras_retinanet.backbones.batchnorm import FusedBatchNormalization

SHAPE = (2, 5, 6, 4)


def _pair(**kwargs):
    """A Keras BatchNorm and a fused one with the same random gamma, beta and moving statistics."""
    rng = np.random.default_rng(0)
    reference, fused = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    reference.build((None, *SHAPE[1:]))
    fused.build((None, *SHAPE[1:]))
    weights = [rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in reference.weights]
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused, weights


def _output_and_gradients(layer, x, loss_weights, training=True):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, "float32") * loss_weights)
    return y, tape.gradient(loss, [x, *layer.trainable_variables])


def _inputs(dtype="float32"):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(3.0, 2.0, SHAPE).astype(dtype))
    loss_weights = tf.constant(rng.normal(0.0, 1.0, SHAPE).astype("float32"))
    return x, loss_weights


def test_training_step_matches_keras_batchnorm_and_numpy():
    reference, fused, (gamma, beta, mean0, var0) = _pair(momentum=0.9, epsilon=1e-3)
    x, loss_weights = _inputs()

    expected, expected_grads = _output_and_gradients(reference, x, loss_weights)
    got, grads = _output_and_gradients(fused, x, loss_weights)
    batch_mean, batch_var = x.numpy().mean((0, 1, 2)), x.numpy().var((0, 1, 2))  # biased variance
    by_hand = (x.numpy() - batch_mean) / np.sqrt(batch_var + 1e-3) * gamma + beta
    np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert len(grads) == 3  # d/dx, d/dgamma, d/dbeta
    for g, e in zip(grads, expected_grads):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fused.moving_mean, 0.9 * mean0 + 0.1 * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, 0.9 * var0 + 0.1 * batch_var, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-5)


def test_inference_frozen_and_uncovered_cases_use_the_keras_path():
    x, loss_weights = _inputs()
    reference, fused, weights = _pair()
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False), rtol=1e-6)
    fused.trainable = reference.trainable = False  # frozen BatchNorm: moving statistics, nothing updated
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), rtol=1e-6)
    np.testing.assert_array_equal(fused.moving_mean, weights[2])
    # tf.nn.fused_batch_norm would raise this epsilon to 1.001e-5: the layer must not change the result.
    reference, fused, _ = _pair(epsilon=1e-7)
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), rtol=1e-6)


def test_mixed_precision_keeps_float16_activations_and_float32_statistics():
    reference, fused, _ = _pair(dtype="mixed_float16")
    x, loss_weights = _inputs("float16")
    got, grads = _output_and_gradients(fused, x, loss_weights)
    expected, _ = _output_and_gradients(reference, x, loss_weights)
    assert got.dtype == tf.float16 and fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(np.float32(got), np.float32(expected), rtol=2e-2, atol=2e-2)
    assert all(np.isfinite(g.numpy()).all() for g in grads)


def test_serialization_round_trip():
    _, fused, _ = _pair(momentum=0.8, epsilon=2e-3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fused))
    assert isinstance(restored, FusedBatchNormalization)
    assert (restored.momentum, restored.epsilon) == (0.8, 2e-3)


def test_a_network_trains_the_same_with_fused_batchnorm():
    """Five SGD steps of a conv-BN-ReLU network: the streamlined copy follows the Keras one step by step."""
    from keras_retinanet.backbones.registry import streamline_batchnorm

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x)))
    reference = keras.Model(inputs, outputs)
    fused = streamline_batchnorm(reference)
    assert fused is not reference
    assert sum(isinstance(layer, FusedBatchNormalization) for layer in fused.layers) == 2

    rng = np.random.default_rng(3)
    images = rng.normal(0.0, 1.0, (5, 4, 16, 16, 3)).astype("float32")
    labels = rng.normal(0.0, 1.0, (5, 4, 1)).astype("float32")
    for model in (reference, fused):
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    for step in range(5):
        expected = reference.train_on_batch(images[step], labels[step])
        got = fused.train_on_batch(images[step], labels[step])
        np.testing.assert_allclose(got, expected, rtol=1e-4, err_msg=f"step {step}")
    for got, expected in zip(fused.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
