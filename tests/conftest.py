"""Shared fixtures. Real data comes from ../shared/datasets (read-only): tests copy what they need to tmp."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from retinanet_testing import copy_bccd_subset, require_shared  # noqa: E402


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Read-only folder with ``bccd`` and ``chess640``; never write into it."""
    return require_shared()


@pytest.fixture
def bccd_subset(tmp_path):
    """Factory: ``bccd_subset(["BloodImage_00000", ...], split="train")`` -> VOC root in tmp_path."""
    return lambda ids, split="train": copy_bccd_subset(tmp_path, ids, split)
