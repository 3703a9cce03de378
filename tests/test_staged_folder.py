"""``evaluate --report`` (through ``atomic.staged_folder``): written beside the folder and renamed into place, so
a kill leaves the folder as it was; a folder that holds files is refused without ``--overwrite``."""

from __future__ import annotations

import subprocess
import sys

from helpers.train_runs import KILLED
from helpers.train_runs import env as kill_env

from keras_retinanet import atomic
from keras_retinanet.cli.retinanet import main

_WRITE_REPORT = """
import sys
from pathlib import Path
from keras_retinanet import atomic
with atomic.staged_folder(sys.argv[1]) as staging:
    (staging / "report.md").write_text("new")
    (staging / "worst").mkdir()
    (staging / "worst" / "a.jpg").write_text("new image")
"""


def _files(folder):
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_kill_leaves_the_folder_as_it_was_and_the_next_run_cleans_up(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("old")
    command = [sys.executable, "-c", _WRITE_REPORT, str(report)]
    killed = subprocess.run(command, env=kill_env("report:staged"), capture_output=True, text=True)
    assert killed.returncode == KILLED, killed.stderr
    assert _files(report) == {"report.md": "old"}
    (leftover,) = tmp_path.glob(".report.partial-*")
    subprocess.run(command, env=kill_env(), check=True)
    assert _files(report) == {"report.md": "new", "worst/a.jpg": "new image"}
    assert not leftover.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_new_folder_is_one_rename(tmp_path):
    with atomic.staged_folder(tmp_path / "r") as staging:
        (staging / "x.txt").write_text("x")
        assert not (tmp_path / "r").exists()
    assert _files(tmp_path / "r") == {"x.txt": "x"} and sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_an_error_in_the_block_leaves_nothing(tmp_path):
    try:
        with atomic.staged_folder(tmp_path / "r") as staging:
            (staging / "x.txt").write_text("x")
            raise RuntimeError("the report failed")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []


def test_evaluate_refuses_a_report_folder_that_holds_files_before_the_model_runs(tmp_path, capsys):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "notes.txt").write_text("mine")
    code = main(
        [
            "evaluate",
            str(tmp_path / "missing.keras"),
            "--data",
            "coco:x.json",
            "--report",
            str(tmp_path / "report"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert (
        f"--report {tmp_path / 'report'} already holds 1 file(s) (e.g. notes.txt)" in err
        and "--overwrite" in err
    )
