"""Analytic FLOP counts of a traced TensorFlow graph, and the achieved fraction of a machine's peak.

Only the dense kernels are counted: every ``Conv2D``, ``DepthwiseConv2dNative``, ``MatMul`` and ``BatchMatMul``
contributes 2 x its multiply-accumulates, computed from static shapes. Element-wise ops, BatchNorm, padding,
resizes and the decoder are not counted; for a convolutional detector they are a few percent of the work. A
training step is counted as 3 x the forward pass (backward = 2 x forward, the usual convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COUNTED_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2", "BatchMatMul")
# Attributes through which an op calls a nested function (tf.function calls, tf.cond, tf.while_loop).
_FUNCTION_ATTRS = ("f", "then_branch", "else_branch", "body", "cond")
# Phases whose FLOPs are (forward FLOPs x factor), for the achieved fraction of peak.
UTILISATION_PHASES = (("forward", 1), ("forward_xla", 1), ("train", 3), ("train_xla", 3))


def conv2d_flops(
    output_hw: Sequence[int],
    kernel_hw: Sequence[int],
    in_channels: int,
    out_channels: int,
    batch: int = 1,
    groups: int = 1,
) -> int:
    """FLOPs (2 x multiply-accumulates) of one 2D convolution: ``2 * N * Ho * Wo * Cout * kh * kw * Cin / g``."""
    macs = batch * output_hw[0] * output_hw[1] * out_channels * kernel_hw[0] * kernel_hw[1] * in_channels
    return 2 * macs // groups


def _static(shape) -> list[int] | None:
    """A ``tf.TensorShape`` as a list of ints, or None if any dimension is unknown."""
    dims = shape.as_list() if shape.rank is not None else None
    return None if dims is None or any(d is None for d in dims) else dims


def _op_flops(op) -> int | None:
    """FLOPs of one counted op from its static shapes; None when a shape is not static."""
    out, first, second = (_static(t.shape) for t in (op.outputs[0], op.inputs[0], op.inputs[1]))
    if out is None or first is None or second is None:
        return None
    if op.type in ("Conv2D", "DepthwiseConv2dNative"):
        nchw = op.get_attr("data_format") == b"NCHW"
        n, ho, wo, co = (out[0], out[2], out[3], out[1]) if nchw else out
        kh, kw, kernel_in, _ = second  # filter (kh, kw, Cin / groups, Cout) or (kh, kw, Cin, multiplier)
        if op.type == "DepthwiseConv2dNative":  # one kh x kw filter per output channel
            return 2 * n * ho * wo * co * kh * kw
        groups = max(1, (first[1] if nchw else first[3]) // kernel_in)
        return conv2d_flops((ho, wo), (kh, kw), kernel_in * groups, co, n, groups)
    # MatMul / BatchMatMul: every output element is a dot product over the shared dimension of the first input.
    adjoint = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
    size = 1
    for d in out:
        size *= d
    return 2 * size * (first[-2] if adjoint else first[-1])


def graph_flops(concrete_function) -> dict[str, Any]:
    """Analytic FLOPs of a traced graph (``tf.function(...).get_concrete_function(spec)``).

    Counts the ops in :data:`COUNTED_OPS`, including those inside nested function bodies (a ``tf.function``
    called from another): a body counts once for every op that calls it. A ``tf.while_loop`` body counts one
    iteration and both branches of a ``tf.cond`` count, since neither is known from the graph alone; the
    RetinaNet forward pass has neither.

    Returns:
        ``{"flops": int, "by_op": {op type: flops}, "uncounted_ops": int}``, where ``uncounted_ops`` is the
        number of counted-type ops whose shapes were not static (so their FLOPs are missing from the total).
    """
    memo: dict[str, tuple[dict[str, int], int]] = {}

    def count(graph, active: frozenset) -> tuple[dict[str, int], int]:
        by_op: dict[str, int] = {}
        unknown = 0
        for op in graph.get_operations():
            if op.type in COUNTED_OPS:
                flops = _op_flops(op)
                if flops is None:
                    unknown += 1
                else:
                    by_op[op.type] = by_op.get(op.type, 0) + flops
                continue
            for attr in _FUNCTION_ATTRS:
                try:
                    name = op.get_attr(attr).name
                except (ValueError, AttributeError, TypeError):  # the op has no such function attribute
                    continue
                function = graph._functions.get(name)  # noqa: SLF001 - no public accessor
                if function is None or name in active:  # unknown, or a recursive call
                    continue
                if name not in memo:
                    memo[name] = count(function.graph, active | {name})
                inner, inner_unknown = memo[name]
                for op_type, flops in inner.items():
                    by_op[op_type] = by_op.get(op_type, 0) + flops
                unknown += inner_unknown
        return by_op, unknown

    by_op, unknown = count(concrete_function.graph, frozenset())
    return {"flops": sum(by_op.values()), "by_op": by_op, "uncounted_ops": unknown}


def utilisation(forward_flops: int, results: dict[str, Any], peak_gflops: float | None) -> dict[str, float]:
    """Achieved fraction of peak per phase: counted FLOPs per image / median time per image / peak FLOP/s.

    Args:
        forward_flops: FLOPs of one image's forward pass (:func:`graph_flops`).
        results: phase records with ``median_ms`` (ms per image), keyed as in :data:`UTILISATION_PHASES`.
        peak_gflops: the machine's peak (``machine.peak_flops(...)["gflops"]``); None gives ``{}``.
    Returns:
        ``{phase: fraction}`` rounded to 4 decimals, for the phases that have a median.
    """
    out: dict[str, float] = {}
    if not peak_gflops:
        return out
    for key, factor in UTILISATION_PHASES:
        ms = results.get(key, {}).get("median_ms")
        if ms:
            out[key] = round(forward_flops * factor / (ms / 1000.0) / (peak_gflops * 1e9), 4)
    return out
