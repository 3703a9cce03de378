"""Evaluating any detector on any data set: run it over the images, then score with pycocotools."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_retinanet.detectors import load_detector, predict_paths
from keras_retinanet.evaluation.coco import evaluate_detections

logger = logging.getLogger(__name__)


def evaluate_model(
    model: Any,
    data: Any,
    class_names: Sequence[str] | None = None,
    batch_size: int = 8,
    image_size: tuple[int, int] | None = None,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    pr_curve_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Run a model over a data set and return :func:`evaluate_detections`'s metrics.

    Args:
        model: anything :func:`keras_retinanet.detectors.load_detector` accepts (a ``RetinaNet``, a ``.keras``
            file, a SavedModel directory, a ``.tflite`` file, a ``Detector``).
        data: see :func:`resolve_examples`.
        class_names: the data set's class names when ``data`` is a plain list (default: the model's).
        batch_size, image_size, score_threshold, max_detections: passed to the detector (None: the model's).
        pr_curve_dir: optional folder for per-class precision-recall PNGs.

    Detections are mapped to the data set's classes by name (:func:`class_remapping`).
    """
    examples, detections, data_names = collect_detections(
        model, data, class_names, batch_size, image_size, score_threshold, max_detections, progress
    )
    return evaluate_detections(examples, detections, data_names, pr_curve_dir=pr_curve_dir)


def collect_detections(
    model: Any,
    data: Any,
    class_names: Sequence[str] | None = None,
    batch_size: int = 8,
    image_size: tuple[int, int] | None = None,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    progress: bool = True,
) -> tuple[list, list, list[str]]:
    """Run a model over a data set: ``(examples, detections, class_names)``, detections in the data set's class
    ids (arguments as in :func:`evaluate_model`)."""
    detector = load_detector(
        model,
        image_size=image_size,
        score_threshold=score_threshold,
        max_detections=max_detections,
    )
    examples, data_names = resolve_examples(data, class_names, detector.class_names)
    if data_names is None:
        data_names = list(detector.class_names or [])
    if not data_names:
        raise ValueError("class names unknown: pass class_names or a data set with class names")
    remap = class_remapping(detector.class_names, data_names)
    paths = [str(example["image_path"]) for example in examples]
    # The pipeline applies each example's EXIF orientation to the pixels; the boxes refer to that image.
    orientations = [int(example.get("orientation", 1) or 1) for example in examples]
    detections = predict_paths(
        detector,
        paths,
        batch_size=batch_size,
        progress=progress,
        desc="evaluate",
        orientations=orientations,
    )
    if remap is not None:
        detections = [det.remap_classes(remap) for det in detections]
    return examples, detections, data_names


def resolve_examples(
    data: Any, class_names: Sequence[str] | None = None, model_class_names: Sequence[str] | None = None
) -> tuple[list, list | None]:
    """``(examples, class_names)`` of ``data``: a data set with ``.examples`` / ``.class_names``, a spec string
    (loaded with ``model_class_names`` as the class list, so class ids follow the model's), or a list of example
    dicts (``class_names`` names their class ids)."""
    if isinstance(data, (str, os.PathLike)):
        from keras_retinanet.data import load_dataset

        data = load_dataset(
            os.fspath(data), class_names=list(model_class_names) if model_class_names else None
        )
    if hasattr(data, "examples"):
        names = getattr(data, "class_names", None) or class_names
        return list(data.examples), (list(names) if names is not None else None)
    examples = list(data)
    if examples and not isinstance(examples[0], Mapping):
        raise TypeError("data must be a data set with .examples, a spec string, or a list of example dicts")
    return examples, (list(class_names) if class_names is not None else None)


def class_remapping(model_names: Sequence[str] | None, data_names: Sequence[str]) -> np.ndarray | None:
    """``m`` (K_model,) int64 with ``m[model_id] = data_id`` (-1: not in the data) mapping classes by name, or None
    when the names are the same or share nothing."""
    if not model_names or list(model_names) == list(data_names):
        return None
    index = {name: i for i, name in enumerate(data_names)}
    if not set(model_names) & set(index):
        logger.warning(
            "the model's class names %s share nothing with the data set's %s; using class ids as they are",
            list(model_names)[:5],
            list(data_names)[:5],
        )
        return None
    missing = [name for name in model_names if name not in index]
    if missing:
        logger.warning("model classes not in the data set (their detections are dropped): %s", missing)
    return np.array([index.get(name, -1) for name in model_names], np.int64)
