"""``retinanet data check`` / ``data show`` on both shared sets (subsets in tmp; full sets slow)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from keras_retinanet.cli.data import GT_COLOUR, POSITIVE_COLOUR
from keras_retinanet.cli.retinanet import main


def test_check_bccd_reports_problem_counts_and_coverage(bccd_subset, tmp_path, capsys):
    root = bccd_subset(["BloodImage_00003", "BloodImage_00338"])
    out = tmp_path / "check.json"
    # A zero-area box: a problem, so exit code 1 (0 with --no-strict); the report is written either way.
    assert main(["data", "check", f"voc:{root}:train", "--json", str(out), "--iterations", "40"]) == 1
    assert main(["data", "check", f"voc:{root}:train", "--no-optimize", "--no-strict"]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 2 and report["problems"] == {"box_zero_area": 1}
    assert report["class_names"] == ["Platelets", "RBC", "WBC"]
    assert sum(report["boxes_per_class"].values()) == sum(report["coverage"]["counts_per_class"].values())
    assert 0.9 < report["coverage"]["overall"] <= 1.0
    assert (
        report["anchors"] and len(report["anchors"]["scales"]) == 3 and len(report["anchors"]["sizes"]) == 5
    )
    text = capsys.readouterr().out
    assert "BloodImage_00338.xml: object 12 (RBC)" in text and "suggested" in text


def test_check_chess_lists_classes_and_negative(chess_split, tmp_path):
    out = tmp_path / "check.json"
    assert (
        main(["data", "check", f"coco:{chess_split('test', limit=4)}", "--no-optimize", "--json", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    assert report["negatives"] == 1 and report["boxes_per_class"]["bishop"] == 0
    assert len(report["class_names"]) == 13 and report["problems"] == {}


@pytest.mark.parametrize("dataset", ["bccd", "chess"])
def test_show_draws_ground_truth_and_anchors(dataset, bccd_subset, chess_split, tmp_path, capsys):
    spec = (
        f"voc:{bccd_subset(['BloodImage_00003'])}:train"
        if dataset == "bccd"
        else f"coco:{chess_split('test', limit=1)}"
    )
    out = tmp_path / "show"
    assert main(["data", "show", spec, "--out", str(out), "--num", "2", "--image-size", "256"]) == 0
    files = sorted(out.glob("*.png"))
    assert 1 <= len(files) <= 2
    image = cv2.imread(str(files[0]))
    # The shape `retinanet train --image-size 256` trains at: 640x480 photos -> 192x256, 640x428 -> 160x256.
    assert image.shape == ((192, 256, 3) if dataset == "bccd" else (160, 256, 3))
    # Ground-truth and positive-anchor colours are both present.
    for colour in (GT_COLOUR, POSITIVE_COLOUR):
        assert np.all(image == np.array(colour, np.uint8), axis=-1).sum() > 20, colour
    assert "positive" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["voc:{d}/bccd/BCCD", "coco:{d}/chess640/train/_annotations.coco.json"])
def test_check_full_shared_sets(shared_datasets, spec, tmp_path):
    out = tmp_path / "check.json"
    # BCCD has two zero-area boxes: found problems, exit code 1.
    assert main(["data", "check", spec.format(d=shared_datasets), "--json", str(out)]) == (
        1 if "bccd" in spec else 0
    )
    report = json.loads(out.read_text())
    assert report["suggested_coverage"]["overall"] >= report["coverage"]["overall"]
    if "bccd" in spec:
        assert report["images"] == 364 and report["problems"] == {"box_zero_area": 2}
        assert report["boxes_per_class"] == {"Platelets": 361, "RBC": 4153, "WBC": 372}
    else:
        assert report["images"] == 202 and report["boxes_per_class"]["bishop"] == 1
