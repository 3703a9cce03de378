"""Export a trained RetinaNet: a SavedModel, builtin-op TFLite files, ONNX and OpenVINO.

``formats.py`` holds the format table (format -> files, options, writer, detector, parity check); ``writer.py``
the export itself (:func:`export_model`); one module per format family writes its files (``saved_model.py``,
``tflite.py`` with ``metadata.py`` and ``requantization.py``, ``onnx.py``); ``parity.py`` compares what the files
detect with the Keras model.
"""

from keras_retinanet._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "DETECTION_POSTPROCESS_OP": "tflite",
        "FORMATS": "formats",
        "ExportError": "config",
        "ExportFormat": "config",
        "ExportJob": "config",
        "REPORT_FILE": "config",
        "SAVED_MODEL_DIR": "config",
        "TFLITE_VARIANTS": "config",
        "build_saved_model": "saved_model",
        "calibration_paths": "calibration",
        "convert_tflite": "tflite",
        "export_model": "writer",
        "flex_ops": "tflite",
        "load_canvases": "calibration",
        "match_detections": "parity",
        "parity_report": "parity",
        "register_format": "formats",
        "tflite_anchors": "tflite",
        "tflite_ops": "tflite",
    },
)
__all__ = sorted(__dir__())
