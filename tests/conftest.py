"""Shared fixtures. Real data comes from ../shared/datasets (read-only): tests copy what they need to tmp."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("KERAS_RETINANET_DATASETS", REPO.parent / "shared" / "datasets"))


def _require_shared() -> Path:
    if not SHARED_DATASETS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the shared datasets at {SHARED_DATASETS}")
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS} (set KERAS_RETINANET_DATASETS)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Read-only folder with ``bccd`` and ``chess640``; never write into it."""
    return _require_shared()


def copy_bccd_subset(destination: Path, image_ids: list[str], split: str = "train") -> Path:
    """Copies a few BCCD images and annotations into a VOC folder under ``destination``."""
    source = _require_shared() / "bccd" / "BCCD"
    root = destination / "BCCD"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id in image_ids:
        shutil.copy(source / "Annotations" / f"{image_id}.xml", root / "Annotations")
        shutil.copy(source / "JPEGImages" / f"{image_id}.jpg", root / "JPEGImages")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(image_ids) + "\n")
    return root


@pytest.fixture
def bccd_subset(tmp_path):
    """Factory: ``bccd_subset(["BloodImage_00000", ...], split="train")`` -> VOC root in tmp_path."""
    return lambda ids, split="train": copy_bccd_subset(tmp_path, ids, split)


def tiny_retinanet(num_classes: int = 3, **kwargs):
    """A small RetinaNet for fast tests: MobileNetV2 x0.35, 32-channel pyramid and heads of one conv."""
    from keras_retinanet import RetinaNet

    options = dict(backbone="mobilenet_v2", backbone_kwargs={"alpha": 0.35}, fpn_channels=32, head_depth=1)
    options.update(kwargs)
    return RetinaNet(num_classes, **options)
