"""The CI version of "proof it learns": `retinanet train` on 48 real BCCD images, through the whole product
path (VOC reader, tf.data pipeline, label encoder, focal + box loss, AdamW with warm-up and cosine, PreciseBN,
pycocotools evaluation on 12 held-out images).

The bound: three runs of exactly this configuration on this 2-core machine (seeds 0, 1, 2; see the closing
note of issue 4) reached held-out AP50 of 0.050, 0.029 and 0.061 (RBC carries it). An untrained model scores
every anchor at the 0.01 prior, below the 0.05 detection threshold, so its AP50 is 0. The asserted bound is
half the worst of the three runs: it fails when learning breaks (AP50 0), not on seed noise.
"""

import csv
import json

import pytest

from keras_retinanet.cli import main

AP50_BOUND = 0.0145


def test_short_bccd_training_learns(bccd_subset, tmp_path, shared_datasets):
    ids = (shared_datasets / "bccd" / "BCCD" / "ImageSets" / "Main" / "train.txt").read_text().split()[:48]
    root = bccd_subset(ids[:36], split="train")
    (root / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids[36:]) + "\n")
    for image_id in ids[36:]:
        for sub, ext in (("Annotations", "xml"), ("JPEGImages", "jpg")):
            source = shared_datasets / "bccd" / "BCCD" / sub / f"{image_id}.{ext}"
            (root / sub / f"{image_id}.{ext}").write_bytes(source.read_bytes())
    output = tmp_path / "run"
    code = main(
        [
            "train", "--data", f"voc:{root}:train", "--val-data", f"voc:{root}:val", "--output", str(output),
            "--backbone", "mobilenet_v2", "--backbone-kwargs", '{"alpha": 0.35}', "--fpn-channels", "64",
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
    assert summary["final_metrics"]["AP50"] > AP50_BOUND, summary["final_metrics"]
    for name in (
        "config.yaml",
        "class_names.txt",
        "model.keras",
        "checkpoints/last.keras",
        "checkpoints/best.keras",
    ):
        assert (output / name).exists(), name
    assert (output / "class_names.txt").read_text().split() == ["Platelets", "RBC", "WBC"]
    # The CSV log has the AP columns although the first epoch had no AP yet: empty until the evaluated epoch.
    with open(output / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["val_AP"] for row in rows[:-1]] == [""] * 7
    assert float(rows[-1]["val_AP50"]) == pytest.approx(summary["history"]["val_AP50"][-1])
