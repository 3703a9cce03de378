"""A SavedModel written by ``keras_retinanet.export`` as a :class:`Detector`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from keras_retinanet.detectors.base import Detections, Detector, ModelFileError, find_labels


def load_saved_model(path: str):
    """``tf.saved_model.load(path)``; a :class:`ModelFileError` naming the folder if it is incomplete or corrupt."""
    import tensorflow as tf

    index = os.path.join(path, "variables", "variables.index")
    if not os.path.isfile(index):
        raise ModelFileError(
            f"{path}: the SavedModel is incomplete: {index} is missing (copy the whole export folder, or export "
            "again)"
        )
    try:
        return tf.saved_model.load(path)
    except Exception as err:  # noqa: BLE001 - IndexError, DataLossError, ...: all mean "not loadable"
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise ModelFileError(
            f"{path}: TensorFlow cannot load this SavedModel ({type(err).__name__}: {first}): truncated or "
            "corrupt; copy or export it again"
        ) from err


class SavedModelDetector(Detector):
    """A SavedModel exported by ``keras_retinanet.export`` (contract: ``keras_retinanet.export.saved_model``).

    Runs the signature that takes encoded images (``tf.string``; sent PNG-encoded, so the model sees exactly the
    pixels given). Class names: the ``class_names`` variable, else ``labels.txt``. ``score_threshold`` and
    ``max_detections`` can only tighten the export's own.
    """

    format = "saved_model"

    def __init__(
        self,
        path: str | os.PathLike,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        class_names: Sequence[str] | None = None,
    ):
        import tensorflow as tf

        path = os.fspath(path)
        loaded = load_saved_model(path)
        self._loaded = loaded  # keep the object alive: signatures reference its variables
        signature, input_name = None, None
        for key in ["serving_default"] + sorted(loaded.signatures.keys()):
            if key not in loaded.signatures:
                continue
            candidate = loaded.signatures[key]
            _, kwargs = candidate.structured_input_signature
            strings = [name for name, spec in kwargs.items() if spec.dtype == tf.string]
            if len(kwargs) == 1 and strings:
                signature, input_name = candidate, strings[0]
                break
        if signature is None:
            raise ModelFileError(
                f"{path}: no SavedModel signature takes encoded images (tf.string); signatures: "
                f"{sorted(loaded.signatures.keys())}. Is this a keras_retinanet export?"
            )
        missing = {"boxes", "scores", "classes", "num_detections"} - set(signature.structured_outputs)
        if missing:
            raise ModelFileError(f"{path}: the serving signature lacks outputs {sorted(missing)}")
        names = class_names
        if not names and hasattr(loaded, "class_names"):
            names = [n.decode("utf-8") for n in np.asarray(loaded.class_names.numpy()).reshape(-1)]
        names = names or find_labels(path, os.path.dirname(os.path.abspath(path)))
        super().__init__(names, score_threshold, max_detections)
        self.image_size = (
            tuple(int(v) for v in loaded.image_size.numpy()) if hasattr(loaded, "image_size") else None
        )
        self._signature, self._input_name, self._tf = signature, input_name, tf

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        import cv2

        if not len(images):
            return []
        encoded = []
        for image in images:
            bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
            ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:
                raise RuntimeError("PNG encoding failed")
            encoded.append(data.tobytes())
        outputs = self._signature(**{self._input_name: self._tf.constant(encoded)})
        outputs = {key: np.asarray(value) for key, value in outputs.items()}
        results = []
        for i, image in enumerate(images):
            n = int(np.asarray(outputs["num_detections"][i]).reshape(-1)[0])
            rows = [outputs[key][i, :n] for key in ("boxes", "scores", "classes")]
            results.append(self.make_detections(*rows, image.shape))
        return results
