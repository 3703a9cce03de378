"""Detectors: images in, detections in original image pixels out, whatever runs the model.

One interface, :class:`Detector` (``base.py``), over the model formats: :class:`KerasDetector` (a ``RetinaNet`` or
``.keras`` file), :class:`SavedModelDetector`, :class:`TFLiteDetector` (LiteRT), :class:`MediaPipeDetector`
(the same file in MediaPipe Tasks, as apps run it), :class:`OnnxDetector` and :class:`OpenVINODetector`, and
:class:`TiledDetector` around any of them. :func:`load_detector` (``loading.py``) picks the format from a path;
:func:`predict` (``running.py``) is the one-call API.
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
        "MODEL_FORMATS": "loading",
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
        "model_format": "loading",
        "predict": "running",
        "predict_paths": "running",
    },
)
__all__ = sorted(__dir__())
