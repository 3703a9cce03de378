"""Fixtures of the data tests; plain helpers live in data_testing.py (conftest names clash across folders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from data_testing import CHESS_NEGATIVE_TEST_IMAGE_ID


@pytest.fixture
def chess_split(tmp_path, shared_datasets):
    """Factory: ``chess_split("test", limit=None)`` copies a chess640 split (JSON + images) into tmp_path and
    returns the JSON path. With ``limit``, only the first ``limit`` images (and their annotations) are kept,
    plus always the negative image of the test split."""

    def copy(split: str = "test", limit: int | None = None) -> Path:
        source = shared_datasets / "chess640" / split
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
