"""ONNX and OpenVINO IR files written by ``keras_retinanet.export`` as :class:`Detector` s.

Both files take float32 pixels of any size and letterbox inside the graph, as the SavedModel does (contract:
``keras_retinanet.export.onnx``), so each image is fed as it is, in a batch of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from keras_retinanet.detectors.base import Detections, Detector, ModelFileError, find_labels

OUTPUTS = ("boxes", "scores", "classes", "num_detections")


class _GraphDetector(Detector):
    """A file whose graph maps float32 ``[1, H, W, 3]`` pixels to the outputs ``OUTPUTS``; ``score_threshold``
    and ``max_detections`` (None: the export's own) filter them, as for
    :class:`~keras_retinanet.detectors.SavedModelDetector`. Subclasses open the file (``_open``)."""

    runtime = ""

    def __init__(
        self,
        path: str | os.PathLike,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        class_names: Sequence[str] | None = None,
        num_threads: int | None = None,
    ):
        self.path = os.fspath(path)
        try:
            self._run, outputs, names = self._open(self.path, num_threads)
        except ImportError as err:
            raise ModelFileError(
                f"{self.path}: running it needs {err.name}: pip install 'keras-retinanet[{self.format}]'"
            ) from err
        except Exception as err:  # noqa: BLE001 - the runtimes raise their own types for every unreadable file
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise ModelFileError(
                f"{self.path}: {self.runtime} cannot read this file ({type(err).__name__}: {first}): truncated "
                "or corrupt; copy or export it again"
            ) from err
        if set(OUTPUTS) - set(outputs):
            raise ModelFileError(f"{self.path}: lacks outputs {sorted(set(OUTPUTS) - set(outputs))}")
        names = class_names or names or find_labels(os.path.dirname(os.path.abspath(self.path)))
        super().__init__(names, score_threshold, max_detections)

    def _open(self, path: str, num_threads: int | None) -> tuple[Callable, set[str], list[str] | None]:
        """(run: float32 [1, H, W, 3] -> {output: array}, the file's output names, its class names or None)."""
        raise NotImplementedError

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        results = []
        for image in images:
            outputs = self._run(np.asarray(image, np.float32)[None])
            n = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
            rows = (outputs[key][0, :n] for key in ("boxes", "scores", "classes"))
            results.append(self.make_detections(*rows, image.shape))
        return results


class OnnxDetector(_GraphDetector):
    """A ``.onnx`` file run by ONNX Runtime (CPU). Class names: ``class_names``, else the file's metadata, else
    ``labels.txt`` beside it."""

    format, runtime = "onnx", "ONNX Runtime"

    def _open(self, path, num_threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or 0
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        metadata = session.get_modelmeta().custom_metadata_map
        input_name = session.get_inputs()[0].name

        def run(images: np.ndarray) -> dict:
            return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {input_name: images})))

        names = json.loads(metadata["class_names"]) if "class_names" in metadata else None
        return run, {o.name for o in session.get_outputs()}, names


class OpenVINODetector(_GraphDetector):
    """An OpenVINO IR (``.xml`` with its ``.bin``) run by OpenVINO on the CPU in float32
    (``INFERENCE_PRECISION_HINT=f32``: the CPU plugin's bf16 default moves scores by up to 0.2). Class names:
    ``class_names``, else ``labels.txt`` beside it."""

    format, runtime = "openvino", "OpenVINO"

    def _open(self, path, num_threads):
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        compiled = ov.Core().compile_model(path, "CPU", config)
        request = compiled.create_infer_request()
        outputs = {name for port in compiled.outputs for name in port.get_names()}

        def run(images: np.ndarray) -> dict:
            result = request.infer({0: images})
            return {key: result[compiled.output(key)] for key in OUTPUTS}

        return run, outputs, None
