import math

import keras
import numpy as np

from keras_retinanet import BoxCoder


def test_encode_worked_by_hand():
    anchor = np.array([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
    box = np.array([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size 20 x 20
    deltas = np.asarray(BoxCoder().encode(anchor, box))
    np.testing.assert_allclose(deltas, [[0.7, 0.2, math.log(2.0), 0.0]], rtol=1e-6, atol=1e-7)
    weighted = np.asarray(BoxCoder(weights=(10, 10, 5, 5)).encode(anchor, box))
    np.testing.assert_allclose(weighted, [[7.0, 2.0, 5 * math.log(2.0), 0.0]], rtol=1e-6, atol=1e-6)


def test_round_trip_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (200, 2))
    anchors = np.concatenate([xy, xy + rng.uniform(8, 200, (200, 2))], axis=1).astype("float32")
    xy = rng.uniform(0, 300, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 250, (200, 2))], axis=1).astype("float32")
    for coder in (BoxCoder(), BoxCoder(weights=(10, 10, 5, 5))):
        decoded = np.asarray(coder.decode(anchors, coder.encode(anchors, boxes)))
        np.testing.assert_allclose(decoded, boxes, atol=1e-3)


def test_decode_clamps_size_before_exp():
    anchor = np.array([[0.0, 0.0, 16.0, 16.0]])
    decoded = np.asarray(BoxCoder().decode(anchor, np.array([[0.0, 0.0, 100.0, 100.0]])))
    # exp is clamped at log(1000 / 16): a 16-px anchor grows to at most 1000 px.
    np.testing.assert_allclose(decoded[0, 2] - decoded[0, 0], 1000.0, rtol=1e-5)
    assert np.all(np.isfinite(decoded))


def test_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        deltas = keras.ops.convert_to_tensor(np.array([[0.0, 0.0, 4.0, 4.0]]), dtype="float16")
        boxes = BoxCoder().decode(np.array([[0.0, 0.0, 5000.0, 5000.0]]), deltas)
        assert keras.backend.standardize_dtype(boxes.dtype) == "float32"
        # 5000 * e^4 = 272,991 px is past float16's maximum (65,504): only a float32 decode gets it right.
        np.testing.assert_allclose(float(boxes[0, 2] - boxes[0, 0]), 5000 * math.exp(4.0), rtol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")
