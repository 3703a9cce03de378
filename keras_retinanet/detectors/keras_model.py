"""A ``RetinaNet`` Keras model (in memory or loaded from a ``.keras`` file) as a :class:`Detector`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keras_retinanet.detectors.base import Detections, Detector, ModelFileError
from keras_retinanet.imaging import boxes_to_original, letterbox, parse_image_size


class KerasDetector(Detector):
    """A ``RetinaNet``: images are letterboxed to one size, run in batches, decoded by the model's decoder.

    Args:
        model: the ``RetinaNet`` (``model.detect`` returns padded detections in network-input pixels).
        image_size: (H, W) or int the images are letterboxed to; default the model's ``input_size`` (the size
            it was trained at). Every batch then has the same shape (one trace).
        score_threshold, max_detections: None (default) keeps the model's own decoder settings; a value
            replaces that setting for this detector only (the model is left unchanged).
    """

    kind = "keras"

    def __init__(
        self,
        model: Any,
        image_size: int | Sequence[int] | None = None,
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ):
        if not hasattr(model, "detect") or not hasattr(model, "decoder"):
            raise ModelFileError(f"{type(model).__name__} is not a keras_retinanet RetinaNet (no detect())")
        super().__init__(getattr(model, "class_names", None), score_threshold, max_detections)
        self.model = model
        self.image_size = parse_image_size(image_size) if image_size is not None else model.input_size
        self._function: Callable | None = None

    def _decoder(self):
        """The model's decoder, or a copy with this detector's threshold / detection count."""
        decoder = self.model.decoder
        changes = {}
        if self.score_threshold is not None and self.score_threshold != decoder.score_threshold:
            changes["score_threshold"] = self.score_threshold
        if self.max_detections is not None and self.max_detections != decoder.max_detections:
            changes["max_detections"] = self.max_detections
        if not changes:
            return None
        return type(decoder).from_config({**decoder.get_config(), **changes})

    def _build_function(self) -> Callable:
        import tensorflow as tf

        model = self.model
        custom = self._decoder()

        @tf.function(reduce_retracing=True)
        def run(images):
            if custom is None:
                return model.detect(images)
            # The decoder is read at trace time; swap it in for this trace only.
            saved = model.decoder
            model.decoder = custom
            try:
                return model.detect(images)
            finally:
                model.decoder = saved

        return run

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not len(images):
            return []
        if self._function is None:
            self._function = self._build_function()
        canvases, scales = zip(*(letterbox(image, self.image_size) for image in images), strict=True)
        outputs = self._function(np.stack(canvases).astype(np.float32))
        outputs = {key: np.asarray(value) for key, value in outputs.items()}
        results = []
        for i, (image, scale) in enumerate(zip(images, scales, strict=True)):
            n = int(outputs["num_detections"][i])
            boxes = boxes_to_original(outputs["boxes"][i, :n], scale, image.shape[:2])
            results.append(
                self.make_detections(boxes, outputs["scores"][i, :n], outputs["classes"][i, :n], image.shape)
            )
        return results
