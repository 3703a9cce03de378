"""``--anchors auto|given|FILE``: the fit against brute force, the decision, files, run folder and model."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_retinanet.cli.retinanet import main
from keras_retinanet.data import anchor_stats as st
from keras_retinanet.data.dataset import Dataset
from keras_retinanet.data.validation import SkipReport
from keras_retinanet.model.anchors import PAPER_SIZES, AnchorGenerator
from keras_retinanet.training import TrainConfig, train
from keras_retinanet.training.anchors import read_anchor_file, resolve_anchors
from keras_retinanet.training.run_folder import plan_run

SIZE = (256, 256)


def _squares(side: float, count: int = 300, seed: int = 0) -> np.ndarray:
    """``count`` side x side boxes at random sub-pixel positions inside a SIZE image, xyxy."""
    xy = np.random.default_rng(seed).uniform(0, SIZE[0] - side, (count, 2))
    return np.concatenate([xy, xy + side], -1).astype(np.float32)


def _dataset(boxes: np.ndarray, classes: np.ndarray, class_names: list[str]) -> Dataset:
    """One SIZE image per 10 boxes (the network size: no resize)."""
    examples = [
        {"image_path": f"{i}.jpg", "image_id": i, "boxes": boxes[i : i + 10], "classes": classes[i : i + 10],
         "ignore": np.zeros(len(boxes[i : i + 10]), bool), "height": SIZE[0], "width": SIZE[1], "orientation": 1}
        for i in range(0, len(boxes), 10)
    ]  # fmt: skip
    return Dataset(examples, class_names, SkipReport())


def _brute_force_coverage(boxes, classes, names, generator) -> st.Coverage:
    return st.coverage(st.best_anchor_iou(boxes, generator, SIZE), classes, boxes, names, 0.5)


def test_size_factor_is_the_brute_force_best():
    """With no scale / ratio search, the fitted sizes are the grid factor that brute force scores best."""
    boxes, classes = _squares(20), np.zeros(300, np.int32)
    generator = AnchorGenerator()
    found = st.optimize_anchors(boxes, classes, ["cell"], generator, SIZE, iterations=0)
    scores = {
        exponent: _brute_force_coverage(
            boxes, classes, ["cell"], AnchorGenerator(sizes=[s * 2.0**exponent for s in PAPER_SIZES])
        ).objective()
        for exponent in st.SIZE_FACTOR_EXPONENTS
    }
    best = max(scores.values())
    # Ties go to the factor nearest 1.
    expected = min((e for e, v in scores.items() if v == best), key=abs)
    np.testing.assert_allclose(found.sizes, [s * 2.0**expected for s in PAPER_SIZES], rtol=1e-6)
    assert found.scales == pytest.approx(generator.scales) and found.aspect_ratios == [0.5, 1.0, 2.0]


def test_boxes_of_one_tiny_size_get_anchors_that_cover_them():
    """20 px squares: no paper anchor reaches IoU 0.5 (at best 20^2 / 32^2 = 0.39); fitted ones cover them,
    with anchors under 32 px on P3, as brute force over every anchor confirms."""
    boxes, classes = _squares(20), np.zeros(300, np.int32)
    assert _brute_force_coverage(boxes, classes, ["cell"], AnchorGenerator()).overall == 0.0
    found = st.optimize_anchors(boxes, classes, ["cell"], AnchorGenerator(), SIZE, iterations=60)
    assert min(found.sizes) * min(found.scales) < 32
    after = _brute_force_coverage(boxes, classes, ["cell"], found.generator(AnchorGenerator()))
    assert after.overall >= 0.95


def test_auto_keeps_anchors_that_cover_every_class_and_fits_an_uncovered_one():
    big = _squares(64, 100, seed=1)
    covered = _dataset(big, np.zeros(100, np.int32), ["cell"])
    config = TrainConfig(anchors="auto").update({"image_size": SIZE[0]})
    kept, report = resolve_anchors(config, covered)
    assert kept == config and report["fitted"] is False and report["before"]["per_class"]["cell"] == 1.0

    boxes = np.concatenate([big, _squares(20, 100, seed=2)])
    classes = np.repeat(np.array([0, 1], np.int32), 100)
    fitted, report = resolve_anchors(config, _dataset(boxes, classes, ["big", "small"]))
    assert report["fitted"] is True and report["reason"] == "under-covered: small 0.0%"
    assert report["before"]["per_class"] == {"big": 1.0, "small": 0.0}
    assert min(report["after"]["per_class"].values()) >= 0.95
    assert list(fitted.model.anchor_sizes) == report["anchors"]["sizes"]
    # Everything but the fitted shapes is the configuration given.
    assert fitted.update({"anchor_sizes": PAPER_SIZES, "anchor_scales": config.model.anchor_scales,
                          "anchor_aspect_ratios": config.model.anchor_aspect_ratios}) == config  # fmt: skip


def test_paper_is_the_configuration_as_given():
    config = TrainConfig(anchors="given").update({"anchor_sizes": (16, 32, 64, 128, 256)})
    assert resolve_anchors(config, _dataset(_squares(20, 10), np.zeros(10, np.int32), ["cell"])) == (
        config,
        None,
    )


def test_anchor_files_are_checked_with_the_file_named(tmp_path):
    missing = tmp_path / "none.json"
    with pytest.raises(ValueError, match=f"--anchors {missing}: no such file"):
        read_anchor_file(str(missing))
    bad = tmp_path / "bad.json"
    bad.write_text('{"anchors": {"sizes": [1, 2, 3, 4, 5]}}')
    with pytest.raises(ValueError, match=f'--anchors {bad}: "anchors" lacks scales, aspect_ratios'):
        read_anchor_file(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match='no "anchors" mapping'):
        read_anchor_file(str(bad))
    with pytest.raises(ValueError, match=f"--anchors {bad} with --init m.keras"):
        resolve_anchors(TrainConfig(anchors=str(bad), init="m.keras"), None)
    # auto, the default, keeps the init model's anchors: nothing is fitted, nothing refused.
    config = TrainConfig(anchors="auto", init="m.keras")
    assert resolve_anchors(config, None) == (config, None)


def test_data_check_json_is_read_by_train_anchors_file(tmp_path, capsys):
    """`data check --json FILE` -> `retinanet train --anchors FILE`: the suggested shapes, as printed."""
    from keras_retinanet.cli.retinanet import build_parser
    from keras_retinanet.cli.train import resolve_config
    from keras_retinanet.data.synthetic import make_synthetic_coco

    spec = make_synthetic_coco(tmp_path / "data", num_images=6, image_size=128, min_size=8, seed=3)
    report_file = tmp_path / "check.json"
    assert (
        main(["data", "check", spec, "--image-size", "128", "--iterations", "20", "--json", str(report_file)])
        == 0
    )
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("   or: retinanet train"))
    config = resolve_config(
        build_parser().parse_args(["train", *line.split("retinanet train", 1)[1].split()])
    )
    assert config.anchors == str(report_file)
    shapes = json.loads(report_file.read_text())["anchors"]
    resolved, _ = resolve_anchors(config, None)
    assert (
        list(resolved.model.anchor_sizes) == shapes["sizes"]
        and list(resolved.model.anchor_scales) == shapes["scales"]
    )
    assert list(resolved.model.anchor_aspect_ratios) == shapes["aspect_ratios"]


def test_auto_is_recorded_in_the_run_folder_and_the_model_and_kept_on_resume(tmp_path, capsys):
    from keras_retinanet.data.synthetic import make_synthetic_coco
    from keras_retinanet.detectors import load_retinanet

    spec = make_synthetic_coco(tmp_path / "data", num_images=8, image_size=128, min_size=12, seed=1)
    output = tmp_path / "run"
    config = TrainConfig(
        data=spec, output=str(output), anchors="auto", epochs=1, steps_per_epoch=1, batch_size=2,
        warmup_steps=0, precise_bn_batches=0, tensorboard=False, verbose=0,
    ).update({"backbone": "mobilenet_v2", "weights": None, "backbone_kwargs": {"alpha": 0.35}, "fpn_channels": 16,
              "head_depth": 1, "image_size": 64})  # fmt: skip
    assert train(config)["finished"]
    assert "anchors (under-covered:" in capsys.readouterr().out
    report = json.loads((output / "anchors.json").read_text())
    saved = TrainConfig.from_yaml(output / "config.yaml")
    assert saved.anchors == "auto" and report["fitted"] is True
    assert list(saved.model.anchor_sizes) == report["anchors"]["sizes"] != list(PAPER_SIZES)
    generator = load_retinanet(output / "model.keras").anchor_generator
    assert generator.sizes == report["anchors"]["sizes"] and generator.scales == report["anchors"]["scales"]
    assert generator.aspect_ratios == report["anchors"]["aspect_ratios"]
    # The same command, made longer, continues with the fitted anchors (not "anchor_sizes cannot change").
    longer = config.update({"epochs": 2})
    assert plan_run(longer, allow_changes="epochs").changes == {"epochs": (1, 2)}
    summary = train(longer, allow_changes="epochs")
    assert summary["resumed_from_epoch"] == 1 and summary["finished"]
    assert TrainConfig.from_yaml(output / "config.yaml").model == saved.model
    assert json.loads((output / "anchors.json").read_text()) == report  # the fit's report, not overwritten
    keras.backend.clear_session()


@pytest.mark.parametrize("matching", ["iou", "atss"])
def test_diagnosis_counts_the_positives_the_label_encoder_makes(tmp_path, capsys, matching):
    """tools/diagnose_anchors.py on real BCCD images: positives per class add up to the label encoder's."""
    import sys
    from pathlib import Path

    from retinanet_testing import copy_bccd_subset

    from keras_retinanet.data import load_dataset
    from keras_retinanet.imaging import letterbox_params

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import diagnose_anchors

    root = copy_bccd_subset(tmp_path, ["BloodImage_00003", "BloodImage_00007"])
    spec = f"voc:{root}:train"
    assert diagnose_anchors.main(["--data", spec, "--image-size", "384", "--matching", matching]) == 0
    rows = {line.split("|")[1].strip(): line.split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "class" not in line}  # fmt: skip
    config = TrainConfig().update({"image_size": 384, "matching": matching, "weights": None}).model
    encoder = config.build(["Platelets", "RBC", "WBC"]).label_encoder()
    expected = np.zeros(3, int)
    for example in load_dataset(spec).examples:
        _, _, sy, sx = letterbox_params(example["height"], example["width"], (384, 384))
        boxes = example["boxes"] * np.array([sx, sy, sx, sy], np.float32)
        targets = np.asarray(encoder.encode((384, 384), boxes, example["classes"])["classification"])
        expected += np.bincount(targets[targets >= 0], minlength=3)
    for k, name in enumerate(["Platelets", "RBC", "WBC"]):
        boxes, per_box = int(rows[name][2]), float(rows[name][6])
        assert per_box * boxes == pytest.approx(expected[k], abs=0.05 * boxes + 1e-9)


def test_data_check_advises_atss_for_an_under_covered_class(tmp_path, capsys):
    """A class under 95% covered gets the advice, in flags that `retinanet train` parses as printed."""
    from keras_retinanet.cli.retinanet import build_parser
    from keras_retinanet.cli.train import resolve_config
    from keras_retinanet.data.synthetic import make_synthetic_coco

    spec = make_synthetic_coco(tmp_path / "data", num_images=6, image_size=128, min_size=4, seed=3)
    main(["data", "check", spec, "--image-size", "128", "--no-optimize", "--no-strict"])
    advice = [line for line in capsys.readouterr().out.splitlines() if "--matching atss" in line]
    assert len(advice) == 1 and "under 95% covered" in advice[0]
    flags = advice[0].split("train with ", 1)[1].split(" (")[0].split()
    assert "the default recipe fits anchors and matches with ATSS" in advice[0]
    config = resolve_config(build_parser().parse_args(["train", "--recipe", "paper", *flags]))
    assert (config.anchors, config.model.matching, config.model.use_group_norm) == ("auto", "atss", True)
