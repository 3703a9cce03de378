"""A ``.tflite`` run through MediaPipe Tasks' ``ObjectDetector``: what an Android, iOS or web app will see.

MediaPipe reads the file's TFLite Model Metadata, resizes the image itself and maps the boxes back; this
detector only converts its results, so evaluating it measures the phone's pipeline (docs/mobile.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from keras_retinanet.detectors.base import Detections, Detector, ModelFileError


class MediaPipeDetector(Detector):
    """A ``.tflite`` file with TFLite Model Metadata, run by MediaPipe Tasks' ``ObjectDetector`` (CPU).

    Args:
        path: the ``.tflite`` file (``retinanet export`` writes metadata into every file).
        score_threshold: MediaPipe's ``score_threshold`` option (None: the file's own). Per-class thresholds in
            the file's metadata apply too.
        max_detections: MediaPipe's ``max_results`` (None: what the file returns; a raw file: its decoder's).

    MediaPipe decodes a raw file itself: one class per anchor, class-agnostic NMS at IoU 0.3 (its defaults).
    Raises:
        ModelFileError: mediapipe is not installed, or MediaPipe refuses the file.
    """

    format = "mediapipe"
    max_batch_size = 1

    def __init__(
        self,
        path: str | os.PathLike,
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ):
        from keras_retinanet.detectors.tflite_file import read_detection_metadata

        path = os.fspath(path)
        metadata = read_detection_metadata(path)
        if metadata is None:
            raise ModelFileError(
                f"{path} has no TFLite Model Metadata, which MediaPipe needs (a file exported before "
                "keras_retinanet 0.2?): export it again with `retinanet export MODEL.keras`"
            )
        try:
            import mediapipe
            from mediapipe.tasks import python as tasks
            from mediapipe.tasks.python import vision
        except ImportError as err:
            install = "pip install 'keras-retinanet[mobile]', or pip install --no-deps mediapipe==1.2.3"
            raise ModelFileError(
                f"--runtime mediapipe needs the mediapipe package ({install}): {err}"
            ) from None
        raw_defaults = _raw_file_defaults(metadata)
        if score_threshold is None:
            score_threshold = raw_defaults.get("score_threshold")
        if max_detections is None:
            max_detections = raw_defaults.get("max_detections")
        options = vision.ObjectDetectorOptions(
            base_options=tasks.BaseOptions(model_asset_path=path),
            max_results=-1 if max_detections is None else int(max_detections),
            score_threshold=0.0 if score_threshold is None else float(score_threshold),
        )
        try:
            self._detector = vision.ObjectDetector.create_from_options(options)
        except (ValueError, RuntimeError) as err:
            raise ModelFileError(f"{path}: MediaPipe's ObjectDetector refuses this file: {err}") from None
        self._mediapipe = mediapipe
        self.path = path
        self.image_size = tuple(metadata["input"]["size"])
        super().__init__(metadata["labels"], score_threshold, max_detections)
        if metadata.get("class_thresholds"):
            # MediaPipe turns a score under its class's threshold into 0 (score calibration) and keeps it when the
            # score threshold is 0: drop those rows as an app with a threshold would.
            self.class_thresholds = np.asarray(metadata["class_thresholds"], np.float32)
        self._ids = {name: i for i, name in enumerate(self.class_names)}

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        results = []
        for image in images:
            frame = self._mediapipe.Image(
                image_format=self._mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(image, np.uint8)
            )
            boxes, scores, classes = [], [], []
            # MediaPipe names the class but drops its id when the file has a label map, and merges detections
            # of several classes whose integer boxes coincide into one with several categories: split them.
            for found in self._detector.detect(frame).detections:
                box = found.bounding_box
                for category in found.categories:
                    boxes.append(
                        (box.origin_x, box.origin_y, box.origin_x + box.width, box.origin_y + box.height)
                    )
                    scores.append(category.score)
                    classes.append(self._ids.get(category.category_name, -1))
            results.append(self.make_detections(boxes, scores, classes, image.shape))
        return results

    def close(self) -> None:
        # Closed explicitly: left to garbage collection, MediaPipe's own __del__ fails at interpreter exit.
        if self._detector is not None:
            self._detector.close()
            self._detector = None


def _raw_file_defaults(metadata: dict) -> dict:
    """A raw file's score threshold and maximum detections, which MediaPipe's Python options must restate
    (they override the metadata's): {} for a file with NMS inside."""
    if metadata.get("raw_decoding") is None:
        return {}
    decoder = metadata.get("decoder") or {}
    defaults = {"score_threshold": metadata.get("score_threshold", decoder.get("score_threshold"))}
    if decoder.get("max_detections") is not None:
        defaults["max_detections"] = int(decoder["max_detections"])
    return defaults
