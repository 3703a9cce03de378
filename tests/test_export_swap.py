"""``export --overwrite`` swaps the old export for the new one safely (issue 26, item 5).

Before: the old export was renamed to ``.OUT.old-PID`` and the new one from ``.OUT.partial-PID-*`` to ``OUT``;
a kill between the two renames left no ``OUT``, and the next export deleted both leftovers as stale: the old
and the new export were lost. Now the next export (or ``recover_interrupted_swap``) finishes the move, or puts
the old export back when the new one is incomplete.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from keras_retinanet.atomic import KILL_ENV, FolderInUseError, locked_folder
from keras_retinanet.export import ExportError
from keras_retinanet.export.writer import export_model, recover_interrupted_swap

KILLED = -9


def _export_command(model: str, output: Path, variant: str) -> list[str]:
    return [
        sys.executable, "-m", "keras_retinanet", "export", model, "--output", str(output), "--overwrite",
        "--no-saved-model", "--tflite", variant, "--no-metadata",
    ]  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def killed_swap_once(detector_like, tmp_path_factory):
    """An export (float16) replaced by another (float32) with ``--overwrite``, killed between the renames: made
    once (an export and a killed export in a subprocess), copied for each test by ``killed_swap``."""
    output = tmp_path_factory.mktemp("killed_swap") / "export"
    export_model(
        detector_like["keras"], output, saved_model=False, tflite_variants=["float16"], metadata=False
    )
    old = _files(output)
    env = {**os.environ, KILL_ENV: "export:old-moved", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        _export_command(detector_like["keras"], output, "float32"), env=env, capture_output=True, text=True
    )
    assert result.returncode == KILLED, result.stderr
    assert not output.exists()  # killed between the renames
    (old_folder,) = output.parent.glob(".export.old-*")
    (new_folder,) = output.parent.glob(".export.partial-*")
    assert _files(old_folder) == old and "model_float32.tflite" in _files(new_folder)
    return output, old, _files(new_folder)


@pytest.fixture
def killed_swap(killed_swap_once, tmp_path):
    """A copy of ``killed_swap_once``'s folder (no ``export``, its ``.export.old-*`` and ``.export.partial-*``)
    in this test's tmp_path: ``(output, old files, new files)``."""
    output, old, new = killed_swap_once
    shutil.copytree(output.parent, tmp_path / "swap")
    return tmp_path / "swap" / output.name, old, new


def test_the_next_export_finishes_an_interrupted_swap(killed_swap, detector_like):
    output, old, new = killed_swap
    assert sorted(new) == ["export_report.json", "labels.txt", "model_float32.tflite"]
    # The next export to that path recovers first: here it then refuses (no --overwrite), keeping the export.
    with pytest.raises(ExportError, match="exists; pass --overwrite to replace it"):
        export_model(detector_like["keras"], output, saved_model=False, tflite_variants=["float32"])
    assert _files(output) == new
    assert json.loads(new["export_report.json"])["files"].keys() == {"model_float32.tflite"}
    assert sorted(p.name for p in output.parent.iterdir()) == [".export.lock", "export"]  # no leftovers


def test_an_incomplete_new_export_puts_the_old_one_back(killed_swap):
    output, old, _ = killed_swap
    (new_folder,) = output.parent.glob(".export.partial-*")
    (new_folder / "export_report.json").write_text('{"cut')  # as if the report had not been written whole
    assert "put back the previous folder" in recover_interrupted_swap(output)
    assert _files(output) == old
    assert recover_interrupted_swap(output) is None  # nothing more to do


def test_an_ordinary_overwrite_leaves_only_the_new_export(detector_like, tmp_path):
    output = tmp_path / "export"
    export_model(
        detector_like["keras"], output, saved_model=False, tflite_variants=["float16"], metadata=False
    )
    export_model(
        detector_like["keras"],
        output,
        saved_model=False,
        tflite_variants=["float32"],
        metadata=False,
        overwrite=True,
    )
    assert sorted(_files(output)) == ["export_report.json", "labels.txt", "model_float32.tflite"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.lock", "export"]


def test_a_second_export_to_the_same_path_is_refused_while_one_runs(detector_like, tmp_path):
    output = tmp_path / "export"
    with (
        locked_folder(tmp_path, ".export.lock", "another retinanet export to export"),
        pytest.raises(
            FolderInUseError,
            match=f"in use by another retinanet export to export \\(process {os.getpid()}\\)",
        ),
    ):
        export_model(
            detector_like["keras"], output, saved_model=False, tflite_variants=["float32"], metadata=False
        )
    assert not output.exists()


def test_a_kill_during_tflite_conversion_leaves_nothing_in_the_system_temp_folder(detector_like, tmp_path):
    temp, output = tmp_path / "temp", tmp_path / "out" / "export"
    temp.mkdir()
    env = {**os.environ, KILL_ENV: "tflite:scratch-written", "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(temp)}
    command = _export_command(detector_like["keras"], output, "float32")
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == KILLED, result.stderr
    assert not [p.name for p in temp.iterdir() if "tflite" in p.name or "retinanet" in p.name]
    (staging,) = output.parent.glob(".export.partial-*")
    assert list(staging.glob(".tflite-scratch-*"))  # the converter's scratch went with the staging folder
    env.pop(KILL_ENV)
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert sorted(p.name for p in output.parent.iterdir()) == [".export.lock", "export"]
    # The rerun's output is an uninterrupted export's: the same files, the same model bytes.
    uninterrupted = tmp_path / "clean" / "export"
    subprocess.run(_export_command(detector_like["keras"], uninterrupted, "float32"), env=env, check=True)
    files = sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(uninterrupted).as_posix() for p in uninterrupted.rglob("*") if p.is_file()
    )
    tflite = [name for name in files if name.endswith(".tflite")]
    assert tflite and all((output / n).read_bytes() == (uninterrupted / n).read_bytes() for n in tflite)
