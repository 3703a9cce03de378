"""Paths (issue 26, item 4): a COCO ``file_name`` that leads outside the image folder is refused unless
``--allow-outside-paths``; a full disk names the path that could not be written."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

import pytest

from keras_retinanet import atomic
from keras_retinanet.cli.retinanet import error_message, main, run_command
from keras_retinanet.data import DataError, load_dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "data"))  # where tests/data's helpers live
from data_testing import write_image  # noqa: E402


def _coco(tmp_path: Path, outside_name: str) -> tuple[str, Path]:
    """images/ with a.jpg, and an annotation file whose image 2 has ``outside_name`` as its file_name; the
    file it leads to exists (so following it would silently work)."""
    images = tmp_path / "dataset" / "images"
    write_image(images / "a.jpg", 48, 64)
    write_image(tmp_path / "secret.jpg", 48, 64, seed=1)  # outside the image folder
    document = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": outside_name, "width": 64, "height": 48},
        ],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]},
            {"id": 6, "image_id": 2, "category_id": 1, "bbox": [2, 2, 10, 10]},
        ],
    }
    annotations = tmp_path / "dataset" / "ann.json"
    annotations.write_text(json.dumps(document))
    return f"coco:{annotations}:{images}", annotations


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_a_file_name_outside_the_image_folder_is_a_bad_record(form, tmp_path):
    secret = tmp_path / "secret.jpg"
    name = "../../secret.jpg" if form == "relative" else str(secret)
    spec, annotations = _coco(tmp_path, name)
    images = tmp_path / "dataset" / "images"
    with pytest.raises(DataError) as caught:
        load_dataset(spec)
    assert str(caught.value) == (
        f"{annotations}: image id=2: file_name {name!r} leads outside the image folder {images} (to {secret}); "
        "pass --allow-outside-paths to read images there. Pass skip_bad=True (CLI: --skip-bad) to skip such "
        "records."
    )
    skipped = load_dataset(spec, skip_bad=True)
    assert [e["image_id"] for e in skipped.examples] == [1]
    assert skipped.skipped.counts() == {"path_outside_image_dir": 1}
    allowed = load_dataset(spec, allow_outside_paths=True)
    assert [os.path.normpath(e["image_path"]) for e in allowed.examples] == [
        str(images / "a.jpg"),
        str(secret),
    ]


def test_names_inside_the_folder_and_linked_folders_are_fine(tmp_path):
    spec, _ = _coco(tmp_path, "./a.jpg")
    assert len(load_dataset(spec).examples) == 2
    # A symbolic link inside the image folder is the user's own layout: not followed to judge it.
    spec, _ = _coco(tmp_path / "two", "linked.jpg")
    os.symlink(tmp_path / "secret.jpg", tmp_path / "two" / "dataset" / "images" / "linked.jpg")
    assert len(load_dataset(spec).examples) == 2


def test_the_commands_refuse_it_and_take_the_flag(tmp_path, capsys):
    spec, annotations = _coco(tmp_path, "../../secret.jpg")
    assert main(["data", "check", spec, "--no-optimize"]) == 1
    out = capsys.readouterr().out
    assert (
        "path_outside_image_dir: 1" in out
        and f"{annotations}: image id=2: file_name '../../secret.jpg'" in out
    )
    assert main(["data", "check", spec, "--no-optimize", "--allow-outside-paths"]) == 0
    capsys.readouterr()
    output = tmp_path / "run"
    assert main(["train", "--data", spec, "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"retinanet train: error: {annotations}: image id=2: file_name '../../secret.jpg' leads"
    )
    assert len(err.splitlines()) == 1 and not output.exists()


# ----------------------------------------------------------------------------------------------------------
# A full disk


def test_a_full_disk_names_the_path(tmp_path, monkeypatch, capsys):
    target = tmp_path / "run" / "config.yaml"

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as caught:
        atomic.write_text(target, "x")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert error_message(caught.value) == f"No space left on device: {target}"
    assert list(target.parent.iterdir()) == []  # no temporary left behind

    args = argparse.Namespace(run=lambda _: atomic.write_json(target, {}), command="train", debug=False)
    assert run_command(args) == 2
    assert capsys.readouterr().err == f"retinanet train: error: No space left on device: {target}\n"


def test_h5py_s_disk_full_error_is_named_too(tmp_path):
    """h5py carries the errno only in its message (and ``errno`` None): Keras' weight files go through it."""

    class FakeModel:
        def save_weights(self, path):
            raise OSError(
                "Unable to synchronously write data (file write failed: time = Sat Dec 5, filename = "
                f"'{path}', file descriptor = 7, errno = 28, error message = 'No space left on device')"
            )

    target = tmp_path / "backup" / "epoch-0001.weights.h5"
    with pytest.raises(OSError) as caught:
        atomic.save_weights(FakeModel(), target)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert "errno = 28" in str(caught.value.__cause__)


def test_tensorflow_s_disk_full_is_not_called_out_of_memory(capsys):
    """TensorFlow raises ResourceExhaustedError for a full disk while writing a SavedModel, as for memory."""
    exhausted = type("ResourceExhaustedError", (Exception,), {})  # matched by name, as TF's
    full = exhausted(
        "export/saved_model/variables/variables.data-00000-of-00001.tempstate; No space left on device"
    )
    assert error_message(full).startswith("the disk is full (export/saved_model/variables/")
    assert "free space where the output is written" in error_message(full) and "memory" not in error_message(
        full
    )
    memory = exhausted("OOM when allocating tensor with shape[8,256,96,128]")
    assert error_message(memory).startswith("out of memory (OOM when allocating")

    def export(_):
        raise full

    assert run_command(argparse.Namespace(run=export, command="export", debug=False)) == 2
    assert capsys.readouterr().err.startswith("retinanet export: error: the disk is full (")
