"""Every example of README.md still works: the ```python blocks run, the `retinanet` command lines parse, and the
`keras_retinanet.*` / `kr.*` names, scripts and files it mentions exist.

The Python blocks run in this process, each in a fresh namespace, in a sandbox folder (the current directory)
holding what the README takes for granted: ``BCCD/`` (a few real BCCD images with ``trainval``, ``val`` and
``test`` splits, copied from the shared data sets), ``model.keras``, ``a.jpg``, ``b.jpg``, ``b.png`` and
``saved_models/bccd/`` (a SavedModel and a ``.tflite``). Where a block uses a name it leaves to the reader
(``model``, ``train_ds``, ``dataset``, ``detections``, ``rgb_uint8_array``), a short prelude defines it
(PRELUDES). Sizes are cut by exact text substitution only where a block as written would train for minutes
(SUBSTITUTIONS); a substitution whose text is no longer in the README fails the test, so that an edited block
is looked at again instead of silently running at full size.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from retinanet_testing import REPO, copy_bccd_subset, tiny_retinanet

README = (REPO / "README.md").read_text()
BCCD_CLASSES = ["Platelets", "RBC", "WBC"]


def _fenced(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


PYTHON_BLOCKS = _fenced("python")

# (text in a block, what it becomes): only where the block would train for minutes as written. Training blocks
# get the test suite's tiny network (MobileNetV2 x0.35, 32-channel pyramid, one-conv heads), 128 px and 1 epoch.
TINY = 'backbone_kwargs={"alpha": 0.35}, fpn_channels=32, head_depth=1'
SUBSTITUTIONS = {
    "model.fit(dataset, epochs=30)": [
        ('backbone="mobilenet_v2")', f'backbone="mobilenet_v2", {TINY})'),
        ("image_size=384, batch_size=8", "image_size=128, batch_size=2"),
        ("model.fit(dataset, epochs=30)", "model.fit(dataset, epochs=1)"),
    ],
    "TrainConfig(data=": [
        (
            'ModelConfig(backbone="mobilenet_v2", fpn_channels=128, image_size=384)',
            f'ModelConfig(backbone="mobilenet_v2", {TINY}, image_size=128)',
        ),
        ("epochs=30,", "epochs=1, precise_bn_batches=1, tensorboard=False,"),
    ],
    "EvaluationCallback(val": [
        (
            "model.fit(train_ds, epochs=30, callbacks=callbacks)",
            "model.fit(train_ds, epochs=1, callbacks=callbacks)",
        ),
    ],
}

# Names a block uses without defining them: the README leaves them to the reader.
PRELUDES = {
    "evaluate_detections(dataset.examples, detections": """
from keras_retinanet.data import load_dataset as _load
dataset = _load("voc:BCCD:test")
# Ground truth as detections (score 1): the block's evaluate_detections must give AP 1.
detections = [
    {"boxes": e["boxes"], "scores": [1.0] * len(e["boxes"]), "classes": e["classes"]} for e in dataset.examples
]
""",
    "EvaluationCallback(val": """
import keras
from keras_retinanet import data as _data
from keras_retinanet.detectors import load_retinanet as _load_retinanet
model = _load_retinanet("model.keras")
model.compile(optimizer=keras.optimizers.SGD(1e-3))
train_ds = _data.make_training_dataset(
    _data.load_dataset("voc:BCCD:trainval"), model.label_encoder(), image_size=128, batch_size=2, seed=0
)
""",
    "rgb_uint8_array": """
