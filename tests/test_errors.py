"""One error path for every command (issue 13, groups 4-6): known problems print one line on stderr with a
documented exit code, ``--debug`` adds the traceback, bugs keep theirs; bad data and bad model arguments get
messages in our words. Each case below crashed with a traceback, or exited 0, before."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from keras_retinanet import cli
from keras_retinanet.cli.retinanet import (
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_FAILED_ITEMS,
    EXIT_INTERRUPTED,
    main,
    run_command,
)
from keras_retinanet.data import DataError, load_dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "data"))  # where tests/data's helpers live
from data_testing import write_image, write_voc  # noqa: E402


def _one_error_line(err: str, command: str) -> str:
    """The single line a known error prints; fails on tracebacks or extra lines."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"retinanet {command}: error: "), lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------------------------
# The error path itself (no TensorFlow)


def _args(run, command="data", debug=False, **extra) -> argparse.Namespace:
    return argparse.Namespace(run=run, command=command, debug=debug, **extra)


def _raise(error: BaseException):
    def run(_args):
        raise error

    return run


def test_known_error_prints_one_line_and_exits_2(capsys):
    error = DataError("ann.json: annotation id=5: bbox [1, None, 3, 4] is not [x, y, width, height]")
    code = run_command(_args(_raise(error), data_command="check"))
    captured = capsys.readouterr()
    assert code == EXIT_BAD_INPUT == 2 and captured.out == ""
    assert captured.err == f"retinanet data check: error: {error}\n"


def test_debug_adds_the_traceback_with_the_same_exit_code(capsys):
    code = run_command(_args(_raise(DataError("bad.json: not valid JSON")), command="train", debug=True))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("Traceback (most recent call last):") and "DataError: bad.json" in err
    assert err.rstrip().splitlines()[-1] == "retinanet train: error: bad.json: not valid JSON"
    args = cli.build_parser().parse_args(["--debug", "data", "check", "voc:x"])
    assert args.debug and not cli.build_parser().parse_args(["data", "check", "voc:x"]).debug


def test_multi_line_message_is_joined_into_one_line(capsys):
    run_command(_args(_raise(DataError("first line\n  second line\n")), command="evaluate"))
    assert capsys.readouterr().err == "retinanet evaluate: error: first line; second line\n"


def test_value_error_from_our_checks_is_known_but_from_elsewhere_is_a_bug(capsys):
    from keras_retinanet.imaging import parse_image_size

    def ours(_args):
        parse_image_size("big")  # raises in keras_retinanet/imaging.py

    assert run_command(_args(ours, command="predict")) == 2
    assert _one_error_line(capsys.readouterr().err, "predict").endswith(
        "image size must be N or HxW, got 'big'"
    )

    def not_ours(_args):
        raise ValueError("Received filters=0")  # as Keras would: our checks should have caught it first

    assert run_command(_args(not_ours, command="train")) == EXIT_BUG == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: Received filters=0" in err
    assert (
        err.rstrip()
        .splitlines()[-1]
        .startswith("retinanet train: internal error (ValueError): this is a bug")
    )


def test_unknown_exception_is_a_bug_with_its_traceback(capsys):
    assert run_command(_args(_raise(KeyError("boxes")), command="export")) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'boxes'" in err and "internal error (KeyError)" in err


def test_os_errors_name_the_path_and_ctrl_c_exits_130(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "x.json"

    def read(_args):
        open(missing).close()  # noqa: SIM115

    assert run_command(_args(read, command="evaluate")) == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert line == f"retinanet evaluate: error: No such file or directory: {missing}"
    assert run_command(_args(_raise(KeyboardInterrupt()), command="train")) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "retinanet train: interrupted\n"


# ----------------------------------------------------------------------------------------------------------
# Group 5: tracebacks that became messages


def _coco(tmp_path, bbox) -> str:
    write_image(tmp_path / "a.jpg", 48, 64)
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": bbox},
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document))
    return str(path)


