"""``retinanet data convert`` loses nothing: no silent overwrite, stage-and-move (a kill leaves the old state or a
finishable staging), one convert per output folder at a time, and names with spaces and unicode read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_testing import write_image, write_voc
from helpers.train_runs import KILLED
from helpers.train_runs import env as kill_env

from keras_retinanet.atomic import locked_folder
from keras_retinanet.cli.retinanet import main
from keras_retinanet.data import load_dataset
from keras_retinanet.data.writers import LOCK, STAGING_PREFIX

# Two images of a VOC source: names with a space and a non-ASCII letter, which split files must survive.
OBJECTS = {
    "red cell 1": [("RBC", (5, 6, 30, 40), 0)],
    "plaquette é": [("Platelets", (10, 10, 20, 22), 0), ("RBC", (30, 5, 60, 45), 0)],
}


def voc_source(tmp_path: Path) -> str:
    return f"voc:{write_voc(tmp_path / 'src', OBJECTS)}:train"


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the lock (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK
    }


def named_boxes(spec: str) -> dict[str, list]:
    dataset = load_dataset(spec)
    return {
        Path(ex["image_path"]).stem: sorted(
            (dataset.class_names[c], *(round(float(v), 2) for v in b))
            for b, c in zip(ex["boxes"], ex["classes"], strict=True)
        )
        for ex in dataset.examples
    }


@pytest.mark.parametrize("to", ["coco", "yolo", "voc"])
def test_names_with_spaces_and_unicode_read_back(tmp_path, capsys, to):
    source = voc_source(tmp_path)
    assert main(["data", "convert", source, "--to", to, str(tmp_path / "out")]) == 0
    spec = capsys.readouterr().out.rsplit("read it with: ", 1)[1].strip()
    assert named_boxes(spec) == named_boxes(source)  # no image dropped (the VOC reader took the first word)


@pytest.mark.parametrize(
    "to, image_folder", [("voc", "JPEGImages"), ("coco", "other"), ("yolo", "images/other")]
)
def test_a_different_photo_of_the_same_name_is_never_overwritten(tmp_path, capsys, to, image_folder):
    out = tmp_path / "out"
    theirs = write_image(out / image_folder / "red cell 1.jpg", seed=99)
    before = theirs.read_bytes()
    code = main(["data", "convert", voc_source(tmp_path), "--to", to, str(out), "--split", "other"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{theirs} already exists with other content (this convert did not write it)" in err
    assert "--overwrite" in err
    assert theirs.read_bytes() == before
    assert tree(out) == {f"{image_folder}/red cell 1.jpg": before}  # nothing else written
    assert main(["data", "convert", voc_source(tmp_path), "--to", to, str(out), "--split", "other",
                 "--overwrite"]) == 0  # fmt: skip
    assert theirs.read_bytes() == (tmp_path / "src" / "JPEGImages" / "red cell 1.jpg").read_bytes()


def test_coco_onto_its_own_image_folder_keeps_the_images(tmp_path, capsys):
    source = voc_source(tmp_path)
    assert main(["data", "convert", source, "--to", "coco", str(tmp_path / "c")]) == 0
    spec = capsys.readouterr().out.rsplit("read it with: ", 1)[1].strip()
    images = tmp_path / "c" / "train"
    before = tree(images)
    # Again, from that COCO set into the folder that holds its images: they are the files themselves.
    (tmp_path / "c" / "annotations" / "instances_train.json").rename(tmp_path / "ann.json")
    assert (
        main(
            ["data", "convert", f"coco:{tmp_path / 'ann.json'}:{images}", "--to", "coco", str(tmp_path / "c")]
        )
        == 0
    )
    assert tree(images) == before
    assert named_boxes(spec) == named_boxes(source)


def test_a_rerun_of_a_finished_convert_changes_nothing(tmp_path, capsys):
    source, out = voc_source(tmp_path), tmp_path / "y"
    assert main(["data", "convert", source, "--to", "yolo", str(out)]) == 0
    first = tree(out)
    assert main(["data", "convert", source, "--to", "yolo", str(out)]) == 0
    assert "nothing to write" in capsys.readouterr().out
    assert tree(out) == first


def test_yolo_split_written_from_other_images_is_refused(tmp_path, capsys):
    out = tmp_path / "y"
    assert main(["data", "convert", voc_source(tmp_path), "--to", "yolo", str(out)]) == 0
    other = write_voc(tmp_path / "other", {"x": [("RBC", (1, 1, 20, 20), 0), ("Platelets", (2, 2, 9, 9), 0)]})
    assert main(["data", "convert", f"voc:{other}:train", "--to", "yolo", str(out)]) == 2
    assert "already has a 'train' split with other images" in capsys.readouterr().err
    assert len(load_dataset(f"yolo:{out / 'data.yaml'}:train")) == 2


@pytest.mark.parametrize("split", ["../escaped", "a/b", ".hidden"])
def test_split_names_cannot_leave_the_output_folder(tmp_path, capsys, split):
    code = main(
        ["data", "convert", voc_source(tmp_path), "--to", "voc", str(tmp_path / "out"), "--split", split]
    )
    assert code == 2
    assert f"--split {split!r}: a split name is one file name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()


def test_a_second_convert_into_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    with locked_folder(out, LOCK, "another retinanet data convert"):
        code = main(["data", "convert", voc_source(tmp_path), "--to", "voc", str(out)])
    assert code == 2
    assert (
        f"{out} is in use by another retinanet data convert (process {os.getpid()})"
        in capsys.readouterr().err
    )
    assert main(["data", "convert", voc_source(tmp_path), "--to", "voc", str(out)]) == 0  # released


@pytest.mark.parametrize("to", ["coco", "yolo", "voc"])
@pytest.mark.parametrize("kill_at", ["convert:staged", "convert:moved@2"])
def test_killed_convert_reruns_to_the_uninterrupted_output(tmp_path, to, kill_at):
    source = voc_source(tmp_path)
    command = [sys.executable, "-m", "keras_retinanet", "data", "convert", source, "--to", to]
    reference = tmp_path / "reference"
    subprocess.run([*command, str(reference)], env=kill_env(), check=True, capture_output=True)
    out = tmp_path / "out"
    killed = subprocess.run([*command, str(out)], env=kill_env(kill_at), capture_output=True, text=True)
    assert killed.returncode == KILLED, killed.stderr
    staging = out / (STAGING_PREFIX + "train")
    assert json.loads((staging / "manifest.json").read_text())["request"]["format"] == to
    # The split's index file is moved last: nothing reads the half-moved split as a data set.
    index = {
        "coco": "annotations/instances_train.json",
        "yolo": "data.yaml",
        "voc": "ImageSets/Main/train.txt",
    }
    assert not (out / index[to]).exists()
    rerun = subprocess.run([*command, str(out)], env=kill_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "finishing the convert that was interrupted" in rerun.stdout
    assert tree(out) == tree(reference)


def test_killed_while_staging_starts_again(tmp_path, capsys):
    out = tmp_path / "out"
    staging = out / (STAGING_PREFIX + "train")
    write_image(staging / "JPEGImages" / "half.jpg")  # a kill before the manifest was written
    assert main(["data", "convert", voc_source(tmp_path), "--to", "voc", str(out)]) == 0
    assert "incomplete staging of a convert killed before it finished" in capsys.readouterr().out
    assert not staging.exists() and not (out / "JPEGImages" / "half.jpg").exists()
