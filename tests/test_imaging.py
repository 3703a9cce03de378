"""keras_retinanet.imaging: reading images, EXIF orientation, letterbox and mapping boxes back, image sizes."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from keras_retinanet import imaging


@pytest.mark.parametrize(
    "value, expected",
    [
        (512, (512, 512)),
        ("512", (512, 512)),
        ("384x640", (384, 640)),
        ("384X640", (384, 640)),
        ((96, 160), (96, 160)),
    ],
)
def test_parse_image_size(value, expected):
    assert imaging.parse_image_size(value) == expected


@pytest.mark.parametrize("value", ["abc", "0", 16, "1x2x3", "64x16", (), "x"])
def test_parse_image_size_rejects(value):
    with pytest.raises(ValueError, match="image size"):
        imaging.parse_image_size(value)


@pytest.mark.parametrize(
    "shape, target, expected",
    [
        # min(128 / 60, 128 / 80) = 1.6: 96 x 128, one scale for both axes.
        ((60, 80), (128, 128), (96, 128, 1.6, 1.6)),
        # Portrait into a square: min(128 / 200, 128 / 100) = 0.64 -> 128 x 64.
        ((200, 100), (128, 128), (128, 64, 0.64, 0.64)),
        # Into a rectangle: min(96 / 120, 160 / 160) = 0.8 -> 96 x 128.
        ((120, 160), (96, 160), (96, 128, 0.8, 0.8)),
        # Rounding makes the two axes' scales differ: 3 x 7 into 32: s = 32 / 7, h = round(3 s) = round(13.71)
        # = 14 -> scale_y = 14 / 3, scale_x = 32 / 7.
        ((3, 7), (32, 32), (14, 32, 14 / 3, 32 / 7)),
    ],
)
def test_letterbox_params_and_canvas(shape, target, expected):
    new_h, new_w, scale_y, scale_x = imaging.letterbox_params(*shape, target)
    assert (new_h, new_w) == expected[:2]
    assert (scale_y, scale_x) == pytest.approx(expected[2:])
    image = np.full((*shape, 3), (200, 100, 50), np.uint8)
    canvas, scales = imaging.letterbox(image, target)
    assert canvas.shape == (*target, 3) and canvas.dtype == np.uint8
    assert scales == pytest.approx(expected[2:])
    # The content sits at the top-left, the padding is zero.
    assert (canvas[:new_h, :new_w] == (200, 100, 50)).all()
    assert not canvas[new_h:].any() and not canvas[:, new_w:].any()


@pytest.mark.parametrize("shape", [(120, 160), (200, 100), (3, 7), (128, 128)])
def test_letterbox_tensor_follows_the_same_rule(shape):
    # The SavedModel letterboxes with TensorFlow ops: same sizes and scales, pixels within one grey level
    # (both are bilinear with half-pixel centres).
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    canvas, scales = imaging.letterbox(image, (128, 128))
    tensor_canvas, tensor_scales = imaging.letterbox_tensor(image.astype(np.float32), (128, 128))
    np.testing.assert_allclose(np.asarray(tensor_scales), scales, rtol=1e-6)
    difference = np.abs(np.round(np.asarray(tensor_canvas)) - canvas.astype(np.float32))
    assert difference.max() <= 1.0


@pytest.mark.parametrize("shape, slope", [((7, 3), 30.0), ((5, 8), 30.0), ((120, 160), 1.5)])
def test_stretch_samples_the_whole_image_with_corners_aligned(shape, slope):
    # MediaPipe's rule, by an independent formula: canvas pixel (x, y) is the bilinear sample of the image at
    # (x * w / W, y * h / H), the border replicated. On a ramp bilinear sampling is exact, so the only
    # differences are the output's rounding (0.5) and OpenCV's 1/32-pixel fixed point (slope / 64): under one
    # grey level for slopes up to 32. Sampling at pixel centres instead would be off by up to slope / 2.
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.round(np.stack([slope * xs, slope * ys, slope * (xs + ys) / 2], -1)).astype(np.uint8)
    canvas, scale = imaging.stretch(image, (128, 96))
    assert canvas.shape == (128, 96, 3) and canvas.dtype == np.uint8
    assert scale == pytest.approx((128 / h, 96 / w))
    sample_y = np.arange(128) * h / 128
    sample_x = np.arange(96) * w / 96
    y0, x0 = np.floor(sample_y).astype(int), np.floor(sample_x).astype(int)
    fy, fx = (sample_y - y0)[:, None, None], (sample_x - x0)[None, :, None]
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    pixels = image.astype(np.float64)
    top = pixels[y0][:, x0] * (1 - fx) + pixels[y0][:, x1] * fx
    bottom = pixels[y1][:, x0] * (1 - fx) + pixels[y1][:, x1] * fx
    expected = top * (1 - fy) + bottom * fy
    assert np.abs(canvas - expected).max() <= 1.0


def test_boxes_map_back_by_the_per_axis_scale_and_are_clipped():
    # Canvas box (20, 10, 60, 50) at scale 0.2 -> (100, 50, 300, 250); (0, 100, 50, 200) -> y 500..1000,
    # clipped to the 480-row image.
    boxes = np.array([[20, 10, 60, 50], [0, 100, 50, 200]], np.float32)
    expected = [[100, 50, 300, 250], [0, 480, 250, 480]]
    np.testing.assert_allclose(imaging.boxes_to_original(boxes, (0.2, 0.2), (480, 640)), expected)
    # Per axis: scale_y 0.5, scale_x 0.25.
    np.testing.assert_allclose(
        imaging.boxes_to_original([[10, 10, 20, 20]], (0.5, 0.25), (100, 100)), [[40, 20, 80, 40]]
    )
    batched = imaging.boxes_to_original_tensor(boxes[None], np.array([[0.2, 0.2]]), np.array([[480, 640]]))
    np.testing.assert_allclose(np.asarray(batched)[0], expected)


def test_read_image_errors_and_rgb_order(tmp_path):
    with pytest.raises(imaging.ImageReadError, match="missing.png"):
        imaging.read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(imaging.ImageReadError, match="bad.png"):
        imaging.read_image(tmp_path / "bad.png")
    with pytest.raises(imaging.ImageReadError, match="upload.bin"):
        imaging.decode_image(b"", name="upload.bin")
    # RGB order: a pure red PNG (BGR (0, 0, 255) for OpenCV) reads as (255, 0, 0).
    cv2.imwrite(
        str(tmp_path / "red.png"), np.dstack([np.zeros((4, 6)), np.zeros((4, 6)), np.full((4, 6), 255)])
    )
    assert imaging.read_image(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]


def test_grey_and_rgba_files_read_as_rgb(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    bgra = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    cv2.imwrite(str(tmp_path / "c.png"), bgra)
    np.testing.assert_array_equal(imaging.read_image(tmp_path / "g.png"), np.repeat(grey[..., None], 3, -1))
    np.testing.assert_array_equal(imaging.read_image(tmp_path / "c.png"), bgra[..., 2::-1])
    np.testing.assert_array_equal(imaging.as_rgb(grey), np.repeat(grey[..., None], 3, -1))
    np.testing.assert_array_equal(imaging.as_rgb(bgra), bgra[..., :3])
    with pytest.raises(ValueError, match="shape"):
        imaging.as_rgb(np.zeros((4, 4, 2), np.uint8))


def _jpeg_with_orientation(path, orientation: int) -> None:
    """A 6 x 10 JPEG of random pixels with an EXIF APP1 segment holding only the orientation tag."""
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8))
    raw = path.read_bytes()
    tiff = (
        b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", 1)
        + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    )
    app1 = b"\xff\xe1" + struct.pack(">H", len(tiff) + 8) + b"Exif\x00\x00" + tiff
    path.write_bytes(raw[:2] + app1 + raw[2:])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_as_an_image_viewer_shows_it(tmp_path, orientation):
    path = tmp_path / "a.jpg"
    _jpeg_with_orientation(path, orientation)
    shown = imaging.read_image(path)  # the file's own EXIF, applied by OpenCV
    stored = imaging.read_image(path, orientation=1)  # an explicit orientation ignores the file's EXIF
    assert stored.shape == (6, 10, 3)
    assert shown.shape == ((10, 6, 3) if orientation >= 5 else (6, 10, 3))
    np.testing.assert_array_equal(imaging.apply_orientation(stored, orientation), shown)
    np.testing.assert_array_equal(imaging.read_image(path, orientation=orientation), shown)
    # The TensorFlow version (training pipeline, SavedModel) gives the same pixels.
    np.testing.assert_array_equal(np.asarray(imaging.apply_orientation_tensor(stored, orientation)), shown)


def test_bad_orientation_is_refused():
    with pytest.raises(ValueError, match="1..8"):
        imaging.apply_orientation(np.zeros((2, 2, 3), np.uint8), 9)
