"""Export a trained RetinaNet: a SavedModel for TF Serving and builtin-op TFLite files for phones.

- ``formats.py``: the format table (name -> files, options, writer, detector, parity check); ``register_format``.
- ``writer.py``: :func:`export_model`, the whole export folder (staged, then moved into place), in stages.
- ``saved_model.py``: the SavedModel with letterbox, decoding and NMS inside, its output contract and writer.
- ``tflite.py``: TFLite conversion with ``TFLite_Detection_PostProcess`` (or raw outputs, ``--profile raw``), op
  checks, the output contracts and the writer.
- ``metadata.py``: TFLite Model Metadata for MediaPipe, files with NMS inside and raw files.
- ``requantization.py``: int8 files made acceptable to XNNPACK.
- ``calibration.py``: images for int8 calibration and parity.
- ``parity.py``: do the files detect what the Keras model detects?
- ``config.py``: the error type, file names, a format's row and the job its writer gets.
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
