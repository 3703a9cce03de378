"""Can a GPU delegate run a .tflite's ops? Two checks, written into ``export_report.json``.

1. LiteRT's GPU delegate documentation lists the ops it supports in float16 and float32 (page "GPU delegates
   for LiteRT", section "Supported ops"; the list below, checked 2026-12-05). The list has not grown with the
   delegate: MEAN, RSQRT, LOG, SPLIT and others that the delegate's model builder accepts are missing from it.
2. TensorFlow's model analyzer with ``gpu_compatibility=True`` (``tf.lite.experimental.Analyzer``, which runs
   ``tensorflow/lite/tools/versioning/gpu_compatibility.cc``, the delegate's own op and version checks): its
   verdict and any "GPU COMPATIBILITY WARNING" lines. This is the check that counts; the list is the document.

Neither runs the file on a GPU: a delegate can still fall back to the CPU at run time (the analyzer says so).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

GPU_DELEGATE_DOC = "https://ai.google.dev/edge/litert/performance/gpu#supported_ops"
GPU_ANALYZER = (
    "tf.lite.experimental.Analyzer.analyze(model_content, gpu_compatibility=True) "
    "(tensorflow/lite/tools/versioning/gpu_compatibility.cc)"
)
# "Supported ops" of the GPU delegate documentation (16-bit and 32-bit float).
GPU_DOCUMENTED_OPS = (
    "ADD",
    "AVERAGE_POOL_2D",
    "CONCATENATION",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "EXP",
    "FULLY_CONNECTED",
    "LOGICAL_AND",
    "LOGISTIC",
    "LSTM",
    "MAX_POOL_2D",
    "MAXIMUM",
    "MINIMUM",
    "MUL",
    "PAD",
    "PRELU",
    "RELU",
    "RELU6",
    "RESHAPE",
    "RESIZE_BILINEAR",
    "SOFTMAX",
    "STRIDED_SLICE",
    "SUB",
    "TRANSPOSE_CONV",
)
_COMPATIBLE = "looks compatible with GPU delegate"
_WARNING = "GPU COMPATIBILITY WARNING"


def gpu_op_report(data: bytes, ops: Sequence[str]) -> dict[str, Any]:
    """What the two checks of the module docstring say about a .tflite.

    Args:
        data: the .tflite file contents.
        ops: its distinct op names (``keras_retinanet.tflite_file.tflite_ops``).
    Returns:
        ``{"ops", "in_documented_list", "not_in_documented_list", "documentation", "analyzer": {"source",
        "compatible" (bool, or None when the analyzer could not run), "warnings": [lines], "error"?}}``.
    """
    ops = sorted(ops)
    report: dict[str, Any] = {
        "ops": ops,
        "in_documented_list": [op for op in ops if op in GPU_DOCUMENTED_OPS],
        "not_in_documented_list": [op for op in ops if op not in GPU_DOCUMENTED_OPS],
        "documentation": GPU_DELEGATE_DOC,
        "analyzer": {"source": GPU_ANALYZER, "compatible": None, "warnings": []},
    }
    try:
        import tensorflow as tf

        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            tf.lite.experimental.Analyzer.analyze(model_content=bytes(data), gpu_compatibility=True)
    except Exception as err:  # noqa: BLE001 - a report entry, not a reason to fail the export
        report["analyzer"]["error"] = f"{type(err).__name__}: {err}"
        return report
    lines = text.getvalue().splitlines()
    report["analyzer"]["warnings"] = [line.strip() for line in lines if _WARNING in line]
    report["analyzer"]["compatible"] = (
        any(_COMPATIBLE in line for line in lines) and not report["analyzer"]["warnings"]
    )
    return report
