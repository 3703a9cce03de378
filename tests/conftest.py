"""Shared fixtures. Real data comes from ../shared/datasets (read-only): tests copy what they need to tmp."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The benchmark protocol lives in tools/benchmarking, beside the commands that run it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from retinanet_testing import seeded_keras_home  # noqa: E402

# Before anything imports Keras, which reads KERAS_HOME once.
os.environ["KERAS_HOME"] = seeded_keras_home()

import pytest  # noqa: E402
from helpers.ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402, F401
from retinanet_testing import (  # noqa: E402
    copy_bccd_subset,
    make_detector_like_files,
    network_guard,
    require_shared,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test may download anything (CI has no network): a connection or name lookup of any host but this
    machine's loopback fails the test. Loopback stays open for the multi-worker training test's ports."""
    guarded_connect, guarded_lookup = network_guard(socket.socket.connect, socket.getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Read-only folder with ``bccd`` and ``chess640``; never write into it."""
    return require_shared()


@pytest.fixture
def bccd_subset(tmp_path):
    """Factory: ``bccd_subset(["BloodImage_00000", ...], split="train")`` -> VOC root in tmp_path."""
    return lambda ids, split="train": copy_bccd_subset(tmp_path, ids, split)


@pytest.fixture(scope="session")
def detector_like(tmp_path_factory) -> dict:
    """A tiny RetinaNet that detects things (``retinanet_testing.make_detector_like_files``): paths of its
    ``.keras`` and float32 ``.tflite`` files and of 4 synthetic images. Load a fresh copy to modify it."""
    return make_detector_like_files(tmp_path_factory.mktemp("detector_like"))
