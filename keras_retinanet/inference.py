"""Inference: images in, detections in original image pixels out, for three kinds of model files.

One small interface, :class:`Detector`, hides what runs the model:

- :class:`KerasDetector`: a ``RetinaNet`` (in memory, or a ``.keras`` file loaded with
  ``keras.saving.load_model``). Images are resized to fit ``image_size`` keeping the aspect ratio and padded
  at the bottom and right (as the training pipeline does), run in batches, and the boxes are scaled back.
- :class:`SavedModelDetector`: a SavedModel directory written by ``keras_retinanet.export`` (or its parent
  export folder). Its string signature takes encoded images of any size and returns boxes in original pixels.
- :class:`TFLiteDetector`: a ``.tflite`` file with ``TFLite_Detection_PostProcess`` outputs (normalised
  ``ymin, xmin, ymax, xmax`` boxes, classes, scores, count), run with ``ai_edge_litert``; batch size 1, fixed
  input size, the image letterboxed like the Keras path.

:func:`load_detector` picks the kind from the path and fails clearly on anything else. :func:`predict` is the
one-call API. Images are numpy (H, W, 3) uint8 **RGB** arrays (or paths, read with :func:`read_image`).

Every detector returns, per image, a :class:`Detections`: ``boxes`` (D, 4) float32 absolute ``x1, y1, x2, y2``
in the original image's pixels (clipped to the image), ``scores`` (D,) float32 sorted high to low,
``classes`` (D,) int32 in 0..K-1, ``names`` (D,) class names.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import statistics
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 512
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MODEL_KINDS = ("keras", "saved_model", "tflite")


class ModelFileError(ValueError):
    """The model path is missing, of an unsupported kind, or not a RetinaNet detector."""


class ImageReadError(OSError):
    """An image file that cannot be read or decoded; ``path`` names it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# ----------------------------------------------------------------------------------------------------------
# Results


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


def _make_detections(boxes, scores, classes, class_names, image_size, score_threshold, max_detections):
    """Filter (score, class >= 0, finite), sort, truncate, clip to the image, and name the detections."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    classes = np.round(classes).astype(np.int32) if classes.dtype.kind == "f" else classes.astype(np.int32)
    keep = (scores >= score_threshold) & (classes >= 0) & np.isfinite(scores) & np.all(np.isfinite(boxes), 1)
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    order = np.argsort(-scores, kind="stable")[:max_detections]
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    height, width = image_size
    boxes = np.clip(boxes, 0.0, np.array([width, height, width, height], np.float32))
    # Boxes that lie entirely in the padding collapse to zero width or height on clipping: drop them.
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in classes]
    return Detections(boxes, scores, classes, names, (int(height), int(width)))


# ----------------------------------------------------------------------------------------------------------
# Images


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, C) array, giving the displayed image."""
    if orientation in (None, 0, 1):
        return image
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: np.swapaxes(x, 0, 1),
        6: lambda x: np.rot90(x, k=-1),
        7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
        8: lambda x: np.rot90(x, k=1),
    }
    if orientation not in ops:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    return np.ascontiguousarray(ops[orientation](image))


def decode_image(
    data: bytes | np.ndarray, orientation: int | None = None, name: str = "<bytes>"
) -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) uint8 RGB array.

    Args:
        data: encoded JPEG / PNG / ... bytes.
        orientation: None applies the file's own EXIF orientation (what an image viewer shows); an int 1..8
            ignores the file's EXIF and applies that orientation (a data set example's ``orientation``).
        name: used in the error message.
    Raises:
        ImageReadError: the bytes cannot be decoded.
    """
    flags = cv2.IMREAD_COLOR if orientation is None else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    buffer = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data, np.uint8)
    image = cv2.imdecode(buffer, flags) if buffer.size else None
    if image is None:
        raise ImageReadError(name, "not a readable image (corrupt, truncated or unsupported format)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return apply_orientation(image, orientation) if orientation is not None else image


def read_image(path: str | os.PathLike, orientation: int | None = None) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (see :func:`decode_image` for ``orientation``).

    Raises:
        ImageReadError: missing, unreadable or corrupt file (the message names it).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ImageReadError(path, err.strerror or str(err)) from None
    return decode_image(data, orientation, name=path)


def _as_hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    height, width = (int(v) for v in image_size)
    return height, width


def letterbox(image: np.ndarray, size: int | Sequence[int]) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize ``image`` to fit into ``size`` keeping the aspect ratio; pad at the bottom and right with zeros.

    The same definition as the exported SavedModel / TFLite files (``export.letterbox_image``):
    bilinear resize to ``round(side * min(H / h, W / w))``, top-left on a zero canvas.

    Args:
        image: (h, w, 3) uint8 RGB.
        size: (H, W) of the output, or one int for a square.
    Returns:
        ``(canvas (H, W, 3) uint8, (scale_y, scale_x))``; a box of the canvas maps back to the original by
        dividing its x coordinates by ``scale_x`` and its y coordinates by ``scale_y``.
    """
    from keras_retinanet.export import letterbox_image

    return letterbox_image(image, _as_hw(size))


