"""Tiled inference (keras_retinanet.detectors.tiled): tile grid, mapping back, merging, and the CLI flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
from retinanet_testing import make_detector_like, tiny_retinanet

from keras_retinanet import cli
from keras_retinanet.detectors import Detector, KerasDetector, TiledDetector
from keras_retinanet.detectors.tiled import merge_crops, tile_starts, tile_windows


def test_tile_starts_match_sahi_slices():
    # SAHI's get_slice_bboxes(1000 wide, 512, overlap 0.2): x_min 0, then 512 - 102 = 410, then the last slice
    # shifted back to end on the edge: 1000 - 512 = 488.
    assert tile_starts(1000, 512, 0.2) == [0, 410, 488]
    assert tile_starts(1024, 512, 0.0) == [0, 512]
    assert tile_starts(512, 512, 0.2) == [0] and tile_starts(300, 512, 0.2) == [0]
    assert tile_windows(100, 150, (64, 64), 0.25) == [
        (0, 0, 64, 64), (48, 0, 112, 64), (86, 0, 150, 64),
        (0, 36, 64, 100), (48, 36, 112, 100), (86, 36, 150, 100),
    ]  # fmt: skip


class _Stub(Detector):
    """In every crop: a class-0 box at (5, 5, 15, 15) and a class-1 box on the same spot, in crop pixels;
    scores rise with the call order so that the kept duplicate is known. Records crop shapes per call."""

    format = "stub"
    max_batch_size = 4

    def __init__(self):
        super().__init__(["a", "b"], None, None)
        self.calls = []
        self.count = 0

    def detect(self, images):
        self.calls.append([image.shape[:2] for image in images])
        out = []
        for image in images:
            self.count += 1
            score = 0.5 + 0.01 * self.count
            boxes = np.array([[5, 5, 15, 15], [5, 5, 15, 15]], np.float32)
            out.append(self.make_detections(boxes, [score, score / 2], [0, 1], image.shape))
        return out


def test_boxes_shift_by_tile_corner_and_merge_per_class():
    stub = _Stub()
    tiled = TiledDetector(stub, 64, 0.25, batch_size=8, max_detections=1000)
    [dets] = tiled.detect([np.zeros((100, 150, 3), np.uint8)])
    # 6 tiles and the full image, in batches of at most the stub's max_batch_size (4).
    assert stub.calls == [[(64, 64)] * 4, [(64, 64)] * 2 + [(100, 150)]]
    corners = [(0, 0), (48, 0), (86, 0), (0, 36), (48, 36), (86, 36)]
    # Tile k (1-based call order) scores 0.5 + 0.01 k; the full image (call 7, 0.57) repeats tile 1's boxes at
    # (5, 5, 15, 15) and wins the duplicate; per class, so the class-1 copies survive beside class 0.
    expected = {(0, 0.57, 5.0, 5.0)}
    expected |= {(0, 0.5 + 0.01 * k, x + 5.0, y + 5.0) for k, (x, y) in enumerate(corners, 1) if k > 1}
    expected |= {(1, 0.285, 5.0, 5.0)}
    expected |= {(1, (0.5 + 0.01 * k) / 2, x + 5.0, y + 5.0) for k, (x, y) in enumerate(corners, 1) if k > 1}
    got = {
        (int(c), round(float(s), 4), float(b[0]), float(b[1]))
        for b, s, c in zip(dets.boxes, dets.scores, dets.classes)
    }
    assert got == {(c, round(s, 4), x, y) for c, s, x, y in expected}
    np.testing.assert_allclose(dets.boxes[:, 2:] - dets.boxes[:, :2], 10.0)
    assert list(dets.scores) == sorted(dets.scores, reverse=True) and dets.image_size == (100, 150)


def test_merge_suppresses_across_crops_only():
    # A and B (crop 0) overlap by IoU 0.6: both come from one model run, whose decoder already did NMS: kept.
    # C (crop 1) overlaps A by IoU 0.6: a duplicate from another crop, suppressed. D: same box, other class.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 6], [0, 4, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    keep = merge_crops(boxes, scores, np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), 0.5)
    assert keep.tolist() == [0, 1, 3]
    keep = merge_crops(boxes, scores, np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), 0.65)
    assert keep.tolist() == [0, 1, 2, 3]


def test_bad_tile_options_are_refused():
    with pytest.raises(ValueError, match="tile overlap must be in"):
        TiledDetector(_Stub(), 64, 1.0)
    with pytest.raises(ValueError, match="tile size: image size must be N or HxW with sides >= 32"):
        TiledDetector(_Stub(), 0)
    assert TiledDetector(_Stub(), "480x640").tile_size == (480, 640)
    assert TiledDetector(_Stub(), 64).max_detections == 100  # no setting anywhere: the paper's 100
    assert tile_windows(960, 1280, (480, 640), 0.2) == [
        (x, y, x + 640, y + 480) for y in (0, 384, 480) for x in (0, 512, 640)
    ]


@pytest.fixture(scope="module")
def detector_like(tmp_path_factory):
    """A tiny RetinaNet (input 128) with varied detections on two synthetic 120x160 images, saved as .keras."""
    import keras

    from keras_retinanet.imaging import letterbox

    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(2)]
    model = tiny_retinanet(3, class_names=["x", "y", "z"], image_size=128)
    make_detector_like(model, np.stack([letterbox(im, 128)[0] for im in images]).astype(np.float32))
    path = tmp_path_factory.mktemp("tiled") / "model.keras"
    model.save(path)
    return model, images, path


@pytest.mark.parametrize("runtime", ["keras", "tflite"])
def test_one_tile_covering_the_image_gives_the_untiled_detections(detector_like, tmp_path, runtime):
    """The tiling runs any runtime: a .tflite (fixed input, one image per call) through the same wrapper."""
    from keras_retinanet.detectors import TFLiteDetector
    from keras_retinanet.export import convert_tflite

    model, images, _ = detector_like
    if runtime == "tflite":
        (tmp_path / "model.tflite").write_bytes(convert_tflite(model, "float32"))

    def detector():
        if runtime == "keras":
            return KerasDetector(model)
        return TFLiteDetector(str(tmp_path / "model.tflite"), class_names=["x", "y", "z"], num_threads=1)

    plain = detector().detect(images)
    tiled_detector = TiledDetector(detector(), tile_size=200)
    assert tiled_detector.max_detections == model.decoder.max_detections
    tiled = tiled_detector.detect(images)
    assert all(len(d) > 5 for d in plain)
    for a, b in zip(plain, tiled, strict=True):
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-6)
        np.testing.assert_array_equal(b.classes, a.classes)


def test_predict_takes_tile_flags(detector_like, tmp_path, capsys):
    import cv2

    _, images, path = detector_like
    cv2.imwrite(str(tmp_path / "0.png"), images[0][:, :, ::-1])
    common = ["predict", str(path), str(tmp_path / "0.png"), "--no-draw", "--no-progress"]
    common += ["--score-threshold", "0.05"]
    outputs = {}
    for name, flags in (
        ("plain", []),
        ("one", ["--tile", "200"]),
        ("grid", ["--tile", "64", "--tile-overlap", "0.5"]),
    ):
        capsys.readouterr()
        assert cli.main([*common, "--out", str(tmp_path / name), *flags]) == 0
        outputs[name] = json.loads((tmp_path / name / "detections.json").read_text())
    assert (
        "tiled inference: a 160x120 image is cut into 12 tiles of 64x64 (overlap 0.5) + the full image: 13 model "
        "runs per image" in capsys.readouterr().err
    )
    assert outputs["one"] == outputs["plain"]  # one tile covering the image: the same detections
    assert outputs["grid"] != outputs["plain"]  # 4 x 3 tiles of 64 px and the full image
    assert cli.main([*common, "--out", str(tmp_path / "bad"), "--tile", "64", "--tile-overlap", "1.5"]) == 2
    assert "tile overlap must be in [0, 1)" in capsys.readouterr().err
    # 32 px tiles moved by 2 px: 65 x 45 tiles for this small image (60,695 for a phone photo).
    code = cli.main([*common, "--out", str(tmp_path / "absurd"), "--tile", "32", "--tile-overlap", "0.95"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        "retinanet predict: error: --tile 32x32 with --tile-overlap 0.95 cuts a 160x120 image into 2925 tiles "
        "(at most 256): use larger tiles or less overlap"
    )
