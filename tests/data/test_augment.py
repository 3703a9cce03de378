"""Box-aware transforms: numbers checked by hand, eager == tf.data.map, EXIF orientation vs OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import tensorflow as tf
from data_testing import write_image

from keras_retinanet.data import augment as aug
from keras_retinanet.data.pipeline import train_transform
from keras_retinanet.imaging import decode_image_tensor


def test_flip_moves_pixels_and_boxes():
    image = np.zeros((20, 100, 3), np.uint8)
    image[5, 10] = 255
    flipped, boxes = aug.flip_horizontal(tf.constant(image), tf.constant([[10.0, 2.0, 30.0, 8.0]]))
    assert flipped.numpy()[5, 89].tolist() == [255, 255, 255]  # column 10 -> 100 - 1 - 10
    np.testing.assert_array_equal(boxes.numpy(), [[70, 2, 90, 8]])


def test_resize_keeps_aspect_and_pads_bottom_right():
    image = tf.fill([480, 640, 3], tf.constant(7, tf.uint8))
    out, boxes, classes, scale = aug.resize_crop_pad(
        image, tf.constant([[100.0, 50.0, 200.0, 150.0]]), tf.constant([2]), (512, 512)
    )
    np.testing.assert_allclose(scale.numpy(), [0.8, 0.8])  # 640 -> 512, 480 -> 384
    np.testing.assert_allclose(boxes.numpy(), [[80, 40, 160, 120]])
    assert classes.numpy().tolist() == [2]
    out = out.numpy()
    assert out.shape == (512, 512, 3) and out.dtype == np.float32
    assert np.all(out[:384] == 7) and np.all(out[384:] == 0)


def test_crop_rule_keep_ignore_drop():
    boxes = tf.constant(
        [
            [10, 10, 50, 50],
            [80, 10, 120, 50],
            [90, 10, 130, 50],
            [110, 10, 150, 50],
            [0, 0, 0, 0],
            [10, 60, 30, 90],
        ],
        tf.float32,
    )
    classes = tf.constant([0, 1, 2, 3, -1, -2])
    out_boxes, out_classes = aug._crop_boxes(boxes, classes, 100, 100, min_visibility=0.5)
    # visible: 1.0 keep, 0.5 keep (clipped), 0.25 ignore (clipped), 0 dropped, padding stays, ignore stays.
    assert out_classes.numpy().tolist() == [0, 1, -2, -1, -1, -2]
    np.testing.assert_array_equal(
        out_boxes.numpy()[:3], [[10, 10, 50, 50], [80, 10, 100, 50], [90, 10, 100, 50]]
    )


def test_scale_jitter_crop_keeps_boxes_on_their_pixels():
    """A white rectangle must stay exactly inside its box after jitter + crop, whatever the seed."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[40:80, 60:100] = 255  # box (60, 40, 100, 80)
    box = tf.constant([[60.0, 40.0, 100.0, 80.0]])
    for seed in range(6):
        out, boxes, classes, _ = aug.resize_crop_pad(
            tf.constant(image),
            box,
            tf.constant([0]),
            (128, 128),
            scale_range=(1.5, 2.0),
            seed=[seed, 1],
            min_visibility=0.0,
        )
        if classes.numpy()[0] < 0 and classes.numpy()[0] != aug.IGNORE_CLASS:
            continue  # cropped away
        ys, xs = np.nonzero(out.numpy()[..., 0] > 127)
        x1, y1, x2, y2 = boxes.numpy()[0]
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1, seed
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1, seed


def test_eager_and_tf_data_map_give_identical_results():
    rng = np.random.default_rng(0)
    example = {
        "image": tf.constant(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)),
        "boxes": tf.constant([[5.0, 5.0, 60.0, 70.0], [100.0, 10.0, 119.0, 40.0]]),
        "classes": tf.constant([1, 0]),
    }
    kwargs = dict(image_size=(128, 128), max_boxes=4, photometric=True, scale_range=(0.5, 1.5))
    seed = tf.constant([3, 4], tf.int64)
    eager = train_transform(example, seed, **kwargs)
    ds = tf.data.Dataset.from_tensors((example, seed)).map(lambda e, s: train_transform(e, s, **kwargs))
    mapped = next(iter(ds))
    for a, b in zip(eager, mapped, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    again = train_transform(example, tf.constant([3, 5], tf.int64), **kwargs)
    assert not np.array_equal(eager[0].numpy(), again[0].numpy())  # the seed matters


def test_decode_grey_and_rgba_png_to_rgb(tmp_path):
    grey = write_image(tmp_path / "g.png", 5, 7, channels=1)
    rgba = write_image(tmp_path / "c.png", 5, 7, channels=4)
    g = decode_image_tensor(tf.io.read_file(str(grey))).numpy()
    assert g.shape == (5, 7, 3) and np.array_equal(g[..., 0], cv2.imread(str(grey), cv2.IMREAD_GRAYSCALE))
    assert np.array_equal(g[..., 0], g[..., 2])
    c = decode_image_tensor(tf.io.read_file(str(rgba))).numpy()
    bgra = cv2.imread(str(rgba), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(c, bgra[..., 2::-1])
