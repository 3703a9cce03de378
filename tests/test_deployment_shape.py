"""Training, export and the phone see one image geometry (issue 24).

MediaPipe stretches every photo to the file's input. A model trained on square letterboxes of 4:3 photos (a
quarter of each input padding) met unpadded inputs there, and its GroupNorm heads lost a third of their AP.
The default recipe trains at the photos' shape and export takes the model's shape, so the phone's input is
the training input.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_retinanet.export.geometry import export_geometry
from keras_retinanet.imaging import boxes_to_original, stretch


def _phone_detections(model, image: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a phone gets from a file of input ``shape``: the photo stretched to it, as MediaPipe does."""
    canvas, scale = stretch(image, shape)
    out = model.detect(canvas[None].astype("float32"))
    keep = np.asarray(out["classes"][0]) >= 0
    boxes = boxes_to_original(np.asarray(out["boxes"][0])[keep], scale, image.shape[:2])
    return boxes, np.asarray(out["scores"][0])[keep], np.asarray(out["classes"][0])[keep]


@pytest.mark.parametrize("image_shape", ["data", "square"])
def test_groupnorm_model_detects_on_the_phones_input_what_it_detects_in_evaluation(tmp_path, image_shape):
    """A GroupNorm model trained with the default recipe on 4:3 images: the phone's input (stretched to the
    export's default shape) gives the detections of evaluation (letterboxed to the training shape). Trained
    on square letterboxes (the earlier default), the two differ."""
    from keras_retinanet.data.synthetic import make_synthetic_coco
    from keras_retinanet.detectors import KerasDetector, load_retinanet
    from keras_retinanet.training import TrainConfig, train

    spec = make_synthetic_coco(tmp_path / "data", num_images=4, image_size=(96, 128), seed=1)
    config = TrainConfig(
        data=spec, output=str(tmp_path / "run"), epochs=1, steps_per_epoch=2, batch_size=2, image_shape=image_shape,
        precise_bn_batches=0, tensorboard=False, verbose=0,
    ).update(dict(
        backbone="mobilenet_v2", weights=None, backbone_kwargs={"alpha": 0.35}, fpn_channels=16, head_depth=1,
        image_size=128,
        score_threshold=0.0, max_detections=20,
    ))  # fmt: skip
    train(config)
    model = load_retinanet(tmp_path / "run" / "model.keras")
    assert model.use_group_norm
    expected_shape = (96, 128) if image_shape == "data" else (128, 128)
    assert model.image_size == expected_shape

    # A photo like the training images (96x128), so that the two resizes meet no interpolation difference:
    # evaluation letterboxes it into the training shape, the phone stretches it to the export's default shape.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    evaluation = KerasDetector(model, fold_batchnorm=False).detect([image])[0]
    boxes, scores, classes = _phone_detections(model, image, model.image_size)
    assert len(evaluation.scores) > 0
    same = (
        len(scores) == len(evaluation.scores)
        and np.array_equal(classes, evaluation.classes)
        and np.allclose(scores, evaluation.scores, atol=1e-5)
        and np.allclose(boxes, evaluation.boxes, atol=1e-3)
    )
    assert same == (image_shape == "data")


def test_export_warns_where_the_phone_would_not_see_the_training_geometry():
    agree = export_geometry((288, 384), (288, 384), 640 / 480)
    assert agree["warnings"] == [] and agree["export_shape"] == [288, 384]
    assert agree["runtime_resize"]["tflite"].startswith("MediaPipe Tasks and TFLiteDetector stretch")
    square_model = export_geometry((384, 384), (384, 384), 640 / 480)
    assert len(square_model["warnings"]) == 1
    assert square_model["warnings"][0].startswith("the images' aspect ratio (1.33) is not the input's (1.00)")
    reshaped = export_geometry((384, 384), (288, 384), 640 / 480)
    assert len(reshaped["warnings"]) == 1
    assert reshaped["warnings"][0].startswith("exporting at 288x384, but the model was trained at 384x384")
    assert "GroupNorm heads lost a third" in reshaped["warnings"][0]
    plain_heads = export_geometry((384, 384), (288, 384), 640 / 480, use_group_norm=False)["warnings"][0]
    assert "heads without GroupNorm lost 0.2 AP points" in plain_heads and "a third" not in plain_heads
    # BCCD's 640x480 photos at 416: the shorter side rounds to 320 (1.30 against 1.33) and is not warned about.
    assert export_geometry((320, 416), (320, 416), 640 / 480)["warnings"] == []
