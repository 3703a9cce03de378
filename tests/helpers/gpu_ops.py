"""Can a GPU delegate run a .tflite's ops? Three checks, for the raw export's tests (``tests/test_raw_export.py``).

1. LiteRT's GPU delegate documentation lists the ops it supports in float16 and float32 (page "GPU delegates
   for LiteRT", section "Supported ops"; the list below, checked 2026-12-05). The list has not grown with the
   delegate: MEAN, RSQRT, LOG, SPLIT and others are missing from it.
2. The delegate's own op checks, ``tensorflow/lite/tools/versioning/gpu_compatibility.cc``
   (``CheckGpuDelegateCompatibility``: one case per op it accepts; read 2026-12-05): the ops of that switch
   listed below, beyond the documented ones (their per-op conditions, e.g. STRIDED_SLICE on 3-D or 4-D tensors,
   are not re-checked here).
3. TensorFlow's model analyzer with ``gpu_compatibility=True`` (``tf.lite.experimental.Analyzer``): its verdict
   and any "GPU COMPATIBILITY WARNING" lines. In TF 2.21 it also calls the 4-output files compatible, custom NMS
   op, BITCAST and TOPK_V2 included, so its verdict alone proves nothing.

None runs the file on a GPU: a delegate can still fall back to the CPU at run time.
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
# Further ops with a case in gpu_compatibility.cc's CheckGpuDelegateCompatibility (CAST only from bool).
GPU_CHECKER_OPS = (
    "ABS",
    "BATCH_MATMUL",
    "COS",
    "DEPTH_TO_SPACE",
    "DEQUANTIZE",
    "DIV",
    "ELU",
    "EQUAL",
    "FLOOR",
    "FLOOR_DIV",
    "FLOOR_MOD",
    "GREATER",
    "GREATER_EQUAL",
    "HARD_SWISH",
    "LEAKY_RELU",
    "LESS",
    "LESS_EQUAL",
    "LOG",
    "MEAN",
    "MIRROR_PAD",
    "NEG",
    "NOT_EQUAL",
    "PACK",
    "POW",
    "REDUCE_MAX",
    "REDUCE_MIN",
    "REDUCE_PROD",
    "RESIZE_NEAREST_NEIGHBOR",
    "RSQRT",
    "SIN",
    "SLICE",
    "SPACE_TO_DEPTH",
    "SPLIT",
    "SPLIT_V",
    "SQRT",
    "SQUARE",
    "SQUARED_DIFFERENCE",
    "SUM",
    "TANH",
    "TILE",
    "TRANSPOSE",
)
GPU_CHECKER_SOURCE = "tensorflow/lite/tools/versioning/gpu_compatibility.cc (CheckGpuDelegateCompatibility)"
_COMPATIBLE = "looks compatible with GPU delegate"
_WARNING = "GPU COMPATIBILITY WARNING"


def gpu_op_report(data: bytes, ops: Sequence[str]) -> dict[str, Any]:
    """What the two checks of the module docstring say about a .tflite.

    Args:
        data: the .tflite file contents.
        ops: its distinct op names (``keras_retinanet.detectors.tflite_file.tflite_ops``).
    Returns:
        ``{"ops", "in_documented_list", "not_in_documented_list", "documentation", "in_delegate_checks" (the
        undocumented ops that gpu_compatibility.cc accepts), "unsupported" (in neither: they run on the CPU),
        "delegate_checks", "analyzer": {"source", "compatible" (bool, or None when the analyzer could not run),
        "warnings": [lines], "error"?}}``.
    """
    ops = sorted(ops)
    undocumented = [op for op in ops if op not in GPU_DOCUMENTED_OPS]
    report: dict[str, Any] = {
        "ops": ops,
        "in_documented_list": [op for op in ops if op in GPU_DOCUMENTED_OPS],
        "not_in_documented_list": undocumented,
        "documentation": GPU_DELEGATE_DOC,
        "in_delegate_checks": [op for op in undocumented if op in GPU_CHECKER_OPS],
        "unsupported": [op for op in undocumented if op not in GPU_CHECKER_OPS],
        "delegate_checks": GPU_CHECKER_SOURCE,
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
