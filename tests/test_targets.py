import numpy as np
import tensorflow as tf

from keras_retinanet import AnchorGenerator, BoxCoder, LabelEncoder, Matcher
from keras_retinanet.boxes import pairwise_iou


def _encoder():
    # One level, one square anchor per cell keeps the case small enough to reason about by hand.
    generator = AnchorGenerator(min_level=5, max_level=5, sizes=(32,), scales=(1.0,), aspect_ratios=(1.0,))
    return LabelEncoder(generator, BoxCoder(), Matcher())


def test_states_and_deltas_by_hand():
    encoder = _encoder()
    # 64x64 image, stride 32: 4 anchors of 32x32 centred at (16,16), (48,16), (16,48), (48,48).
    boxes = np.array([[0, 0, 32, 32], [36, 4, 60, 28], [0, 0, 0, 0]], "float32")
    classes = np.array([2, 1, -1], "int32")
    targets = encoder.encode((64, 64), boxes, classes)
    cls = np.asarray(targets["classification"])
    # Anchor 0 = box 0 exactly (IoU 1): class 2. Anchor 1 vs box 1: 24*24 / (32*32) = 0.5625: class 1.
    # Anchors 2 and 3 overlap nothing: background.
    np.testing.assert_array_equal(cls, [2, 1, -1, -1])
    regression = np.asarray(targets["box_regression"])
    np.testing.assert_allclose(regression[0, :4], 0.0, atol=1e-6)
    np.testing.assert_allclose(regression[1, :4], [0.0, 0.0, np.log(0.75), np.log(0.75)], atol=1e-6)
    np.testing.assert_array_equal(regression[:, 4], cls)
    np.testing.assert_array_equal(regression[2:, :4], 0.0)


def test_ignore_boxes_and_ignored_band():
    encoder = _encoder()
    # Box 0 is an ignore box (class -2) on anchor 0; box 1 covers 14/32 of anchor 3 in x: IoU 0.4375, ignored.
    boxes = np.array([[0, 0, 32, 32], [32, 32, 46, 64]], "float32")
    targets = encoder.encode((64, 64), boxes, np.array([-2, 0], "int32"))
    np.testing.assert_array_equal(np.asarray(targets["classification"]), [-2, -1, -1, -2])


def test_image_without_boxes_is_all_background():
    encoder = LabelEncoder()
    targets = encoder.encode((128, 128), np.zeros((0, 4), "float32"), np.zeros((0,), "int32"))
    assert np.all(np.asarray(targets["classification"]) == -1)
    assert np.all(np.asarray(targets["box_regression"])[:, :4] == 0.0)


def test_positives_match_best_iou_on_random_boxes():
    encoder = LabelEncoder()
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 200, (6, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 120, (6, 2))], axis=1).astype("float32")
    classes = rng.integers(0, 4, 6).astype("int32")
    targets = encoder.encode((256, 256), boxes, classes)
    iou = np.asarray(pairwise_iou(encoder.anchor_generator(image_shape=(256, 256)), boxes))
    best = iou.max(axis=1)
    cls = np.asarray(targets["classification"])
    np.testing.assert_array_equal(cls >= 0, best >= 0.5)
    np.testing.assert_array_equal(cls == -2, (best >= 0.4) & (best < 0.5))
    np.testing.assert_array_equal(cls[best >= 0.5], classes[iou.argmax(axis=1)][best >= 0.5])


def test_eager_equals_tf_data_map_and_batched():
    encoder = LabelEncoder()
    boxes = np.array([[10, 10, 90, 60], [100, 120, 200, 250], [0, 0, 0, 0]], "float32")
    classes = np.array([0, 3, -1], "int32")
    eager = encoder.encode((256, 256), boxes, classes)
    dataset = tf.data.Dataset.from_tensors((boxes, classes)).map(
        lambda b, c: encoder.encode((256, 256), b, c)
    )
    mapped = next(iter(dataset))
    batched = encoder.encode((256, 256), np.stack([boxes, boxes]), np.stack([classes, classes]))
    for key in ("classification", "box_regression"):
        np.testing.assert_array_equal(np.asarray(mapped[key]), np.asarray(eager[key]))
        np.testing.assert_array_equal(np.asarray(batched[key])[1], np.asarray(eager[key]))
