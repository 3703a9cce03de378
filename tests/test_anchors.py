import math

import numpy as np
import pytest

from keras_retinanet import AnchorGenerator


def test_paper_defaults_count_for_512():
    generator = AnchorGenerator()
    assert generator.num_anchors_per_location == 9
    # (64^2 + 32^2 + 16^2 + 8^2 + 4^2) cells x 9 anchors
    assert generator.num_anchors((512, 512)) == 49_104
    assert tuple(generator(image_shape=(512, 512)).shape) == (49_104, 4)


def test_first_anchors_worked_by_hand():
    anchors = np.asarray(AnchorGenerator(offset=0.5)(image_shape=(64, 64)))
    # P3, cell (0, 0): centre (4, 4). Ratio 0.5 (h/w), scale 1: w = 32 / sqrt(0.5) = 45.2548, h = 22.6274.
    w, h = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
    np.testing.assert_allclose(anchors[0], [4 - w / 2, 4 - h / 2, 4 + w / 2, 4 + h / 2], rtol=1e-6)
    # Anchor 4 of the cell is ratio 1, scale 2^(1/3): a square of side 32 * 2^(1/3) = 40.3175.
    side = 32 * 2 ** (1 / 3)
    np.testing.assert_allclose(
        anchors[4], [4 - side / 2, 4 - side / 2, 4 + side / 2, 4 + side / 2], rtol=1e-6
    )
    # The next cell is one stride (8 px) to the right: same anchors shifted in x only.
    np.testing.assert_allclose(anchors[9] - anchors[0], [8, 0, 8, 0], atol=1e-5)
    # P3 of a 64x64 image has 8x8 cells; the first P4 anchor is centred at (8, 8) with base size 64.
    first_p4 = anchors[8 * 8 * 9]
    w4, h4 = 64 / math.sqrt(0.5), 64 * math.sqrt(0.5)
    np.testing.assert_allclose(first_p4, [8 - w4 / 2, 8 - h4 / 2, 8 + w4 / 2, 8 + h4 / 2], rtol=1e-6)


def test_offset_zero_and_torchvision_rounding():
    generator = AnchorGenerator(offset=0.0, round_sizes=True)
    anchors = np.asarray(generator(image_shape=(128, 128)))
    # torchvision: scale 2^(1/3) on size 32 is int(40.3) = 40; ratio 1 -> corners round(+-20).
    np.testing.assert_array_equal(anchors[4], [-20, -20, 20, 20])
    # ratio 0.5, scale 2^(2/3): int(50.8) = 50, w = 50 / sqrt(.5) = 70.71 -> round(35.36) = 35, h -> round(17.68) = 18
    np.testing.assert_array_equal(anchors[2], [-35, -18, 35, 18])


def test_feature_shapes_round_up():
    assert AnchorGenerator().feature_shapes((500, 333)) == [(63, 42), (32, 21), (16, 11), (8, 6), (4, 3)]


def test_sizes_must_match_levels():
    with pytest.raises(ValueError, match="one size per level"):
        AnchorGenerator(sizes=(32, 64))


def test_config_round_trip():
    generator = AnchorGenerator(
        sizes=(16, 32, 64, 128, 256), scales=(1.0, 1.5), aspect_ratios=(1.0,), offset=0.0
    )
    clone = AnchorGenerator.from_config(generator.get_config())
    np.testing.assert_array_equal(
        np.asarray(clone(image_shape=(96, 64))), np.asarray(generator(image_shape=(96, 64)))
    )
