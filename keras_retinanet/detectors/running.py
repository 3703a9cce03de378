"""Running a detector over many images: paths and arrays in, detections out, unreadable files reported."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
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
    orientations: Iterable[int | None] | None = None,
    keep_images: bool = True,
) -> Iterator[PredictionItem]:
    """Run ``detector`` over image paths and/or (H, W, 3) uint8 RGB arrays, one item per input, in order.

    Files are decoded in background threads while the model runs; an unreadable file's item carries ``error``
    (an :class:`ImageReadError`) and no detections; an item's name is the path, or ``image<i>``.

    Args:
        batch_size: images per model call (capped by ``detector.max_batch_size``).
        orientations: per source, an EXIF orientation to apply (see :func:`read_image`); default None.
        keep_images: put the decoded image on each item (for drawing).
    """
    batch_size = max(1, min(batch_size, detector.max_batch_size or batch_size))
    orientations = itertools.repeat(None) if orientations is None else orientations

    def load(job):
        index, source, name, orientation = job
        try:
            if isinstance(source, np.ndarray):
                return index, name, as_rgb(source), None
            return index, name, read_image(source, orientation), None
        except ImageReadError as err:
            return index, name, None, err

    def jobs():
        for index, (source, orientation) in enumerate(zip(sources, orientations)):
            name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"image{index}"
            yield index, source, name, orientation

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        job_iter = jobs()
        # Keep about two batches of decodes in flight.
        pending = [pool.submit(load, job) for job in itertools.islice(job_iter, 2 * batch_size)]
        while pending:
            loaded = [future.result() for future in pending[:batch_size]]
            del pending[:batch_size]
            pending += [pool.submit(load, job) for job in itertools.islice(job_iter, batch_size)]
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
    orientations: Sequence[int | None] | None = None,
) -> list[Detections]:
    """Detections for each path or array (in order); raises on the first unreadable image. ``progress`` shows
    a tqdm bar."""
    from tqdm.auto import tqdm

    results = []
    items = iter_predictions(detector, paths, batch_size, orientations=orientations, keep_images=False)
    for item in tqdm(items, total=len(paths), desc=desc, disable=not progress, unit="img"):
        if item.error is not None:
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
        model: a ``RetinaNet``, a :class:`Detector`, or a model path (see :func:`load_detector`, also for
            ``score_threshold``, ``max_detections``, ``image_size`` and ``class_thresholds``).
        images: one image or a list, each a path or an (H, W, 3) uint8 RGB array (or a (B, H, W, 3) array).
    Returns:
        One :class:`Detections` per image, boxes (D, 4) ``x1, y1, x2, y2`` in the original image's pixels.
    Raises:
        ImageReadError: an image path that cannot be read. ModelFileError: a bad model path.
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
