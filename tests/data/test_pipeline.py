"""The tf.data pipelines: targets agree with the ground truth, determinism, mapping back."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from data_testing import write_voc

from keras_retinanet.data import load_dataset
from keras_retinanet.data.pipeline import make_inference_dataset, make_training_dataset, restore_boxes
from keras_retinanet.model.anchors import AnchorGenerator
from keras_retinanet.model.targets import LabelEncoder

SIZE = 128


@pytest.fixture
def tiny(tmp_path):
    root = write_voc(
        tmp_path / "voc",
        {
            f"im{i}": [("cat", (1 + 3 * i, 1, 30 + 3 * i, 40), False), ("dog", (40, 10, 60, 30), i == 1)]
            for i in range(5)
        }
        | {"empty": []},
        size=(64, 48),
    )
    return load_dataset(f"voc:{root}:train")


def _first(ds):
    images, targets = next(iter(ds))
    return images.numpy(), {k: v.numpy() for k, v in targets.items()}


def test_training_batches_encode_the_scaled_ground_truth(tiny):
    encoder = LabelEncoder()
    ds = make_training_dataset(tiny, encoder, image_size=SIZE, batch_size=2, augment=False, shuffle=False)
    images, targets = _first(ds)
    anchors = encoder.anchor_generator(image_shape=(SIZE, SIZE))
    assert images.shape == (2, SIZE, SIZE, 3) and images.dtype == np.float32 and images.max() <= 255
    assert targets["classification"].shape == (2, anchors.shape[0])
    assert targets["box_regression"].shape == (2, anchors.shape[0], 5)
    # Image 0 (64x48, scale 2): cat (0, 0, 30, 40) -> (0, 0, 60, 80); dog (39, 9, 60, 30) -> (78, 18, 120, 60)
    cls, reg = targets["classification"][0], targets["box_regression"][0]
    positive = cls >= 0
    assert set(cls[positive].tolist()) == {0, 1}
    decoded = encoder.box_coder.decode(tf.boolean_mask(anchors, positive), reg[positive, :4]).numpy()
    expected = np.where((cls[positive] == 0)[:, None], [[0, 0, 60, 80]], [[78, 18, 120, 60]])
    np.testing.assert_allclose(decoded, expected, atol=1e-3)
    np.testing.assert_array_equal(reg[..., 4], cls.astype(np.float32))
    # Image 1's dog is "difficult": no anchor is positive for class 1, the ones on it are ignored (-2).
    assert 1 not in targets["classification"][1] and (targets["classification"][1] == -2).any()


def test_seed_makes_it_deterministic_and_epochs_differ(tiny):
    encoder = LabelEncoder()

    def make(cache):
        return make_training_dataset(
            tiny,
            encoder,
            image_size=SIZE,
            batch_size=3,
            seed=7,  # noqa: E731
            cache=cache,
        )

    ds = make(False)
    epoch1 = [b[0].numpy() for b in ds]
    epoch2 = [b[0].numpy() for b in ds]
    again = [b[0].numpy() for b in make(True)]
    assert len(epoch1) == 2  # 6 images, drop_remainder
    for a, b in zip(epoch1, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(epoch1, epoch2, strict=True))
    # Fixed parallelism instead of tf.data's autotuner, which left some epochs on one core (pipeline.py).
    assert ds.options().autotune.enabled is False and ds.options().deterministic is True


def test_inference_meta_maps_boxes_back(tiny):
    batches = list(make_inference_dataset(tiny, image_size=SIZE, batch_size=4))
    images, meta = batches[0]
    assert images.shape == (4, SIZE, SIZE, 3) and meta["image_id"].numpy().tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(meta["scale"].numpy(), [[2.0, 2.0]] * 4)
    np.testing.assert_array_equal(meta["original_size"].numpy(), [[48, 64]] * 4)
    network = tf.constant([[[0.0, 0.0, 60.0, 80.0], [78.0, 18.0, 200.0, 60.0]]] * 4)
    restored = restore_boxes(network, meta).numpy()
    np.testing.assert_allclose(restored[0], [[0, 0, 30, 40], [39, 9, 64, 30]])  # clipped to the image


def test_custom_anchor_generator_is_used(tiny):
    encoder = LabelEncoder(AnchorGenerator(scales=(1.0,), aspect_ratios=(1.0,)))
    _, targets = _first(make_training_dataset(tiny, encoder, image_size=SIZE, batch_size=2, seed=0))
    assert targets["classification"].shape[1] == AnchorGenerator(
        scales=(1.0,), aspect_ratios=(1.0,)
    ).num_anchors((SIZE, SIZE))