# ----------------------------------------------------------------------------------------------------------
# Detectors


class Detector:
    """Common interface of the three model kinds.

    Attributes:
        kind: ``"keras"``, ``"saved_model"`` or ``"tflite"``.
        class_names: the model's K class names (class id k is ``class_names[k]``); may be empty if unknown.
        max_batch_size: the largest batch one call runs (1 for TFLite).
        score_threshold, max_detections: applied to every result.
    """

    kind = "base"
    max_batch_size: int | None = None

    def __init__(self, class_names: Sequence[str] | None, score_threshold: float, max_detections: int):
        self.class_names = list(class_names or [])
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in a batch of (H_i, W_i, 3) uint8 RGB images (sizes may differ).

        Returns one :class:`Detections` per image, boxes in that image's pixels.
        """
        raise NotImplementedError

    def __call__(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return self.detect(images)


class KerasDetector(Detector):
    """A ``RetinaNet`` Keras model.

    Args:
        model: the ``RetinaNet`` (``model.detect`` returns padded detections in network-input pixels).
        image_size: (H, W) or int the images are letterboxed to (default: the model's ``image_size``
            attribute if it has one, else 512). Every batch then has the same shape (one trace).
        score_threshold, max_detections: decoder settings used for these predictions (the model's own
            decoder is left unchanged).
    """

    kind = "keras"

    def __init__(self, model: Any, image_size=None, score_threshold: float = 0.05, max_detections: int = 100):
        super().__init__(getattr(model, "class_names", None), score_threshold, max_detections)
        if not hasattr(model, "detect"):
            raise ModelFileError(f"{type(model).__name__} is not a keras_retinanet RetinaNet (no detect())")
        self.model = model
        self.image_size = _as_hw(image_size or getattr(model, "image_size", None) or DEFAULT_IMAGE_SIZE)
        self._function = None

    def _build_function(self) -> Callable:
        import tensorflow as tf

        model = self.model
        decoder = getattr(model, "decoder", None)
        custom = None
        if decoder is not None and hasattr(decoder, "get_config"):
            config = dict(decoder.get_config())
            if (config.get("score_threshold"), config.get("max_detections")) != (
                self.score_threshold,
                self.max_detections,
            ):
                config.update(score_threshold=self.score_threshold, max_detections=self.max_detections)
                custom = type(decoder).from_config(config)

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
        batch, scales = [], []
        for image in images:
            padded, (scale_y, scale_x) = letterbox(image, self.image_size)
            batch.append(padded)
            scales.append(np.array([scale_x, scale_y, scale_x, scale_y], np.float32))
        outputs = self._function(np.stack(batch).astype(np.float32))
        outputs = {key: np.asarray(value) for key, value in outputs.items()}
        results = []
        for i, (image, scale) in enumerate(zip(images, scales, strict=True)):
            n = int(outputs["num_detections"][i])
            results.append(
                _make_detections(
                    outputs["boxes"][i, :n] / scale,
                    outputs["scores"][i, :n],
                    outputs["classes"][i, :n],
                    self.class_names,
                    image.shape[:2],
                    self.score_threshold,
                    self.max_detections,
                )
            )
        return results


def _find_labels(*folders: str) -> list[str] | None:
    for folder in folders:
        for name in ("labels.txt", os.path.join("assets", "labels.txt")):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return [line.rstrip("\n\r") for line in f if line.strip()]
    return None


class SavedModelDetector(Detector):
    """A SavedModel exported by ``keras_retinanet.export``.

    Uses the signature that takes a batch of encoded images (``tf.string``) and returns ``boxes`` (B, M, 4)
    ``x1, y1, x2, y2`` in each image's original pixels, ``scores`` (B, M), ``classes`` (B, M) and
    ``num_detections`` (B,). Images are sent PNG-encoded, so the model sees exactly the pixels given.
    Class names come from ``labels.txt`` (in the SavedModel's ``assets/``, the directory, or its parent).

    ``score_threshold`` and ``max_detections`` filter the exported model's output; they cannot go below the
    export's own threshold or above its detection count.
    """

    kind = "saved_model"

    def __init__(
        self,
        path: str,
        score_threshold: float = 0.05,
        max_detections: int = 100,
        class_names: Sequence[str] | None = None,
    ):
        import tensorflow as tf

        path = os.fspath(path)
        loaded = tf.saved_model.load(path)
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
        outputs = set(signature.structured_outputs)
        missing = {"boxes", "scores", "classes", "num_detections"} - outputs
        if missing:
            raise ModelFileError(f"{path}: the serving signature lacks outputs {sorted(missing)}")
        names = class_names
        if not names and hasattr(loaded, "class_names"):
            names = [n.decode("utf-8") for n in np.asarray(loaded.class_names.numpy()).reshape(-1)]
        names = names or _find_labels(path, os.path.dirname(os.path.abspath(path)))
        super().__init__(names, score_threshold, max_detections)
        self._signature, self._input_name, self._tf = signature, input_name, tf

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        if not len(images):
            return []
        encoded = []
        for image in images:
            ok, data = cv2.imencode(
                ".png",
                cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 1],
            )
            if not ok:
                raise RuntimeError("PNG encoding failed")
            encoded.append(data.tobytes())
        outputs = self._signature(**{self._input_name: self._tf.constant(encoded)})
        outputs = {key: np.asarray(value) for key, value in outputs.items()}
        results = []
        for i, image in enumerate(images):
            n = int(np.asarray(outputs["num_detections"][i]).reshape(-1)[0])
            results.append(
                _make_detections(
                    outputs["boxes"][i, :n],
                    outputs["scores"][i, :n],
                    outputs["classes"][i, :n],
                    self.class_names,
                    image.shape[:2],
                    self.score_threshold,
                    self.max_detections,
                )
            )
        return results


class TFLiteDetector(Detector):
    """A ``.tflite`` detector with ``TFLite_Detection_PostProcess`` outputs, run by ai_edge_litert.

    Input: one (1, H, W, 3) image (uint8, or float32 in [0, 255]); the image is letterboxed to (H, W) like the
    Keras path. Outputs (the op's order): boxes (1, M, 4) normalised ``ymin, xmin, ymax, xmax`` of the input
    tensor, classes (1, M), scores (1, M), count (1,). Class names: ``labels.txt`` next to the file.

    Args:
        path: the ``.tflite`` file.
        num_threads: interpreter threads (default 1). With ai-edge-litert 2.x and more than one thread, the
            TFLite_Detection_PostProcess op's per-class NMS drops whole classes (see keras_retinanet.export).
        resize: ``"letterbox"`` (default, keeps the aspect ratio as in training) or ``"stretch"``.
    """

    kind = "tflite"
    max_batch_size = 1

    def __init__(
        self,
        path: str,
        score_threshold: float = 0.05,
        max_detections: int = 100,
        class_names: Sequence[str] | None = None,
        num_threads: int = 1,
        resize: str = "letterbox",
    ):
        from ai_edge_litert.interpreter import Interpreter

        path = os.fspath(path)
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelFileError(f"{path}: LiteRT cannot load this file: {err}") from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][-1] != 3:
            raise ModelFileError(
                f"{path}: expected one (1, H, W, 3) image input, got {[tuple(d['shape']) for d in inputs]}"
            )
        self._input = inputs[0]
        self.image_size = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        self._outputs = self._identify_outputs(path)
        if resize not in ("letterbox", "stretch"):
            raise ValueError(f"resize must be 'letterbox' or 'stretch', got {resize!r}")
        self.resize = resize
        names = class_names or _find_labels(os.path.dirname(os.path.abspath(path)))
        super().__init__(names, score_threshold, max_detections)

    def _identify_outputs(self, path: str) -> dict[str, int]:
        """Tensor index of boxes / classes / scores / count, by signature names or by the op's order."""
        details = self.interpreter.get_output_details()
        by_name = {}
        try:
            signatures = self.interpreter.get_signature_list()
        except (AttributeError, RuntimeError):
            signatures = {}
        for key in signatures:
            runner_outputs = self.interpreter.get_signature_runner(key).get_output_details()
            wanted = {"boxes": None, "classes": None, "scores": None, "count": None}
            for name, detail in runner_outputs.items():
                for field in wanted:
                    if field in name.lower() or (field == "count" and "num_detections" in name.lower()):
                        wanted[field] = detail["index"]
            if all(v is not None for v in wanted.values()):
                by_name = wanted
                break
        if by_name:
            return by_name
        if len(details) != 4:
            raise ModelFileError(
                f"{path}: expected the 4 outputs of TFLite_Detection_PostProcess (boxes, classes, scores, "
                f"count), "
                f"got {len(details)}: is this a keras_retinanet TFLite export?"
            )

        # TFLite_Detection_PostProcess names its outputs NAME, NAME:1, NAME:2, NAME:3 in that order.
        def order(detail):
            name = detail["name"]
            suffix = name.rsplit(":", 1)[1] if ":" in name else "0"
            return int(suffix) if suffix.isdigit() else 0

        details = sorted(details, key=order)
        shapes = [tuple(d["shape"]) for d in details]
        if len(shapes[0]) != 3 or shapes[0][-1] != 4:
            raise ModelFileError(
                f"{path}: unexpected output shapes {shapes} for TFLite_Detection_PostProcess"
            )
        return {
            field: d["index"]
            for field, d in zip(("boxes", "classes", "scores", "count"), details, strict=True)
        }

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        height, width = self.image_size
        if self.resize == "letterbox":
            padded, (scale_y, scale_x) = letterbox(image, self.image_size)
            return padded, scale_y, scale_x
        h, w = image.shape[:2]
        resized = cv2.resize(
            image, (width, height), interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
        )
        return resized, height / h, width / w

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        results = []
        in_h, in_w = self.image_size
        for image in images:
            prepared, scale_y, scale_x = self._prepare(image)
            tensor = prepared[None]
            dtype = self._input["dtype"]
            if dtype == np.uint8:
                tensor = tensor.astype(np.uint8)
            elif dtype == np.float32:
                tensor = tensor.astype(np.float32)
            else:
                quant_scale, zero_point = self._input.get("quantization", (0.0, 0))
                if not quant_scale:
                    raise ModelFileError(f"unsupported TFLite input type {dtype}")
                info = np.iinfo(dtype)
                tensor = np.clip(np.round(tensor / quant_scale + zero_point), info.min, info.max).astype(
                    dtype
                )
            self.interpreter.set_tensor(self._input["index"], tensor)
            self.interpreter.invoke()
            get = self.interpreter.get_tensor
            count = int(np.asarray(get(self._outputs["count"])).reshape(-1)[0])
            normalised = np.asarray(get(self._outputs["boxes"]), np.float32).reshape(-1, 4)[:count]
            # (ymin, xmin, ymax, xmax) normalised to the input tensor -> xyxy pixels of the original image.
            boxes = np.stack(
                [
                    normalised[:, 1] * in_w / scale_x,
                    normalised[:, 0] * in_h / scale_y,
                    normalised[:, 3] * in_w / scale_x,
                    normalised[:, 2] * in_h / scale_y,
                ],
                axis=1,
            )
            scores = np.asarray(get(self._outputs["scores"])).reshape(-1)[:count]
            classes = np.asarray(get(self._outputs["classes"])).reshape(-1)[:count]
            results.append(
                _make_detections(
                    boxes,
                    scores,
                    classes,
                    self.class_names,
                    image.shape[:2],
                    self.score_threshold,
                    self.max_detections,
                )
            )
        return results


# ----------------------------------------------------------------------------------------------------------
# Loading


def model_kind(path: str | os.PathLike) -> str:
    """``"keras"``, ``"saved_model"`` or ``"tflite"`` from a model path, checking the file's content.

    Raises:
        ModelFileError: missing path or unsupported kind, with what is accepted.
    """
    path = os.fspath(path)
    accepted = "a .keras file, a SavedModel directory (with saved_model.pb) or a .tflite file"
    if not os.path.exists(path):
        raise ModelFileError(f"model not found: {path} (expected {accepted})")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(
            os.path.join(path, "saved_model", "saved_model.pb")
        ):
            return "saved_model"
        raise ModelFileError(f"{path} is a directory without saved_model.pb; expected {accepted}")
    lower = path.lower()
    with open(path, "rb") as f:
        head = f.read(8)
    if lower.endswith(".tflite"):
        if head[4:8] != b"TFL3":
            raise ModelFileError(f"{path} has a .tflite name but is not a TFLite flatbuffer")
        return "tflite"
    if lower.endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise ModelFileError(f"{path} has a .keras name but is not a Keras archive (zip)")
        return "keras"
    if head[4:8] == b"TFL3":
        return "tflite"
    if lower.endswith((".h5", ".hdf5")):
        raise ModelFileError(f"{path}: legacy HDF5 models are not supported; save the model as .keras")
    if lower.endswith(".pb"):
        raise ModelFileError(f"{path}: pass the SavedModel directory, not the saved_model.pb file")
    raise ModelFileError(f"{path}: unsupported model file; expected {accepted}")


def load_detector(
    model: Any,
    image_size: int | Sequence[int] | None = None,
    score_threshold: float = 0.05,
    max_detections: int = 100,
    num_threads: int | None = None,
) -> Detector:
    """A :class:`Detector` for a model object or a model path.

    Args:
        model: a ``RetinaNet``, a :class:`Detector` (returned as it is), or a path to a ``.keras`` file, a
            SavedModel directory (or an export folder holding ``saved_model/``) or a ``.tflite`` file.
        image_size: letterbox size for Keras models (int or (H, W); default the model's ``image_size``
            attribute, else 512). Ignored by SavedModel (any size) and TFLite (fixed by the file).
        score_threshold: detections with a lower score are dropped.
        max_detections: at most this many detections per image (highest scores).
        num_threads: TFLite interpreter threads (default 1: see ``TFLiteDetector``).
    Raises:
        ModelFileError: missing path, unsupported kind, or not a RetinaNet detector.
    """
    if isinstance(model, Detector):
        return model
    if not isinstance(model, (str, os.PathLike)):
        return KerasDetector(model, image_size, score_threshold, max_detections)
    path = os.fspath(model)
    kind = model_kind(path)
    if kind == "tflite":
        return TFLiteDetector(path, score_threshold, max_detections, num_threads=num_threads or 1)
    if kind == "saved_model":
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            path = os.path.join(path, "saved_model")
        return SavedModelDetector(path, score_threshold, max_detections)
    import keras

    import keras_retinanet.model  # noqa: F401 - registers RetinaNet and its parts for deserialisation

    try:
        loaded = keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - any failure here means "not a loadable RetinaNet"
        raise ModelFileError(f"{path}: cannot load this Keras model: {err}") from err
    if not hasattr(loaded, "detect") or not hasattr(loaded, "decoder"):
        raise ModelFileError(f"{path} holds a {type(loaded).__name__}, not a keras_retinanet RetinaNet")
    return KerasDetector(loaded, image_size, score_threshold, max_detections)


# ----------------------------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass
class PredictionItem:
    """One input's outcome from :func:`iter_predictions`: detections, or the error that stopped it."""

    index: int
    name: str
    image: np.ndarray | None
    detections: Detections | None
    error: Exception | None = None


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
                image = source if source.ndim == 3 else cv2.cvtColor(source, cv2.COLOR_GRAY2RGB)
                return index, name, np.ascontiguousarray(image[..., :3], dtype=np.uint8), None
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
    """Detections for each path (in order). ``strict``: raise on the first unreadable image, else None."""
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
    score_threshold: float = 0.05,
    max_detections: int = 100,
    image_size: int | Sequence[int] | None = None,
) -> list[Detections]:
    """Detect objects in images: the one-call Python API.

    Args:
        model: a ``RetinaNet``, a :class:`Detector`, or a path to a ``.keras`` / SavedModel / ``.tflite``.
        images: one image or a list of images, each a path or an (H, W, 3) uint8 RGB array (or a
            (B, H, W, 3) array).
        batch_size: images per model call.
        score_threshold, max_detections, image_size: see :func:`load_detector`.
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
        model, image_size=image_size, score_threshold=score_threshold, max_detections=max_detections
    )
    if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    results = []
    for item in iter_predictions(detector, list(images), batch_size, keep_images=False):
        if item.error is not None:
            raise item.error
        results.append(item.detections)
    return results


def measure_inference_time(
    detector: Detector,
    images: Sequence[np.ndarray],
    batch_size: int = 1,
    warmup: int = 2,
    runs: int = 5,
) -> dict:
    """Time full inference (letterbox, model, decode with NMS, mapping back) of in-memory images.

    Args:
        detector: from :func:`load_detector`.
        images: (H, W, 3) uint8 RGB arrays; each run processes all of them in batches of ``batch_size``.
        warmup: untimed runs first (tracing, allocation).
        runs: timed runs.
    Returns:
        ``{"median_ms_per_image", "min_ms_per_image", "runs_ms_per_image": [...], "images", "batch_size"}``.
    """
    images = list(images)
    batch_size = max(1, min(batch_size, detector.max_batch_size or batch_size))

    def once() -> float:
        start = time.perf_counter()
        for chunk in _chunks(images, batch_size):
            detector.detect(chunk)
        return (time.perf_counter() - start) * 1000.0 / len(images)

    for _ in range(warmup):
        once()
    timings = [once() for _ in range(runs)]
    return {
        "median_ms_per_image": statistics.median(timings),
        "min_ms_per_image": min(timings),
        "runs_ms_per_image": timings,
        "images": len(images),
        "batch_size": batch_size,
    }
