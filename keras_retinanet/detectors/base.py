"""What every detector returns, and the interface the model kinds share."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from keras_retinanet.boxes import clip_boxes
from keras_retinanet.conventions import LABELS_FILE, class_name

MIN_BOX_SIDE = 1.0
"""Detections narrower or lower than one pixel (after clipping to the image) are dropped."""


class ModelFileError(ValueError):
    """The model path is missing, of an unsupported format, or not a RetinaNet detector."""


@dataclasses.dataclass
class Detections:
    """Detections of one image, in its original pixels.

    Attributes:
        boxes: (D, 4) float32 absolute ``x1, y1, x2, y2`` pixels of the original image.
        scores: (D,) float32, sorted high to low.
        classes: (D,) int32 class ids in 0..K-1.
        names: D class names (``str(id)`` when the model has none).
        image_size: (height, width) of the original image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: list[str]
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict:
        """Plain Python lists (JSON-ready)."""
        return {
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "classes": self.classes.tolist(),
            "names": list(self.names),
            "image_size": list(self.image_size),
        }

    def remap_classes(self, mapping: np.ndarray, names: Sequence[str] | None = None) -> Detections:
        """New detections with class ids ``mapping[class]``; rows mapped to a negative id are dropped."""
        classes = np.asarray(mapping)[self.classes] if len(self.classes) else self.classes
        keep = classes >= 0
        new_names = (
            [names[c] for c in classes[keep]] if names is not None else list(np.array(self.names)[keep])
        )
        return Detections(
            self.boxes[keep], self.scores[keep], classes[keep].astype(np.int32), new_names, self.image_size
        )


class Detector:
    """Common interface of the model kinds: (H, W, 3) uint8 RGB images of any sizes in, one
    :class:`Detections` per image out, in that image's pixels.

    Attributes:
        format: ``"keras"``, ``"saved_model"``, ``"tflite"``, ...
        class_names: the model's K class names (class id k is ``class_names[k]``); may be empty if unknown.
        max_batch_size: the largest batch one call runs (1 for TFLite; None: any).
        score_threshold, max_detections: filters on the model's output; None keeps what the model returns.
        class_thresholds: (K,) float32 per-class score thresholds on top of ``score_threshold``, or None.
    """

    format = "base"
    max_batch_size: int | None = None

    def __init__(
        self, class_names: Sequence[str] | None, score_threshold: float | None, max_detections: int | None
    ):
        self.class_names = [str(n) for n in (class_names or [])]
        self.score_threshold = None if score_threshold is None else float(score_threshold)
        self.max_detections = None if max_detections is None else int(max_detections)
        self.class_thresholds: np.ndarray | None = None

    def set_class_thresholds(self, thresholds) -> None:
        """Keep a detection of class k only when its score is >= ``thresholds[k]``.

        ``thresholds``: a ``{class name: score}`` mapping, the path of a thresholds file
        (``keras_retinanet.detectors.class_thresholds``), or None to remove them.
        """
        from keras_retinanet.detectors.class_thresholds import class_threshold_array

        self.class_thresholds = (
            None if thresholds is None else class_threshold_array(thresholds, self.class_names)
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """One :class:`Detections` per (H_i, W_i, 3) uint8 RGB image (sizes may differ)."""
        raise NotImplementedError

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return self.detect(images)

    def close(self) -> None:
        """Release what the detector holds (MediaPipe's task runner); nothing for the other kinds."""

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def make_detections(self, boxes, scores, classes, image_size: Sequence[int]) -> Detections:
        """One image's :class:`Detections` from raw rows with boxes already in original pixels.

        Drops padding (class < 0), non-finite rows, rows under ``score_threshold`` or their class's threshold,
        and boxes under ``MIN_BOX_SIDE`` once clipped to the image (boxes in the letterbox padding collapse so),
        then sorts by score and keeps ``max_detections``.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        classes = np.asarray(classes).reshape(-1)
        classes = (
            np.round(classes).astype(np.int32) if classes.dtype.kind == "f" else classes.astype(np.int32)
        )
        keep = (classes >= 0) & np.isfinite(scores) & np.all(np.isfinite(boxes), 1)
        if self.score_threshold is not None:
            keep &= scores >= self.score_threshold
        if self.class_thresholds is not None and len(self.class_thresholds):
            per_class = self.class_thresholds[np.clip(classes, 0, len(self.class_thresholds) - 1)]
            keep &= (classes >= len(self.class_thresholds)) | (scores >= per_class)
        height, width = (int(s) for s in image_size[:2])
        boxes = clip_boxes(boxes, height, width)
        keep &= (boxes[:, 2] - boxes[:, 0] >= MIN_BOX_SIDE) & (boxes[:, 3] - boxes[:, 1] >= MIN_BOX_SIDE)
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        order = np.argsort(-scores, kind="stable")[: self.max_detections]
        boxes, scores, classes = boxes[order], scores[order], classes[order]
        return Detections(
            boxes, scores, classes, [class_name(c, self.class_names) for c in classes], (height, width)
        )


def find_labels(*folders: str | os.PathLike) -> list[str] | None:
    """Class names from the first ``labels.txt`` (or ``assets/labels.txt``) found in ``folders``."""
    for folder in folders:
        for name in (LABELS_FILE, os.path.join("assets", LABELS_FILE)):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return [line.rstrip("\n\r") for line in f if line.strip()]
    return None
