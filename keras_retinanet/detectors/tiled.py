"""Tiled (sliced) inference around any :class:`Detector`, as SAHI does it (Akyon et al., ICIP 2022).

Per image: overlapping tiles of ``tile_size`` pixels (the last row and column shifted back to end on the edge,
as SAHI's ``get_slice_bboxes``), plus the full image at the model's own size for objects larger than a tile;
each crop through the wrapped detector, its boxes shifted by the crop's corner; all boxes merged by per-class
NMS across crops (:func:`merge_crops`; SAHI merges on intersection-over-smaller instead), sorted by score and
cut to ``max_detections``. Cost: ``tiles + 1`` model runs per image (docs/tiling.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from keras_retinanet.boxes import iou as box_iou
from keras_retinanet.detectors.base import Detections, Detector
from keras_retinanet.imaging import parse_image_size

DEFAULT_MAX_DETECTIONS = 100
# Tiles per image above which a run is refused (16 x 16 tiles: 257 model runs per image).
MAX_TILES_PER_IMAGE = 256


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels along a side of ``length`` pixels, neighbours overlapping by
    ``overlap`` of the tile; the last tile ends on the edge. ``[0]`` when one tile covers the side."""
    if length <= tile:
        return [0]
    step = max(1, int(round(tile * (1.0 - overlap))))
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tile_windows(
    height: int, width: int, tile: tuple[int, int], overlap: float
) -> list[tuple[int, int, int, int]]:
    """``(x1, y1, x2, y2)`` pixel windows of the ``tile`` (H, W) tiles of an image, row by row."""
    return [
        (x, y, min(x + tile[1], width), min(y + tile[0], height))
        for y in tile_starts(height, tile[0], overlap)
        for x in tile_starts(width, tile[1], overlap)
    ]


def merge_crops(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, crops: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Indices of the rows kept by per-class NMS *across crops*, highest score first.

    ``boxes`` (N, 4) xyxy image pixels, ``scores`` (N,), ``classes`` (N,), ``crops`` (N,): the crop each row
    came from. A kept row suppresses rows of its class from other crops with IoU > ``iou_threshold``; rows of
    one crop never suppress each other (the model's decoder already ran NMS on them).
    """
    order = np.argsort(-scores, kind="stable")
    alive = np.ones(len(scores), bool)
    keep = []
    for i in order:
        if alive[i]:
            keep.append(i)
            alive[i] = False
            rivals = np.flatnonzero(alive & (classes == classes[i]) & (crops != crops[i]))
            alive[rivals[box_iou(boxes[i], boxes[rivals])[0] > iou_threshold]] = False
    return np.asarray(keep, np.int64)


class TiledDetector(Detector):
    """Runs ``detector`` on overlapping tiles and on the full image, and merges the boxes (module docstring).

    Args:
        detector: any :class:`Detector`; its score threshold applies to each tile.
        tile_size: tile size in the image's pixels, N or (H, W) (``imaging.parse_image_size``).
        overlap: share of the tile side that neighbouring tiles share, in [0, 1).
        iou_threshold: per-class NMS threshold of the merge.
        full_image: also run the whole image (at the model's size) and merge its boxes.
        batch_size: images (tiles) per call of ``detector`` (capped by its ``max_batch_size``).
        max_detections: detections kept per image after the merge; default the wrapped detector's setting, else
            its Keras model's decoder setting, else 100 (COCO's maxDets), so that AP compares under one cap.
    """

    def __init__(
        self,
        detector: Detector,
        tile_size: int | str | Sequence[int],
        overlap: float = 0.2,
        iou_threshold: float = 0.5,
        full_image: bool = True,
        batch_size: int = 8,
        max_detections: int | None = None,
    ):
        try:
            tile = parse_image_size(tile_size)
        except ValueError as error:
            raise ValueError(f"tile size: {error}") from None
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"tile overlap must be in [0, 1), got {overlap}")
        if max_detections is None:
            max_detections = detector.max_detections
        if max_detections is None:
            decoder = getattr(getattr(detector, "model", None), "decoder", None)
            max_detections = getattr(decoder, "max_detections", None) or DEFAULT_MAX_DETECTIONS
        super().__init__(detector.class_names, None, max_detections)
        self.detector = detector
        self.format = detector.format
        self.tile_size = tile
        self.overlap = float(overlap)
        self.iou_threshold = float(iou_threshold)
        self.full_image = bool(full_image)
        self.batch_size = max(1, min(int(batch_size), detector.max_batch_size or int(batch_size)))
        self._announced: set[tuple[int, int]] = set()

    def plan(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The tile windows of an image (:func:`tile_windows`), announced on stderr the first time each image
        size is seen. Raises ValueError above ``MAX_TILES_PER_IMAGE`` tiles."""
        windows = tile_windows(height, width, self.tile_size, self.overlap)
        if (height, width) in self._announced:
            return windows
        tile = f"{self.tile_size[1]}x{self.tile_size[0]}"
        if len(windows) > MAX_TILES_PER_IMAGE:
            raise ValueError(
                f"--tile {tile} with --tile-overlap {self.overlap:g} cuts a {width}x{height} image into "
                f"{len(windows)} tiles (at most {MAX_TILES_PER_IMAGE}): use larger tiles or less overlap"
            )
        runs = len(windows) + int(self.full_image)
        print(
            f"tiled inference: a {width}x{height} image is cut into {len(windows)} tiles of {tile} (overlap "
            f"{self.overlap:g}){' + the full image' if self.full_image else ''}: {runs} model runs per image",
            file=sys.stderr,
        )
        self._announced.add((height, width))
        return windows

    def _run(self, crops: list[np.ndarray]) -> list[Detections]:
        results = []
        for start in range(0, len(crops), self.batch_size):
            results += self.detector.detect(crops[start : start + self.batch_size])
        return results

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Per image: (D, 4) xyxy boxes in its pixels, merged over its tiles and the full image."""
        crops, owners = [], []  # owners: (image index, x offset, y offset) per crop
        for index, image in enumerate(images):
            height, width = image.shape[:2]
            for x1, y1, x2, y2 in self.plan(height, width):
                crops.append(image[y1:y2, x1:x2])
                owners.append((index, x1, y1))
            if self.full_image:
                crops.append(image)
                owners.append((index, 0, 0))
        parts: list[list[tuple]] = [[] for _ in images]
        for crop, ((index, dx, dy), found) in enumerate(zip(owners, self._run(crops), strict=True)):
            shift = np.array([dx, dy, dx, dy], np.float32)
            parts[index].append((found.boxes + shift, found.scores, found.classes, np.full(len(found), crop)))
        results = []
        for image, found in zip(images, parts, strict=True):
            boxes = np.concatenate([part[0] for part in found]).reshape(-1, 4)
            scores = np.concatenate([part[1] for part in found]).astype(np.float32)
            classes = np.concatenate([part[2] for part in found]).astype(np.int32)
            crop_ids = np.concatenate([part[3] for part in found])
            keep = merge_crops(boxes, scores, classes, crop_ids, self.iou_threshold)
            results.append(self.make_detections(boxes[keep], scores[keep], classes[keep], image.shape))
        return results

    def close(self) -> None:
        self.detector.close()