import numpy as _np
rgb_uint8_array = _np.zeros((96, 160, 3), _np.uint8)
""",
}

# After a block: what its result must be (the namespace it ran in -> assertion).
CHECKS = {
    "evaluate_detections(dataset.examples, detections": lambda ns: ns["metrics"]["AP"] == pytest.approx(1.0),
    'model.save("bccd.keras")': lambda ns: Path("bccd.keras").is_file(),
    "EvaluationCallback(val": lambda ns: "val_AP" in ns["model"].history.history,
    "summary = train(config)": lambda ns: 0 <= ns["summary"]["final_metrics"]["AP"] <= 1,
    "tf.saved_model.load": lambda ns: ns["out"]["boxes"].shape == (2, 100, 4),
    "num_detections (1,)": lambda ns: ns["detections"]["boxes"].shape == (1, 100, 4),
}


def _find(table: dict, block: str):
    matches = [value for key, value in table.items() if key in block]
    assert len(matches) <= 1, "two entries match one README block"
    return matches[0] if matches else None


def _prepared(block: str) -> str:
    for old, new in _find(SUBSTITUTIONS, block) or []:
        assert old in block, (
            f"README block changed, update SUBSTITUTIONS in {__file__}: {old!r} not in\n{block}"
        )
        block = block.replace(old, new)
    return (_find(PRELUDES, block) or "") + block


def test_every_lookup_entry_matches_a_block():
    # An entry that matches no block means the README changed under this test.
    for table in (SUBSTITUTIONS, PRELUDES, CHECKS):
        for key in table:
            assert any(key in block for block in PYTHON_BLOCKS), f"no README python block contains {key!r}"
    assert len(PYTHON_BLOCKS) >= 6


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, detector_like):
    """A folder holding what the README's examples take for granted."""
    from keras_retinanet.export import build_saved_model

    root = tmp_path_factory.mktemp("readme")
    source = copy_bccd_subset(root / "copy", ["BloodImage_00000", "BloodImage_00001", "BloodImage_00002"])
    shutil.move(str(source), root / "BCCD")
    splits = root / "BCCD" / "ImageSets" / "Main"
    (splits / "trainval.txt").write_text("BloodImage_00000\nBloodImage_00001\n")
    (splits / "val.txt").write_text("BloodImage_00002\n")
    (splits / "test.txt").write_text("BloodImage_00002\n")
    images = root / "BCCD" / "JPEGImages"
    shutil.copy(images / "BloodImage_00000.jpg", root / "a.jpg")
    shutil.copy(images / "BloodImage_00001.jpg", root / "b.jpg")
    import cv2

    cv2.imwrite(str(root / "b.png"), cv2.imread(str(images / "BloodImage_00001.jpg"))[:240, :320])
    model = tiny_retinanet(3, class_names=BCCD_CLASSES, image_size=128)
    model.save(root / "model.keras")
    export = root / "saved_models" / "bccd"
    build_saved_model(model, export / "saved_model")
    (export / "labels.txt").write_text("\n".join(BCCD_CLASSES) + "\n")
    # The README's predict example loads model_int8.tflite; a float32 file under that name serves (quantisation
    # is tests/test_export.py's subject, the loading API this test's).
    shutil.copy(detector_like["tflite"], export / "model_int8.tflite")
    return root


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs(index, sandbox, monkeypatch):
    block = PYTHON_BLOCKS[index]
    monkeypatch.chdir(sandbox)
    namespace = {"__name__": f"readme_block_{index}"}
    exec(compile(_prepared(block), f"README.md python block {index + 1}", "exec"), namespace)  # noqa: S102
    check = _find(CHECKS, block)
    if check is not None:
        assert check(namespace), block


def _command_lines() -> list[str]:
    lines = []
    for block in _fenced("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("retinanet "):
                lines.append(line)
    return lines


@pytest.mark.parametrize("line", _command_lines())
def test_command_line_parses(line):
    from keras_retinanet.cli import build_parser

    argv = shlex.split(line, comments=True)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as err:
        pytest.fail(f"README command does not parse ({err}): {line}")


def _mentioned(pattern: str) -> list[str]:
    return sorted({name.rstrip(".") for name in re.findall(pattern, README)})


@pytest.mark.parametrize("name", _mentioned(r"\bkeras_retinanet(?:\.\w+)+"))
def test_package_name_exists(name):
    import importlib

    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            assert hasattr(target, attribute), f"README names {name}, but {attribute} is not in {target}"
            target = getattr(target, attribute)
        return
    pytest.fail(f"README names {name}, which does not import")


@pytest.mark.parametrize("name", _mentioned(r"\bkr\.(\w+)"))
def test_top_level_name_exists(name):
    import keras_retinanet as kr

    assert hasattr(kr, name), f"README uses kr.{name}"


@pytest.mark.parametrize("path", _mentioned(r"\b((?:tools|tests|configs|docs)/[\w/.-]+\.(?:py|yaml|md))"))
def test_mentioned_file_exists(path):
    assert (REPO / path).is_file(), f"README mentions {path}, which does not exist"
