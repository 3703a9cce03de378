"""Fixtures of the data tests; plain helpers live in data_testing.py (conftest names clash across folders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from data_testing import CHESS_NEGATIVE_TEST_IMAGE_ID
from retinanet_testing import CHESS_FIXTURES, require_shared


def _chess_source(split: str, limit: int | None) -> Path:
    """The vendored split (tests/fixtures) when it holds the first ``limit`` images, else the shared full set."""
    fixture = CHESS_FIXTURES / split / "_annotations.coco.json"
    if limit is not None and fixture.is_file():
        images = json.loads(fixture.read_text())["images"]
        vendored = [
            image for image in images if image["id"] != CHESS_NEGATIVE_TEST_IMAGE_ID or split != "test"
        ]
        if limit <= len(vendored):
            return fixture.parent
    return require_shared() / "chess640" / split


@pytest.fixture
def chess_split(tmp_path):
    """Factory: ``chess_split("test", limit=None)`` copies a chess640 split (JSON + images) into tmp_path and
    returns the JSON path. With ``limit``, only the first ``limit`` images (and their annotations) are kept,
    plus always the negative image of the test split. Up to 4 test and 2 valid images come from the vendored
    fixtures; more (or the whole split) need the shared full set."""

    def copy(split: str = "test", limit: int | None = None) -> Path:
        source = _chess_source(split, limit)
        data = json.loads((source / "_annotations.coco.json").read_text())
        if limit is not None:
            keep = {img["id"] for img in data["images"][:limit]}
            if split == "test":
                keep.add(CHESS_NEGATIVE_TEST_IMAGE_ID)
            data["images"] = [img for img in data["images"] if img["id"] in keep]
            data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        root = tmp_path / "chess" / split
        root.mkdir(parents=True)
        for img in data["images"]:
            shutil.copy(source / img["file_name"], root / img["file_name"])
        path = root / "_annotations.coco.json"
        path.write_text(json.dumps(data))
        return path

    return copy
