"""Tiny ``retinanet train`` runs in a subprocess, for the kill, resume and NaN tests.

The kills are real SIGKILLs, placed by the fault-injection hook of ``keras_retinanet.atomic``
(``KERAS_RETINANET_KILL_AT=FILE:written``: the temporary file is complete, not yet renamed; ``FILE:renamed``:
right after the rename; ``@N``: the N-th time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

from keras_retinanet.atomic import KILL_ENV, PARTIAL_MARK

KILLED = -signal.SIGKILL


def env(kill_at: str | None = None) -> dict:
    values = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    values.pop(KILL_ENV, None)
    if kill_at:
        values[KILL_ENV] = kill_at
    return values


def train_command(spec: str, output: Path, epochs: int, *extra: str) -> list[str]:
    """A tiny run: MobileNetV2 x0.35 from scratch, 16-channel pyramid, one-conv heads, 64 px, 2 steps of 2 images."""
    return [
        sys.executable, "-m", "keras_retinanet", "train", "--data", spec, "--output", str(output),
        "--backbone", "mobilenet_v2", "--weights", "none", "--backbone-kwargs", '{"alpha": 0.35}',
        "--fpn-channels", "16",
        "--head-depth", "1", "--image-size", "64", "--batch-size", "2", "--epochs", str(epochs),
        "--steps-per-epoch", "2", "--warmup-steps", "0", "--precise-bn-batches", "0", "--no-tensorboard",
        "--verbose", "2", *extra,
    ]  # fmt: skip


def run_train(command: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=env(kill_at), timeout=600)


def committed_epochs(output: Path) -> list[int]:
    """Epochs of the committed training states in ``output/backup`` (those with a marker)."""
    return sorted(json.loads(p.read_text())["epoch"] for p in (output / "backup").glob("epoch-*.json"))


def partial_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(f".*{PARTIAL_MARK}*"))


def assert_valid_keras_file(path: Path) -> None:
    assert zipfile.is_zipfile(path), f"{path} is not a zip"
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert {"config.json", "model.weights.h5"} <= set(archive.namelist())
