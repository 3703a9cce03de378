"""Detectors: images in, detections in original image pixels out, whatever runs the model.

One small interface, :class:`Detector`, hides the model kind:

- :class:`KerasDetector` (``keras_model.py``): a ``RetinaNet`` in memory or a ``.keras`` file. Images are
  letterboxed to the model's input size (the size it was trained at), run in batches, and mapped back.
- :class:`SavedModelDetector` (``saved_model.py``): a SavedModel written by ``keras_retinanet.export``; it
  takes encoded images of any size and returns boxes in original pixels.
- :class:`TFLiteDetector` (``tflite.py``): a ``.tflite`` file with ``TFLite_Detection_PostProcess`` outputs,
  run with LiteRT; batch size 1, fixed input size, the image stretched to it exactly as MediaPipe does.
- :class:`MediaPipeDetector` (``mediapipe.py``): the same file run by MediaPipe Tasks' ObjectDetector, as
  Android, iOS and web apps run it.
- :class:`OnnxDetector` and :class:`OpenVINODetector` (``onnx.py``): a ``.onnx`` file in ONNX Runtime and an
  OpenVINO IR ``.xml`` in OpenVINO, written by ``retinanet export --format onnx,openvino``; like the SavedModel,
  any image size, letterbox inside.
- :class:`TiledDetector` (``tiled.py``): wraps any of these; runs overlapping tiles and the full image and
  merges the boxes by per-class NMS (SAHI-style sliced inference for small objects in large images).

:func:`load_detector` (``loading.py``) picks the kind from a path and fails clearly on anything else;
:func:`predict` (``running.py``) is the one-call API. Images are (H, W, 3) uint8 RGB arrays or paths
(read by ``keras_retinanet.imaging.read_image``). Each detector returns, per image, a :class:`Detections`:
``boxes`` (D, 4) float32 ``x1, y1, x2, y2`` in the original image's pixels, ``scores`` (D,) sorted high to
low, ``classes`` (D,) int32 in 0..K-1, ``names``.
"""

from keras_retinanet._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "Detections": "base",
        "Detector": "base",
        "IMAGE_EXTENSIONS": "running",
        "KerasDetector": "keras_model",
        "MediaPipeDetector": "mediapipe",
        "OnnxDetector": "onnx",
        "OpenVINODetector": "onnx",
        "LABELS_FILE": "base",
        "MODEL_KINDS": "loading",
        "ModelFileError": "base",
        "PredictionItem": "running",
        "RUNTIMES": "loading",
        "SavedModelDetector": "saved_model",
        "TFLiteDetector": "tflite",
        "TiledDetector": "tiled",
        "find_labels": "base",
        "iter_predictions": "running",
        "load_detector": "loading",
        "load_retinanet": "loading",
        "model_kind": "loading",
        "predict": "running",
        "predict_paths": "running",
    },
)
__all__ = sorted(__dir__())