@pytest.mark.parametrize(
    "case, spec, expected",
    [
        (
            "missing folder",
            "voc:{tmp}/nowhere",
            "VOC Annotations directory not found: {tmp}/nowhere/Annotations",
        ),
        ("bad split", "voc:{tmp}/voc:nosplit", "VOC split 'nosplit' (ImageSets/Main/nosplit.txt) not found"),
        ("bad spec", "pascal:{tmp}/voc", "bad dataset spec 'pascal:{tmp}/voc'; expected voc:DIR[:SPLIT]"),
        (
            "not JSON",
            "coco:{tmp}/bad.json",
            "{tmp}/bad.json: not valid JSON (Expecting value: line 1 column 1",
        ),
        (
            "bad classes CSV",
            "csv:{tmp}/ann.csv:{tmp}/classes.csv",
            "{tmp}/classes.csv: line 2: expected 'class_name,id'",
        ),
        ("no images", "voc:{tmp}/voc:empty", "voc:{tmp}/voc:empty: no images (the split"),
    ],
)
def test_data_check_unreadable_data_is_one_line_and_exit_2(case, spec, expected, tmp_path, capsys):
    write_voc(tmp_path / "voc", {"a": [("cat", (1, 1, 10, 10), False)]})
    (tmp_path / "voc" / "ImageSets" / "Main" / "empty.txt").write_text("\n")
    (tmp_path / "bad.json").write_text("not json")
    (tmp_path / "ann.csv").write_text("a.jpg,1,1,5,5,cat\n")
    (tmp_path / "classes.csv").write_text("cat,0\ndog\n")
    code = main(["data", "check", spec.format(tmp=tmp_path), "--no-optimize"])
    captured = capsys.readouterr()
    assert code == 2, case
    assert expected.format(tmp=tmp_path) in _one_error_line(captured.err, "data check"), case


def test_coco_null_in_bbox_is_a_record_error_and_skipped_with_skip_bad(tmp_path, capsys):
    spec = f"coco:{_coco(tmp_path, [1, None, 3, 4])}"
    with pytest.raises(DataError) as error:
        load_dataset(spec)
    assert str(error.value).startswith(
        f"{tmp_path}/ann.json: annotation id=5: bbox [1, None, 3, 4] is not [x, y, width, height] (four numbers)"
    )
    data = load_dataset(spec, skip_bad=True)
    assert data.skipped.counts() == {"bad_box": 1} and data.skipped.boxes_skipped == 1
    np.testing.assert_array_equal(data.examples[0]["boxes"], [[2, 2, 12, 12]])  # the good box is kept
    # data check skips it, lists it and exits 1: it found a problem.
    assert main(["data", "check", spec, "--no-optimize"]) == EXIT_FAILED_ITEMS
    captured = capsys.readouterr()
    assert "annotation id=5: bbox [1, None, 3, 4]" in captured.out
    assert captured.err.strip() == (
        "retinanet data check: 1 bad record(s) found (listed under 'problems'); exit code 1"
    )
    assert main(["data", "check", spec, "--no-optimize", "--no-strict"]) == 0


def test_data_check_exits_0_on_clean_data(tmp_path, capsys):
    root = write_voc(
        tmp_path / "voc", {"a": [("cat", (1, 1, 10, 10), False)], "b": [("dog", (3, 3, 30, 40), False)]}
    )
    assert main(["data", "check", f"voc:{root}:train", "--no-optimize"]) == 0
    assert capsys.readouterr().err == ""


def test_empty_voc_set_and_zero_classes_get_our_message(tmp_path, capsys):
    negatives = write_voc(tmp_path / "negatives", {"a": [], "b": []})
    with pytest.raises(
        DataError, match=r"negatives:train: no classes \(no <object><name> in any Annotations"
    ):
        load_dataset(f"voc:{negatives}:train")
    empty = write_voc(tmp_path / "empty", {})  # no annotation, an empty split file
    output = tmp_path / "run"
    code = main(["train", "--data", f"voc:{empty}:train", "--output", str(output), "--epochs", "1"])
    captured = capsys.readouterr()
    assert code == 2 and "filters" not in captured.err and captured.out == ""
    assert f"voc:{empty}:train: no images (the split" in _one_error_line(captured.err, "train")


def test_retinanet_arguments_are_checked_in_our_words():
    from keras_retinanet import RetinaNet

    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(
            ValueError, match=r"num_classes must be an integer >= 1 .*got " + re.escape(repr(bad))
        ):
            RetinaNet(bad)
    with pytest.raises(ValueError, match=r"got 2 class_names for num_classes=3"):
        RetinaNet(3, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"class_names must be a list of 2 strings, got 'ab'"):
        RetinaNet(2, class_names="ab")
    with pytest.raises(ValueError, match=r"class_names must be strings, got 7"):
        RetinaNet(2, class_names=["a", 7])
    for bad in (16, (512, 0), "big", 512.5, (1, 2, 3)):
        with pytest.raises(
            ValueError, match=r"image_size must be an integer N or \(H, W\) .*got " + re.escape(repr(bad))
        ):
            RetinaNet(2, image_size=bad)


