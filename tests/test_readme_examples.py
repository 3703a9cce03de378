"""Every example of README.md and of the docs/*.md pages still works: the ```python blocks of README.md and of the
pages in PYTHON_PAGES run, the `retinanet` command lines of every page parse, the `keras_retinanet.*` / `kr.*` names,
scripts and files they mention exist, every relative link points to an existing file (and heading), and README.md
stays a short guide (at most README_MAX_LINES lines).

The Python blocks run in this process, each in a fresh namespace, in a sandbox folder (the current directory)
holding what the pages take for granted: ``BCCD/`` (a few real BCCD images with ``trainval``, ``val`` and
``test`` splits, copied from the shared data sets), ``model.keras``, ``a.jpg``, ``b.jpg``, ``b.png`` and
``saved_models/bccd/`` (a SavedModel and a ``.tflite``). Where a block uses a name it leaves to the reader
(``model``, ``train_ds``, ``dataset``, ``detections``, ``rgb_uint8_array``), a short prelude defines it
(PRELUDES). Sizes are cut by exact text substitution only where a block as written would train for minutes
(SUBSTITUTIONS); a substitution whose text is no longer in its block fails the test, so that an edited block
is looked at again instead of silently running at full size.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from retinanet_testing import REPO, copy_bccd_subset, tiny_retinanet

BCCD_CLASSES = ["Platelets", "RBC", "WBC"]
README_MAX_LINES = 300
# Every page checked: README.md and the documentation pages.
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The pages whose ```python blocks run. The others' blocks need what the sandbox has not (mobile.md: MediaPipe and
# a photo); their commands, names and links are still checked.
PYTHON_PAGES = ["README.md", "docs/guide.md", "docs/export.md"]
TEXTS = {page.relative_to(REPO).as_posix(): page.read_text() for page in PAGES}


def _fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _python_blocks() -> list[tuple[str, str]]:
    """(page, block) for each distinct python block of PYTHON_PAGES (a block repeated on two pages runs once)."""
    blocks: dict[str, str] = {}
    for page in PYTHON_PAGES:
        for block in _fenced(TEXTS[page], "python"):
            blocks.setdefault(block, page)
    return [(page, block) for block, page in blocks.items()]


PYTHON_BLOCKS = _python_blocks()

# (text in a block, what it becomes): only where the block would train for minutes as written. Training blocks
# get the test suite's tiny network (MobileNetV2 x0.35, 32-channel pyramid, one-conv heads), 128 px and 1 epoch.
TINY = 'backbone_kwargs={"alpha": 0.35}, fpn_channels=32, head_depth=1'
SUBSTITUTIONS = {
    # No download in a test: the same model from random weights.
    'backbone="resnet50")\nimages = ': [
        ('backbone="resnet50")', 'backbone="resnet50", backbone_weights=None)')
    ],
    "model.fit(dataset, epochs=30)": [
        ('backbone="mobilenet_v2")', f'backbone="mobilenet_v2", backbone_weights=None, {TINY})'),
        ("image_size=384, batch_size=8", "image_size=128, batch_size=2"),
        ("model.fit(dataset, epochs=30)", "model.fit(dataset, epochs=1)"),
    ],
    "TrainConfig(data=": [
        (
            'ModelConfig(backbone="mobilenet_v2", fpn_channels=128, image_size=384)',
            f'ModelConfig(backbone="mobilenet_v2", weights=None, {TINY}, image_size=128)',
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

# Names a block uses without defining them: the page leaves them to the reader.
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
    assert len(matches) <= 1, "two entries match one block"
    return matches[0] if matches else None


def _prepared(block: str) -> str:
    for old, new in _find(SUBSTITUTIONS, block) or []:
        assert old in block, f"block changed, update SUBSTITUTIONS in {__file__}: {old!r} not in\n{block}"
        block = block.replace(old, new)
    return (_find(PRELUDES, block) or "") + block


def test_every_lookup_entry_matches_a_block():
    # An entry that matches no block means a page changed under this test.
    for table in (SUBSTITUTIONS, PRELUDES, CHECKS):
        for key in table:
            assert any(key in block for _, block in PYTHON_BLOCKS), f"no python block contains {key!r}"
    assert len(PYTHON_BLOCKS) >= 8
    assert len(_fenced(TEXTS["README.md"], "python")) >= 2


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, detector_like):
    """A folder holding what the pages' examples take for granted."""
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
    # The pages' predict example loads model_int8.tflite; a float32 file under that name serves (quantisation
    # is tests/test_export.py's subject, the loading API this test's).
    shutil.copy(detector_like["tflite"], export / "model_int8.tflite")
    return root


