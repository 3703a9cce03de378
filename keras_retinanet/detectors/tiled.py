"""Tiled (sliced) inference around any :class:`Detector`, as SAHI does it (Akyon et al., "Slicing Aided Hyper
Inference and Fine-tuning for Small Object Detection", ICIP 2022; https://github.com/obss/sahi).

An object of 15 px in a 2000 px photo shrinks to 4 px when the photo is letterboxed to 512: below what the P3
anchors (32 px) can match. Cutting the photo into tiles of, say, 512 px and running the model on each tile at
its own input size keeps such objects at their native scale. Per image:

1. tiles of ``tile_size`` (H x W) pixels, neighbours overlapping by ``overlap`` of the tile side, the
   last row and column shifted back to end on the image edge (SAHI's ``get_slice_bboxes``); an image side
   shorter than the tile gives one tile spanning that side;
2. the full image as well, at the model's own input size (SAHI's ``perform_standard_pred``), for the objects
   larger than a tile;
3. every tile and the full image through the wrapped detector in batches (its ``max_batch_size``: 1 for
   TFLite), each tile's boxes shifted by the tile's corner;
4. all boxes merged by per-class NMS across crops at ``iou_threshold`` (the paper's 0.5, the decoder's
   default; see :func:`merge_crops`), then sorted by score and cut to ``max_detections``.

SAHI merges with greedy non-maximum *merging* on intersection-over-smaller by default; plain NMS on IoU is
simpler and keeps every box a real model output, but an object cut by a tile edge may survive as a partial
box beside the full one.

Cost: about ``tiles + 1`` model runs per image (a 1280 x 960 photo in 512 px tiles at 0.2 overlap: 3 x 3 tiles,
10 runs).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from keras_retinanet.boxes import iou as box_iou
from keras_retinanet.detectors.base import Detections, Detector
from keras_retinanet.imaging import parse_image_size

DEFAULT_MAX_DETECTIONS = 100
# Tiles per image above which a run is refused: 16 x 16 tiles already mean 257 model runs per image. The
# absurd settings this catches (32 px tiles at 0.95 overlap: tens of thousands) would run for hours unannounced.
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

    Args:
        boxes: (N, 4) xyxy in the image's pixels; scores (N,); classes (N,) int; crops (N,) int, which crop
            (tile or full image) each row came from.
    Greedy in score order: a kept row suppresses the rows of the same class from other crops that overlap it by
    IoU > ``iou_threshold``. Rows from one crop never suppress each other: the model's own decoder already ran
    NMS on them, and running it again on boxes clipped to the image would make one tile differ from untiled.
    """
    order = np.argsort(-scores, kind="stable")
    alive = np.ones(len(scores), bool)
    keep = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(i)
        alive[i] = False
        rivals = np.flatnonzero(alive & (classes == classes[i]) & (crops != crops[i]))
        if not len(rivals):
            continue
        alive[rivals[box_iou(boxes[i], boxes[rivals])[0] > iou_threshold]] = False
    return np.asarray(keep, np.int64)


class TiledDetector(Detector):
    """Runs ``detector`` on overlapping tiles and on the full image, and merges the boxes (module docstring).

    Args:
        detector: any :class:`Detector` (Keras, SavedModel, TFLite, MediaPipe); its score threshold applies to
            each tile.
        tile_size: tile size in the image's pixels, N or (H, W) (``imaging.parse_image_size``); a tile of the
            model's input aspect ratio is letterboxed without padding (e.g. 480 x 640 for a 288 x 384 model
            trained on 480 x 640 photos: tiles then run at the training scale).
        overlap: share of the tile side that neighbouring tiles share, in [0, 1).
        iou_threshold: per-class NMS threshold of the merge.
        full_image: also run the whole image (at the model's size) and merge its boxes.
        batch_size: images (tiles) per call of ``detector`` (capped by its ``max_batch_size``).
        max_detections: detections kept per image after the merge; default the wrapped detector's setting, else
            its Keras model's decoder setting, else 100 (the paper's, and COCO's maxDets): a tiled image then
            reports no more boxes than an untiled one, and AP compares under the same cap.
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
        self.kind = detector.kind
        self.tile_size = tile
        self.overlap = float(overlap)
        self.iou_threshold = float(iou_threshold)
        self.full_image = bool(full_image)
        self.batch_size = max(1, min(int(batch_size), detector.max_batch_size or int(batch_size)))
        self._announced: set[tuple[int, int]] = set()

    def plan(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The tile windows of an image of ``height`` x ``width`` (:func:`tile_windows`), announced on stderr the
        first time each image size is seen. Raises ValueError above ``MAX_TILES_PER_IMAGE`` tiles."""
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
