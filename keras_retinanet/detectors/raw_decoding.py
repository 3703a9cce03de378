"""Detections from a raw .tflite's two outputs (``retinanet export --profile raw``), outside the model, by the
Keras model's own ``DetectionDecoder`` and ``BoxCoder`` with the anchors, scales and NMS settings of the file's
metadata: a raw file gives what the 4-output file gives (one candidate level, no per-level top-k)."""

from __future__ import annotations

from typing import Any

import numpy as np

# What MediaPipe does with a raw file whose metadata holds no decoder settings (files of other writers):
# class-agnostic NMS at IoU 0.3 (its min_suppression_threshold default), at most 100 detections.
MEDIAPIPE_DEFAULT_DECODER = {
    "score_threshold": 0.0,
    "nms_iou_threshold": 0.3,
    "max_detections": 100,
    "class_agnostic": True,
}
_EPSILON = 1e-7  # keeps the logits of scores 0 and 1 finite


class RawDecoder:
    """Decodes a raw file's outputs as the Keras decoder does; ``metadata``: ``read_detection_metadata`` of the
    file, ``image_size``: (H, W) of its input. ValueError for linear box sizes (not reproducible here)."""

    def __init__(self, metadata: dict[str, Any], image_size: tuple[int, int]):
        from keras_retinanet.model.box_coder import BoxCoder
        from keras_retinanet.model.decode import DetectionDecoder

        decoding = metadata["raw_decoding"]
        if not decoding["apply_exponential_on_box_size"]:
            raise ValueError(
                "raw files with linear box sizes (apply_exponential_on_box_size false) are not supported"
            )
        settings = dict(metadata.get("decoder") or MEDIAPIPE_DEFAULT_DECODER)
        if metadata.get("decoder") is None and metadata.get("score_threshold") is not None:
            settings["score_threshold"] = metadata["score_threshold"]
        height, width = image_size
        yc, xc, h, w = np.asarray(decoding["anchors"], np.float64).T
        # Normalised (yc, xc, h, w) -> xyxy pixels of the input, as the Keras decoder takes them.
        self.anchors = np.stack(
            [(xc - w / 2) * width, (yc - h / 2) * height, (xc + w / 2) * width, (yc + h / 2) * height], axis=1
        ).astype(np.float32)
        y_scale, x_scale, h_scale, w_scale = decoding["scales"]
        self.box_coder = BoxCoder(weights=(x_scale, y_scale, w_scale, h_scale), clamp=float("inf"))
        self.decoder = DetectionDecoder(
            score_threshold=settings["score_threshold"],
            topk_per_level=len(self.anchors),
            nms_iou_threshold=settings["nms_iou_threshold"],
            max_detections=settings["max_detections"],
            class_agnostic=settings["class_agnostic"],
        )
        self.sigmoid_score = bool(decoding["sigmoid_score"])
        self.image_size = (height, width)
        self.settings = settings

    def __call__(
        self, encodings: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (n, 4) xyxy pixels of the input, scores (n,), classes (n,)) from encodings (1, N, 4)
        (ty, tx, th, tw) and scores (1, N, K) (logits where the metadata says ``sigmoid_score``)."""
        encodings = np.asarray(encodings, np.float32).reshape(1, -1, 4)
        deltas = encodings[..., [1, 0, 3, 2]]  # (dx, dy, dw, dh), the box coder's order
        scores = np.asarray(scores, np.float32)
        if self.sigmoid_score:
            logits = scores
        else:
            clipped = np.clip(scores.astype(np.float64), _EPSILON, 1.0 - _EPSILON)
            logits = np.log(clipped / (1.0 - clipped)).astype(np.float32)
        out = self.decoder(
            logits, deltas, self.anchors, [len(self.anchors)], self.box_coder, image_shape=self.image_size
        )
        count = int(np.asarray(out["num_detections"])[0])
        return (
            np.asarray(out["boxes"])[0, :count],
            np.asarray(out["scores"])[0, :count],
            np.asarray(out["classes"])[0, :count],
        )
