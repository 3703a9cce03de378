"""Helpers shared by the tests (a module of its own: ``conftest`` names clash between test folders)."""

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("KERAS_RETINANET_DATASETS", REPO.parent / "shared" / "datasets"))


def require_shared() -> Path:
    """The read-only shared datasets folder; skips the test without it, except in CI where it must exist."""
    if not SHARED_DATASETS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the shared datasets at {SHARED_DATASETS}")
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS} (set KERAS_RETINANET_DATASETS)")
    return SHARED_DATASETS


def tiny_retinanet(num_classes: int = 3, **kwargs):
    """A small RetinaNet for fast tests: MobileNetV2 x0.35, 32-channel pyramid and heads of one conv."""
    from keras_retinanet import RetinaNet

    options = dict(backbone="mobilenet_v2", backbone_kwargs={"alpha": 0.35}, fpn_channels=32, head_depth=1)
    options.update(kwargs)
    return RetinaNet(num_classes, **options)


def copy_bccd_subset(destination: Path, image_ids: list[str], split: str = "train") -> Path:
    """Copies a few BCCD images and annotations into a VOC folder under ``destination``."""
    source = require_shared() / "bccd" / "BCCD"
    root = destination / "BCCD"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id in image_ids:
        shutil.copy(source / "Annotations" / f"{image_id}.xml", root / "Annotations")
        shutil.copy(source / "JPEGImages" / f"{image_id}.jpg", root / "JPEGImages")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(image_ids) + "\n")
    return root
