"""Running a detector over many images: paths and arrays in, detections out, unreadable files reported."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from keras_retinanet.detectors.base import Detections, Detector
from keras_retinanet.detectors.loading import load_detector
from keras_retinanet.imaging import ImageReadError, as_rgb, read_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass
class PredictionItem:
    """One input's outcome from :func:`iter_predictions`: detections, or the error that stopped it."""

    index: int
    name: str
    image: np.ndarray | None
    detections: Detections | None
    error: Exception | None = None


def iter_predictions(
    detector: Detector,
    sources: Iterable[Any],
    batch_size: int = 8,
    names: Iterable[str] | None = None,
    orientations: Iterable[int | None] | None = None,
    keep_images: bool = True,
) -> Iterator[PredictionItem]:
    """Run ``detector`` over image paths and/or arrays in batches, yielding one item per input, in order.

    Unreadable files do not stop the run: their item carries ``error`` (an :class:`ImageReadError`) and no
    detections. Files are decoded in a background thread while the model runs.

    Args:
        detector: from :func:`load_detector`.
        sources: image paths or (H, W, 3) uint8 RGB arrays.
        batch_size: images per model call (capped by ``detector.max_batch_size``).
        names: a display name per source (default: the path, or ``image<i>``).
        orientations: per source, an EXIF orientation to apply (see :func:`read_image`); default None.
        keep_images: put the decoded image on each item (for drawing).
    """
    batch_size = max(1, min(batch_size, detector.max_batch_size or batch_size))
    names_iter = iter(names) if names is not None else None
    orient_iter = iter(orientations) if orientations is not None else None

    def load(job):
        index, source, name, orientation = job
        try:
            if isinstance(source, np.ndarray):
                return index, name, as_rgb(source), None
            return index, name, read_image(source, orientation), None
        except ImageReadError as err:
            return index, name, None, err

    def jobs():
        for index, source in enumerate(sources):
            name = (
                next(names_iter)
                if names_iter is not None
                else (os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"image{index}")
            )
            orientation = next(orient_iter) if orient_iter is not None else None
            yield index, source, name, orientation

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        pending: list = []
        job_iter = jobs()
        # Keep about two batches of decodes in flight.
        for job in job_iter:
            pending.append(pool.submit(load, job))
            if len(pending) >= 2 * batch_size:
                break
        while pending:
            batch = pending[:batch_size]
            del pending[:batch_size]
            loaded = [future.result() for future in batch]
            for job in job_iter:
                pending.append(pool.submit(load, job))
                if len(pending) >= 2 * batch_size:
                    break
            good = [item for item in loaded if item[3] is None]
            detections = detector.detect([item[2] for item in good]) if good else []
            found = dict(zip((item[0] for item in good), detections, strict=True))
            for index, name, image, error in loaded:
                yield PredictionItem(index, name, image if keep_images else None, found.get(index), error)


def predict_paths(
    detector: Detector,
    paths: Sequence[str],
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "predict",
    strict: bool = True,
    orientations: Sequence[int | None] | None = None,
) -> list[Detections | None]:
    """Detections for each path or array (in order).

    ``strict``: raise on the first unreadable image, else put None in its place. ``progress`` shows a tqdm bar.
    """
    from tqdm.auto import tqdm

    results: list[Detections | None] = []
    items = iter_predictions(detector, paths, batch_size, orientations=orientations, keep_images=False)
    for item in tqdm(items, total=len(paths), desc=desc, disable=not progress, unit="img"):
        if item.error is not None and strict:
            raise item.error
        results.append(item.detections)
    return results


def predict(
    model: Any,
    images: Any,
    batch_size: int = 8,
    score_threshold: float | None = None,
    max_detections: int | None = None,
    image_size: int | Sequence[int] | None = None,
    class_thresholds: Any = None,
) -> list[Detections]:
    """Detect objects in images: the one-call Python API.

    Args:
        model: a ``RetinaNet``, a :class:`Detector`, or a path to a ``.keras`` / SavedModel / ``.tflite``.
        images: one image or a list of images, each a path or an (H, W, 3) uint8 RGB array (or a
            (B, H, W, 3) array).
        batch_size: images per model call.
        score_threshold, max_detections, image_size: see :func:`load_detector` (None: the model's own).
        class_thresholds: per-class score thresholds, a file or ``{class name: score}`` (see
            :func:`load_detector`).
    Returns:
        One :class:`Detections` per image: boxes (D, 4) ``x1, y1, x2, y2`` in the original image's pixels,
        scores (D,), class ids (D,) and class names.
    Raises:
        ImageReadError: an image path that cannot be read. ModelFileError: a bad model path.

    Example::

        dets = predict("model.keras", ["a.jpg", "b.jpg"], score_threshold=0.3)
        for box, name, score in zip(dets[0].boxes, dets[0].names, dets[0].scores): ...
    """
    detector = load_detector(
        model,
        image_size=image_size,
        score_threshold=score_threshold,
        max_detections=max_detections,
        class_thresholds=class_thresholds,
    )
    if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    return predict_paths(detector, list(images), batch_size)