def test_anchor_generator_arguments_are_checked():
    from keras_retinanet.model.anchors import AnchorGenerator

    cases = [
        ({"sizes": (32, 64)}, r"one size per level 3..7 \(5 sizes\), got 2 sizes: \[32, 64\]"),
        ({"scales": (1.0, -2.0)}, r"scales must be a non-empty list of positive numbers, got \(1.0, -2.0\)"),
        ({"aspect_ratios": ()}, r"aspect_ratios must be a non-empty list of positive numbers, got \(\)"),
        ({"aspect_ratios": (0.5, float("nan"))}, r"aspect_ratios must be .* got \(0.5, nan\)"),
        ({"sizes": (32, 64, 128, 256, "x")}, r"sizes must be a list of positive numbers"),
        ({"min_level": 5, "max_level": 4, "sizes": ()}, r"max_level 4 is below min_level 5"),
        ({"min_level": 2.5}, r"min_level must be an integer >= 0, got 2.5"),
        ({"offset": 2}, r"offset must be a number in \[0, 1\] \(in strides\), got 2"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            AnchorGenerator(**kwargs)


def test_detect_names_the_shape_it_needs():
    from retinanet_testing import tiny_retinanet

    model = tiny_retinanet(2)
    accepts = r"; it takes one \(H, W, 3\) RGB image, a \(B, H, W, 3\) batch or a list of \(H, W, 3\) images"
    with pytest.raises(ValueError, match=r"detect\(\) got an array of shape \(1, 64, 64, 4\)" + accepts):
        model.detect(np.zeros((1, 64, 64, 4), np.float32))
    with pytest.raises(ValueError, match=r"got an array of shape \(64, 64\)" + accepts):
        model.detect(np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match=r"shape \(1, 0, 64, 3\), which holds no pixels" + accepts):
        model.detect(np.zeros((1, 0, 64, 3), np.float32))


def _truncated_keras(tmp_path) -> str:
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "RetinaNet", "config": {}}) * 200)
        archive.writestr("model.weights.h5", os.urandom(4096))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy or a download cut short
    return str(path)


def test_export_of_a_truncated_model_says_so(tmp_path, capsys):
    model = _truncated_keras(tmp_path)
    code = main(["export", model, "--output", str(tmp_path / "out"), "--tflite", "none"])
    line = _one_error_line(capsys.readouterr().err, "export")
    assert (
        code == 2
        and f"{model} has a .keras name but is not a Keras archive (zip): truncated or not a model" in line
    )
    assert "not found" not in line.lower()


def test_predict_out_naming_an_existing_file_is_one_line(tmp_path, capsys):
    image = write_image(tmp_path / "x.jpg")
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    code = main(["predict", _truncated_keras(tmp_path), str(image), "--out", str(out)])
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert code == 2 and line.endswith(f"--out {out} is a file, not a folder; name a folder (it is created)")
    assert out.read_text() == "keep me"


def test_train_errors_go_to_stderr_not_stdout(tmp_path, capsys):
    code = main(["train", "--data", f"voc:{tmp_path}/nowhere:train", "--output", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 2 and "error" not in captured.out
    assert "VOC Annotations directory not found" in _one_error_line(captured.err, "train")


def test_the_installed_command_prints_one_line_and_debug_the_traceback(tmp_path):
    """Through ``python -m keras_retinanet`` (what the ``retinanet`` script runs): exit code and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    command = [sys.executable, "-m", "keras_retinanet", "data", "check", f"voc:{tmp_path}/nowhere"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"retinanet data check: error: VOC Annotations directory not found: {tmp_path}/nowhere/Annotations"
    ]
    for debug in (
        [*command[:3], "--debug", *command[3:]],
        [*command, "--debug"],
    ):  # before or after the command
        result = subprocess.run(debug, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 2 and "Traceback (most recent call last)" in result.stderr
        assert "in require_path" in result.stderr
        assert result.stderr.splitlines()[-1].startswith("retinanet data check: error: VOC Annotations")
    result = subprocess.run([*command, "--bogus"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2 and "retinanet: error: unrecognized arguments: --bogus" in result.stderr
