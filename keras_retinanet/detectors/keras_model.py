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
        image_size: (H, W) or int the images are letterboxed to; default the model's ``image_size``.
        score_threshold, max_detections: None keeps the model's decoder settings; a value replaces one for this
            detector only.
        precision: ``"float32"`` or ``"bf16"`` (computes in bfloat16, decodes in float32; fast only on hardware
            with bfloat16 units: ``keras_retinanet.detectors.machine.bf16_support``).
        fold_batchnorm: run the inference graph (BatchNorm folded; the same detections up to float rounding).

    With ``fold_batchnorm`` or bf16 the detector runs a copy of the weights, refreshed when the model's optimiser
    has taken steps since; after ``set_weights`` or ``load_weights`` call :meth:`refresh`.
    """

    format = "keras"

    def __init__(
        self,
        model: Any,
        image_size: int | Sequence[int] | None = None,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        precision: str = "float32",
        fold_batchnorm: bool = True,
    ):
        from keras_retinanet.model.inference_graph import dtype_policy

        if not hasattr(model, "detect") or not hasattr(model, "decoder"):
            raise ModelFileError(f"{type(model).__name__} is not a keras_retinanet RetinaNet (no detect())")
        dtype_policy(precision)  # checks the name
        super().__init__(getattr(model, "class_names", None), score_threshold, max_detections)
        self.model = model
        self.image_size = parse_image_size(image_size) if image_size is not None else model.image_size
        self.precision = precision
        self.fold_batchnorm = bool(fold_batchnorm)
        self._function: Callable | None = None
        self._inference: Any = None  # the copy that runs (the model itself when nothing is changed)
        self._inference_step: int | None = None

    def _optimizer_step(self) -> int | None:
        iterations = getattr(getattr(self.model, "optimizer", None), "iterations", None)
        return None if iterations is None else int(iterations.numpy())

    def inference_model(self) -> Any:
        """The model that runs: ``inference_graph.inference_model`` of ``model`` (made once), or ``model``."""
        from keras_retinanet.model.inference_graph import inference_model
        from keras_retinanet.model.retinanet import RetinaNet

        if self._inference is None:
            changed = self.fold_batchnorm or self.precision != "float32"
            if changed and isinstance(self.model, RetinaNet):
                self._inference = inference_model(self.model, self.precision, self.fold_batchnorm)
            else:
                self._inference = self.model
            self._inference_step = self._optimizer_step()
        elif self._inference is not self.model and self._optimizer_step() != self._inference_step:
            self.refresh()
        return self._inference

    def refresh(self) -> None:
        """Copies the model's current weights into the inference copy (no retrace)."""
        from keras_retinanet.model.inference_graph import update_inference_weights

        if self._inference is not None and self._inference is not self.model:
            update_inference_weights(self._inference, self.model)
        self._inference_step = self._optimizer_step()

    def _decoder(self):
        """None, or a copy of the model's decoder with this detector's threshold / detection count."""
        decoder = self.model.decoder
        ours = {"score_threshold": self.score_threshold, "max_detections": self.max_detections}
        changes = {k: v for k, v in ours.items() if v is not None and v != getattr(decoder, k)}
        return type(decoder).from_config({**decoder.get_config(), **changes}) if changes else None

    def _build_function(self) -> Callable:
        import tensorflow as tf

        model = self.inference_model()
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
        else:
            self.inference_model()  # refreshes the copy after training steps
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