@pytest.mark.parametrize(
    ("page", "block"), PYTHON_BLOCKS, ids=[f"{page}-{i}" for i, (page, _) in enumerate(PYTHON_BLOCKS)]
)
def test_python_block_runs(page, block, sandbox, monkeypatch):
    monkeypatch.chdir(sandbox)
    namespace = {"__name__": "page_block"}
    exec(compile(_prepared(block), f"{page} python block", "exec"), namespace)  # noqa: S102
    check = _find(CHECKS, block)
    if check is not None:
        assert check(namespace), block


def _command_lines() -> list[tuple[str, str]]:
    """(page, line) for every `retinanet ...` line of every page's ```bash blocks (continuations joined)."""
    lines = []
    for page, text in TEXTS.items():
        for block in _fenced(text, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                if line.startswith("retinanet "):
                    lines.append((page, line))
    return lines


COMMAND_LINES = _command_lines()


def test_every_page_with_commands_is_read():
    pages = {page for page, _ in COMMAND_LINES}
    assert {"README.md", "docs/guide.md", "docs/data.md", "docs/export.md", "docs/recipes.md"} <= pages
    assert len(COMMAND_LINES) >= 30


@pytest.mark.parametrize(("page", "line"), COMMAND_LINES)
def test_command_line_parses(page, line):
    from keras_retinanet.cli.retinanet import build_parser

    argv = shlex.split(line, comments=True)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as err:
        pytest.fail(f"{page}: command does not parse ({err}): {line}")


def _mentioned(pattern: str) -> list[tuple[str, str]]:
    return sorted(
        {(page, name.rstrip(".")) for page, text in TEXTS.items() for name in re.findall(pattern, text)}
    )


@pytest.mark.parametrize(("page", "name"), _mentioned(r"\bkeras_retinanet(?:\.\w+)+"))
def test_package_name_exists(page, name):
    import importlib

    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            assert hasattr(target, attribute), f"{page} names {name}, but {attribute} is not in {target}"
            target = getattr(target, attribute)
        return
    pytest.fail(f"{page} names {name}, which does not import")


@pytest.mark.parametrize(("page", "name"), _mentioned(r"\bkr\.(\w+)"))
def test_top_level_name_exists(page, name):
    import keras_retinanet as kr

    assert hasattr(kr, name), f"{page} uses kr.{name}"


@pytest.mark.parametrize(
    ("page", "path"), _mentioned(r"\b((?:tools|tests|configs|docs)/[\w/.-]+\.(?:py|yaml|md))")
)
def test_mentioned_file_exists(page, path):
    assert (REPO / path).is_file(), f"{page} mentions {path}, which does not exist"


def test_readme_is_a_short_guide():
    lines = TEXTS["README.md"].count("\n") + (not TEXTS["README.md"].endswith("\n"))
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; move detail into docs/ (at most {README_MAX_LINES})"
    )
    for placeholder_or_section in ("## Install", "## Quick start", "## Exit codes", "docs/README.md"):
        assert placeholder_or_section in TEXTS["README.md"]


def _outside_fences(text: str) -> str:
    """The page without its fenced code blocks (their `#` lines are comments, their brackets code)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def heading_slugs(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to dashes, -1, -2 ... for
    repeats."""
    slugs: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", _outside_fences(text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug if slug not in slugs else f"{slug}-{slugs[slug]}")
        slugs[slug] = slugs.get(slug, 0) + 1
    return found


def test_heading_slugs_follow_github():
    # Worked out by hand from GitHub's rule, for headings like the pages' own.
    text = "# A b\n## The main job: `make demo`\n```bash\n# not a heading\n```\n## A b\n### Don't (stop) 2\n"
    assert heading_slugs(text) == {"a-b", "the-main-job-make-demo", "a-b-1", "dont-stop-2"}


def _relative_links() -> list[tuple[str, str]]:
    links = []
    for page, text in TEXTS.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", _outside_fences(text)):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not checked
                links.append((page, target))
    return sorted(set(links))


RELATIVE_LINKS = _relative_links()


def test_links_are_found():
    pages = {page for page, _ in RELATIVE_LINKS}
    assert {"README.md", "docs/README.md", "docs/guide.md"} <= pages


@pytest.mark.parametrize(("page", "target"), RELATIVE_LINKS)
def test_relative_link_points_to_a_file(page, target):
    path, _, anchor = target.partition("#")
    file = (REPO / page).parent / path if path else REPO / page
    assert file.exists(), f"{page} links to {target}: {file} does not exist"
    if anchor and file.suffix == ".md":
        assert anchor in heading_slugs(file.read_text()), (
            f"{page} links to {target}: no such heading in {path}"
        )
