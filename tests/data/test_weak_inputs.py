"""Inputs that used to be read wrongly or reported vaguely: each now reads right or gets a one-line error that
names the value and the fix."""

from __future__ import annotations

import pytest
from data_testing import write_image

from keras_retinanet.cli.retinanet import main
from keras_retinanet.data import DataError, load_dataset
from keras_retinanet.data.images import ImageError, inspect_image
from keras_retinanet.model.decode import DetectionDecoder


def yolo_set(root, names_yaml: str, label: bytes = b"0 0.5 0.5 0.25 0.25\n") -> str:
    write_image(root / "images" / "train" / "a.jpg")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_bytes(label)
    (root / "data.yaml").write_text(f"names: {names_yaml}\ntrain: images/train\n")
    return f"yolo:{root / 'data.yaml'}:train"


def test_yaml_class_names_no_and_off_stay_names(tmp_path):
    dataset = load_dataset(yolo_set(tmp_path, "[no, off, yes, on]"))
    assert dataset.class_names == ["no", "off", "yes", "on"]


def test_a_yaml_boolean_name_is_an_error_that_says_quote_it(tmp_path):
    with pytest.raises(DataError, match=r"names\[1\] is the YAML boolean False: quote it"):
        load_dataset(yolo_set(tmp_path, "[cat, false]"))


def test_a_utf8_bom_in_a_label_file_is_not_a_class_id(tmp_path):
    dataset = load_dataset(yolo_set(tmp_path, "[cat]", label=b"\xef\xbb\xbf0 0.5 0.5 0.25 0.25\n"))
    assert len(dataset.skipped) == 0 and len(dataset.examples[0]["boxes"]) == 1


def test_a_zero_byte_image_is_called_empty(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty file \(0 bytes\)"):
        inspect_image(str(tmp_path / "a.jpg"))


@pytest.mark.parametrize("value", ["-1", "2"])
def test_score_threshold_outside_0_1_is_a_usage_error(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(tmp_path / "m.keras"), str(tmp_path), "--score-threshold", value])
    assert stop.value.code == 2
    assert f"--score-threshold: {value} is not a score from 0 to 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"score_threshold": 2.0}, "score_threshold 2 is not from 0 to 1"),
        ({"nms_iou_threshold": -0.5}, "nms_iou_threshold -0.5 is not from 0 to 1"),
        ({"max_detections": 0}, "max_detections 0 must be at least 1"),
    ],
)
def test_decoder_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DetectionDecoder(**kwargs)
