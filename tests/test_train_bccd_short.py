"""The CI version of "proof it learns": `retinanet train` on 32 real BCCD images, through the whole product
path (VOC reader, tf.data pipeline, label encoder, focal + box loss, AdamW with warm-up and cosine, PreciseBN,
pycocotools evaluation on 8 held-out images).

What "learns" means here, with no bound taken from earlier runs: the training loss falls by half, and on the
8 held-out images the trained model's loss (focal + box, the training objective) is less than half that of the
same network untrained (same configuration and seed, so the same initial weights). 48 steps on 24 images
cannot give a useful AP, so AP is only required to be above zero (the untrained model scores every anchor at the
0.01 prior, below the decoder's 0.05 threshold, and detects nothing) and to be the saved model's AP.
"""

import csv
import json

import pytest
from retinanet_testing import BCCD_FIXTURES, keras_detections_by_hand

from keras_retinanet.cli.retinanet import main


def _held_out_batches(config, val_data, label_encoder) -> list:
    """The validation images as training batches (unaugmented, at the training size): [(images, targets)]."""
    from keras_retinanet.data.pipeline import make_training_dataset

    dataset = make_training_dataset(
        val_data,
        label_encoder,
        image_size=config.model.image_size,
        batch_size=6,
        augment=False,
        shuffle=False,
    )
    return list(dataset)


def _held_out_loss(model, config, batches) -> dict:
    """Focal and box loss (the training objective, eagerly, inference-mode BatchNorm), averaged over batches."""
    import numpy as np

    losses = config.model.losses()
    totals = {name: [] for name in losses}
    for images, targets in batches:
        outputs = model(images, training=False)
        for name, loss in losses.items():
            totals[name].append(float(loss(targets[name], outputs[name])))
    result = {f"{name}_loss": float(np.mean(values)) for name, values in totals.items()}
    result["loss"] = sum(result.values())
    return result


def test_short_bccd_training_learns(bccd_subset, tmp_path):
    # The first 32 ids of BCCD's train split, vendored in tests/fixtures: 24 to train on, 8 held out.
    ids = (BCCD_FIXTURES / "ImageSets" / "Main" / "train.txt").read_text().split()
    assert len(ids) == 32
    root = bccd_subset(ids[:24], split="train")
    (root / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids[24:]) + "\n")
    for image_id in ids[24:]:
        for sub, ext in (("Annotations", "xml"), ("JPEGImages", "jpg")):
            source = BCCD_FIXTURES / sub / f"{image_id}.{ext}"
            (root / sub / f"{image_id}.{ext}").write_bytes(source.read_bytes())
    output = tmp_path / "run"
    code = main(
        [
            "train", "--data", f"voc:{root}:train", "--val-data", f"voc:{root}:val", "--output", str(output),
            "--backbone", "mobilenet_v2", "--weights", "none", "--backbone-kwargs", '{"alpha": 0.35}',
            "--fpn-channels", "64",
            "--head-depth", "2", "--image-size", "256", "--batch-size", "6", "--epochs", "8",
            "--steps-per-epoch", "6", "--optimizer", "adamw", "--learning-rate", "0.002", "--weight-decay", "0.0001",
            "--schedule", "cosine", "--warmup-steps", "6", "--eval-every", "8", "--no-tensorboard", "--skip-bad",
            "--verbose", "0",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((output / "train_summary.json").read_text())
    losses = summary["history"]["loss"]
    assert losses[-1] < losses[0] / 2, losses
    # The held-out loss of the trained model against the same network untrained.
    import keras

    from keras_retinanet.data import load_dataset
    from keras_retinanet.detectors import load_retinanet
    from keras_retinanet.training import TrainConfig

    config = TrainConfig.from_yaml(output / "config.yaml")
    val_data = load_dataset(f"voc:{root}:val", skip_bad=True, class_names=["Platelets", "RBC", "WBC"])
    trained_model = load_retinanet(output / "model.keras")
    batches = _held_out_batches(config, val_data, trained_model.label_encoder())
    keras.utils.set_random_seed(config.seed)
    untrained = _held_out_loss(config.model.build(val_data.class_names), config, batches)
    trained = _held_out_loss(trained_model, config, batches)
    assert trained["loss"] < untrained["loss"] / 2, (trained, untrained)
    assert trained["classification_loss"] < untrained["classification_loss"] / 2, (trained, untrained)
    assert trained["box_regression_loss"] < untrained["box_regression_loss"], (trained, untrained)
    # The summary's final metrics are those of the saved model on the held-out images: its detections worked out
    # by hand (letterbox to 192 x 256, model.detect, boxes back to the photo) scored against the VOC ground truth.
    # Above zero: the untrained network detects nothing above the 0.05 threshold.
    from keras_retinanet import evaluation
    from keras_retinanet.imaging import read_image

    size = trained_model.image_size
    assert size == (192, 256)  # the photos' 4:3 with the longer side 256, as the plan says
    reference = [
        keras_detections_by_hand(trained_model, read_image(e["image_path"]), size) for e in val_data.examples
    ]
    expected = evaluation.evaluate_detections(val_data.examples, reference, val_data.class_names)
    assert expected["AP50"] > 0, expected
    for key in ("AP", "AP50", "AR100"):
        # Not bit for bit: KerasDetector folds BatchNorm into the convolutions, which moves scores by ~1e-6.
        assert summary["final_metrics"][key] == pytest.approx(expected[key], rel=0.01, abs=1e-4), (
            key,
            expected,
        )
    for name in (
        "config.yaml",
        "labels.txt",
        "model.keras",
        "checkpoints/last.keras",
        "checkpoints/best.keras",
    ):
        assert (output / name).exists(), name
    assert (output / "labels.txt").read_text().split() == ["Platelets", "RBC", "WBC"]
    # The CSV log has the AP columns although the first epoch had no AP yet: empty until the evaluated epoch.
    with open(output / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["val_AP"] for row in rows[:-1]] == [""] * 7
    assert float(rows[-1]["val_AP50"]) == pytest.approx(summary["history"]["val_AP50"][-1])
