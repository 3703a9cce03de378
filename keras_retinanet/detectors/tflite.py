"""A ``.tflite`` detector run by LiteRT (``ai_edge_litert``): files with ``TFLite_Detection_PostProcess`` outputs,
and raw files (box encodings and scores, ``retinanet export --profile raw``) decoded outside the model."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence

import numpy as np

from keras_retinanet.detectors.base import Detections, Detector, ModelFileError, find_labels
from keras_retinanet.detectors.raw_decoding import RawDecoder
from keras_retinanet.imaging import RESIZE_RULES, boxes_to_original

logger = logging.getLogger(__name__)

OUTPUT_FIELDS = ("boxes", "classes", "scores", "count")


class TFLiteDetector(Detector):
    """A ``.tflite`` file written by ``keras_retinanet.export`` (contracts: ``keras_retinanet.export.tflite``).

    A raw file is decoded by :class:`~keras_retinanet.detectors.raw_decoding.RawDecoder`. Class names: the
    file's metadata, else ``labels.txt`` beside it; per-class thresholds in the metadata are applied.

    Args:
        score_threshold, max_detections: filter the file's output (None: keep what it returns).
        class_names: override the names the file carries.
        num_threads: interpreter threads; default every core. Files whose NMS is not ``thread_safe`` (exported
            before 0.2) run on one thread.
        resize: ``"stretch"`` (default), as MediaPipe Tasks does, or ``"letterbox"``, as the Keras model does.
    """

    format = "tflite"
    max_batch_size = 1

    def __init__(
        self,
        path: str | os.PathLike,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        class_names: Sequence[str] | None = None,
        num_threads: int | None = None,
        resize: str = "stretch",
    ):
        from ai_edge_litert.interpreter import Interpreter

        from keras_retinanet.detectors.tflite_file import thread_safe

        path = os.fspath(path)
        if resize not in RESIZE_RULES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_RULES)}, got {resize!r}")
        if not os.path.isfile(path):
            raise ModelFileError(f"model not found: {path}")
        num_threads = num_threads or os.cpu_count() or 1
        if num_threads > 1 and not _parsed(path, thread_safe):
            logger.warning(
                "%s was exported before keras_retinanet 0.2: its NMS drops classes on several threads; running "
                "it on one thread (export it again to use more)",
                path,
            )
            num_threads = 1
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
        self.path = path
        self.num_threads = num_threads
        self.resize = resize
        self._input = inputs[0]
        self.image_size = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        metadata = _parsed(path, _metadata)
        self._raw: RawDecoder | None = None
        if metadata and metadata.get("raw_decoding") is not None:
            self._raw = self._raw_decoder(metadata)
        else:
            self._outputs = self._identify_outputs()
        labels = list(metadata["labels"]) if metadata and metadata.get("labels") else None
        names = class_names or labels or find_labels(os.path.dirname(os.path.abspath(path)))
        super().__init__(names, score_threshold, max_detections)
        if metadata and metadata.get("class_thresholds"):
            # Per-class thresholds written as MediaPipe score calibration; LiteRT ignores metadata, so apply them.
            self.class_thresholds = np.asarray(metadata["class_thresholds"], np.float32)

    def _raw_decoder(self, metadata: dict) -> RawDecoder:
        details = self.interpreter.get_output_details()
        decoding = metadata["raw_decoding"]
        wanted = [(1, decoding["num_boxes"], 4), (1, decoding["num_boxes"], decoding["num_classes"])]
        shapes = [tuple(int(d) for d in detail["shape"]) for detail in details]
        if shapes != wanted:
            raise ModelFileError(
                f"{self.path}: its detector metadata describes outputs {wanted} (box encodings, scores), the "
                f"model has {shapes}"
            )
        self._outputs = {"encodings": details[0]["index"], "scores": details[1]["index"]}
        try:
            return RawDecoder(metadata, self.image_size)
        except ValueError as err:
            raise ModelFileError(f"{self.path}: {err}") from None

    def _identify_outputs(self) -> dict[str, int]:
        """Tensor index of boxes / classes / scores / count, by signature names or by the op's order."""
        try:
            signatures = self.interpreter.get_signature_list()
        except (AttributeError, RuntimeError):
            signatures = {}
        for key in signatures:
            runner_outputs = self.interpreter.get_signature_runner(key).get_output_details()
            wanted: dict[str, int | None] = dict.fromkeys(OUTPUT_FIELDS)
            for name, detail in runner_outputs.items():
                for field in OUTPUT_FIELDS:
                    if field in name.lower() or (field == "count" and "num_detections" in name.lower()):
                        wanted[field] = detail["index"]
            if all(v is not None for v in wanted.values()):
                return wanted  # type: ignore[return-value]
        details = self.interpreter.get_output_details()
        if len(details) != 4:
            raise ModelFileError(
                f"{self.path}: expected the 4 outputs of TFLite_Detection_PostProcess (boxes, classes, scores, "
                f"count), got {len(details)}: is this a keras_retinanet TFLite export?"
            )

        # TFLite_Detection_PostProcess names its outputs NAME, NAME:1, NAME:2, NAME:3 in that order.
        def order(detail):
            suffix = detail["name"].rsplit(":", 1)[1] if ":" in detail["name"] else "0"
            return int(suffix) if suffix.isdigit() else 0

        details = sorted(details, key=order)
        shapes = [tuple(d["shape"]) for d in details]
        if len(shapes[0]) != 3 or shapes[0][-1] != 4:
            raise ModelFileError(
                f"{self.path}: unexpected output shapes {shapes} for TFLite_Detection_PostProcess"
            )
        return {field: d["index"] for field, d in zip(OUTPUT_FIELDS, details, strict=True)}

    def _input_tensor(self, canvas: np.ndarray) -> np.ndarray:
        tensor = np.asarray(canvas)[None]
        dtype = self._input["dtype"]
        if dtype in (np.uint8, np.float32):
            return tensor.astype(dtype)
        scale, zero_point = self._input.get("quantization", (0.0, 0))
        if not scale:
            raise ModelFileError(f"{self.path}: unsupported TFLite input type {dtype}")
        info = np.iinfo(dtype)
        return np.clip(np.round(tensor / scale + zero_point), info.min, info.max).astype(dtype)

    def run_canvas(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        """The file's n valid rows for one (H, W, 3) canvas of the input size, scores descending: {"boxes": (n, 4)
        normalised ymin, xmin, ymax, xmax, "classes": (n,) float, "scores": (n,)} (a raw file's decoded so)."""
        self.interpreter.set_tensor(self._input["index"], self._input_tensor(canvas))
        self.interpreter.invoke()
        get = self.interpreter.get_tensor
        if self._raw is not None:
            boxes, scores, classes = self._raw(get(self._outputs["encodings"]), get(self._outputs["scores"]))
            height, width = self.image_size
            x1, y1, x2, y2 = np.asarray(boxes, np.float32).reshape(-1, 4).T
            return {
                "boxes": np.stack([y1 / height, x1 / width, y2 / height, x2 / width], axis=1),
                "classes": np.asarray(classes, np.float32),
                "scores": np.asarray(scores, np.float32),
            }
        count = int(np.asarray(get(self._outputs["count"])).reshape(-1)[0])
        return {
            "boxes": np.asarray(get(self._outputs["boxes"]), np.float32).reshape(-1, 4)[:count],
            "classes": np.asarray(get(self._outputs["classes"])).reshape(-1)[:count],
            "scores": np.asarray(get(self._outputs["scores"]), np.float32).reshape(-1)[:count],
        }

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        results = []
        height, width = self.image_size
        for image in images:
            canvas, scale = RESIZE_RULES[self.resize](image, self.image_size)
            raw = self.run_canvas(canvas)
            ymin, xmin, ymax, xmax = raw["boxes"].T
            boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=1)
            boxes = boxes_to_original(boxes, scale, image.shape[:2])
            results.append(self.make_detections(boxes, raw["scores"], raw["classes"], image.shape))
        return results


# What Python's flatbuffers reader raises on a truncated or corrupt file (it trusts the offsets it reads).
_FLATBUFFER_ERRORS = (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, RecursionError)


def _error_name(err: BaseException) -> str:
    module = type(err).__module__
    return type(err).__qualname__ if module == "builtins" else f"{module}.{type(err).__qualname__}"


def _parsed(path: str, read):
    """``read(path)``, with a :class:`ModelFileError` naming the file when it is not a complete TFLite model."""
    from keras_retinanet.detectors.tflite_file import MetadataError

    try:
        return read(path)
    except (ModelFileError, MetadataError):
        raise  # already one line naming the file
    except _FLATBUFFER_ERRORS as err:
        raise ModelFileError(
            f"{path}: not a complete TFLite model (truncated or corrupt: {_error_name(err)}: "
            f"{str(err)[:200]}); copy or export it again"
        ) from err


def _metadata(path: str) -> dict | None:
    """``read_detection_metadata(path)``; None without mediapipe's schema classes."""
    from keras_retinanet.detectors.tflite_file import read_detection_metadata

    try:
        return read_detection_metadata(path)
    except ImportError:  # metadata present, but the schema classes (mediapipe) are not installed
        return None
