"""The README's quick start runs as written: every `retinanet` command of its "Quick start on your own data"
section, in order, on a small COCO export in Roboflow's layout (``train/``, ``valid/``, ``test/``, each with its
``_annotations.coco.json``) made of synthetic shapes, and a ``photos/`` folder.

Only sizes change, by exact text substitution (SIZES): a tiny network, 128 px and two epochs. A substitution
whose text is no longer in the README fails the test, so that an edited quick start is looked at again.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from retinanet_testing import REPO, require_mediapipe

from keras_retinanet import cli
from keras_retinanet.data.synthetic import make_synthetic_coco

SIZES = [
    (
        "--fpn-channels 128 --image-size 384 --epochs 30",
        "--fpn-channels 32 --head-depth 1 --image-size 128 --epochs 2 --batch-size 4 --no-tensorboard",
    ),
    ("--tile 480x640", "--tile 96x96"),
]


def quick_start_commands() -> list[str]:
    """The `retinanet` command lines of the README's quick start section, continuation lines joined."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start on your own data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.split("  #")[0].strip() for line in lines if line.startswith("retinanet ")]


def _roboflow_split(root: Path, split: str, count: int, seed: int) -> None:
    """``root/split/`` with the images and ``_annotations.coco.json`` side by side, as Roboflow exports them."""
    spec = make_synthetic_coco(root / f"made_{split}", count, (96, 128), seed=seed)
    _, annotations, images = spec.split(":")
    shutil.copytree(images, root / split)
    shutil.move(annotations, root / split / "_annotations.coco.json")


def test_the_commands_are_found():
    commands = quick_start_commands()
    verbs = [shlex.split(line)[1] for line in commands]
    # data check, train, evaluate, export, evaluate, predict, then the "More" block
    assert verbs[:6] == ["data", "train", "evaluate", "export", "evaluate", "predict"], verbs
    assert len(commands) >= 10


def test_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    require_mediapipe("mediapipe.tasks.python.vision")  # the quick start evaluates through MediaPipe Tasks
    for split, count, seed in (("train", 24, 0), ("valid", 8, 1), ("test", 8, 2)):
        _roboflow_split(tmp_path, split, count, seed)
    (tmp_path / "photos").mkdir()
    for name in ("synthetic_00001.jpg", "synthetic_00002.jpg"):
        shutil.copy(tmp_path / "test" / name, tmp_path / "photos" / name)
    monkeypatch.chdir(tmp_path)

    for line in quick_start_commands():
        for old, new in SIZES:
            line = line.replace(old, new)
        code = cli.main(shlex.split(line)[1:])
        assert code == 0, f"{line}\n{capsys.readouterr().err[-2000:]}"
    for old, _ in SIZES:
        assert any(old in line for line in quick_start_commands()), f"README no longer has {old!r}"

    assert Path("runs/mine/model.keras").is_file()
    assert {p.name for p in Path("export").glob("*.tflite")} == {
        "model_float32.tflite",
        "model_float16.tflite",
        "model_int8.tflite",
    }
    # A two-epoch model may find nothing above the display threshold: the annotated copies are always written.
    photos = ["synthetic_00001.jpg", "synthetic_00002.jpg"]
    assert sorted(p.name for p in Path("predictions").glob("*.jpg")) == photos
    detections = json.loads(Path("predictions/detections.json").read_text())
    assert {Path(d["file_name"]).name for d in detections} <= set(photos)
    thresholds = json.loads(Path("reports/mine/class_thresholds.json").read_text())
    assert sorted([*thresholds["thresholds"], *thresholds["without_threshold"]]) == [
        "circle",
        "square",
        "triangle",
    ]
    assert Path("reports/mine/report.md").is_file()
    converted = sorted(p.name for p in Path("converted").iterdir())
    assert "data.yaml" in converted
