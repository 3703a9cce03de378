"""Shared fixtures. Real data comes from ../shared/datasets (read-only): tests copy what they need to tmp."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from retinanet_testing import copy_bccd_subset, make_detector_like_files, require_shared  # noqa: E402


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
