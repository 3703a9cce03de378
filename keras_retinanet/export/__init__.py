"""Export a trained RetinaNet: a SavedModel for TF Serving and builtin-op TFLite files for phones.

- ``writer.py``: :func:`export_model`, the whole export folder (staged, then moved into place).
- ``saved_model.py``: the SavedModel with letterbox, decoding and NMS inside, and its output contract.
- ``tflite.py``: TFLite conversion with ``TFLite_Detection_PostProcess`` (or raw outputs, ``--profile raw``), op
  checks, and the output contracts.
- ``metadata.py`` / ``raw_metadata.py``: TFLite Model Metadata for MediaPipe, files with NMS inside / raw files.
- ``gpu_ops.py``: which of a file's ops a GPU delegate runs (documentation and the delegate's own checks).
- ``requantization.py``: int8 files made acceptable to XNNPACK.
- ``calibration.py``: images for int8 calibration and parity.
- ``parity.py``: do the files detect what the Keras model detects?
- ``config.py``: the error type, file names and post-processing settings they share.
"""

from keras_retinanet._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "DETECTION_POSTPROCESS_OP": "tflite",
        "ExportError": "config",
        "PostProcessConfig": "config",
        "REPORT_FILE": "config",
        "SAVED_MODEL_DIR": "config",
        "TFLITE_NMS_CHOICES": "config",
        "TFLITE_VARIANTS": "config",
        "build_saved_model": "saved_model",
        "calibration_paths": "calibration",
        "convert_tflite": "tflite",
        "export_model": "writer",
        "flex_ops": "tflite",
        "load_canvases": "calibration",
        "match_detections": "parity",
        "parity_report": "parity",
        "tflite_anchors": "tflite",
        "tflite_ops": "tflite",
    },
)
__all__ = sorted(__dir__())
