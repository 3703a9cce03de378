"""Keeps int8 TFLite files within XNNPACK's requantization limit.

A quantised convolution rescales its int32 accumulator by ``input_scale * filter_scale / output_scale``.
XNNPACK, LiteRT's default CPU delegate, refuses any such ratio of 256 or more ("failed to create XNNPACK
runtime ... failed to prepare"), and then the whole file cannot be loaded. The converter produces such a
ratio when a convolution's output was (almost) constant on every calibration image, e.g. a head convolution
whose ReLU outputs are all zero on a small pyramid level: the calibrated output range collapses to ~1e-6 and
its scale to ~1e-8.

``fit_requantization_scales`` widens the output scale of each such convolution until the ratio is below the
limit. The output keeps its zero point, so every value the calibration saw is still representable; what
changes is the step between representable values, which matters little for an output that barely varies.
The convolutions that read that output then see a larger input scale, so their int32 biases, which are
stored in units of ``input_scale * filter_scale``, are rescaled to match.
"""

from __future__ import annotations

import copy

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

# XNNPACK accepts requantization ratios below 256; stay well inside it.
XNNPACK_MAX_RATIO = 256.0
_TARGET_RATIO = 128.0
# The ops with an int8 weight and an int32 bias.
_WEIGHTED_OPS = {
    schema.BuiltinOperator.CONV_2D,
    schema.BuiltinOperator.DEPTHWISE_CONV_2D,
    schema.BuiltinOperator.FULLY_CONNECTED,
}
_INT8, _INT32 = schema.TensorType.INT8, schema.TensorType.INT32


def _scales(tensor) -> np.ndarray | None:
    quantization = tensor.quantization
    if quantization is None or quantization.scale is None or len(quantization.scale) == 0:
        return None
    return np.asarray(quantization.scale, dtype=np.float64)


def _builtin_code(model, operator) -> int:
    code = model.operatorCodes[operator.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def requantization_ratios(model, operator) -> np.ndarray | None:
    """Per-output-channel ``input_scale * filter_scale / output_scale`` of an int8 conv / FC operator.

    ``model`` is the object form of a .tflite file (``flatbuffer_utils.read_model_from_bytearray``); returns
    ``None`` for any other operator.
    """
    tensors = model.subgraphs[0].tensors
    if _builtin_code(model, operator) not in _WEIGHTED_OPS or len(operator.inputs) < 2:
        return None
    source, weights, output = (
        tensors[operator.inputs[0]],
        tensors[operator.inputs[1]],
        tensors[operator.outputs[0]],
    )
    if not (source.type == weights.type == output.type == _INT8):
        return None
    input_scale, weight_scales, output_scale = _scales(source), _scales(weights), _scales(output)
    if input_scale is None or weight_scales is None or output_scale is None:
        return None
    return input_scale[0] * weight_scales / output_scale[0]


def _private_bias(model, operator):
    """The operator's bias tensor, copied first when another tensor shares its buffer."""
    subgraph = model.subgraphs[0]
    index = operator.inputs[2]
    bias = subgraph.tensors[index]
    users = [t for t in subgraph.tensors if t.buffer == bias.buffer]
    readers = [op for op in subgraph.operators if index in list(op.inputs)]
    if len(users) > 1 or len(readers) > 1:
        buffer = copy.deepcopy(model.buffers[bias.buffer])
        model.buffers.append(buffer)
        bias = copy.deepcopy(bias)
        bias.buffer = len(model.buffers) - 1
        subgraph.tensors.append(bias)
        operator.inputs[2] = len(subgraph.tensors) - 1
    return bias


def fit_requantization_scales(data: bytes) -> tuple[bytes, list[str]]:
    """Returns the .tflite file with every int8 conv / FC ratio below 256, and the names of the outputs widened.

    Raises:
        ValueError: a ratio cannot be fixed this way (the output also feeds an op that is not a conv / FC,
            whose own quantization would have to change too).
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    subgraph = model.subgraphs[0]
    widened = []
    for operator in subgraph.operators:  # execution order: a widened output is seen by the ops after it
        ratios = requantization_ratios(model, operator)
        if ratios is None or ratios.max() < XNNPACK_MAX_RATIO:
            continue
        output_index = operator.outputs[0]
        output = subgraph.tensors[output_index]
        name = output.name.decode() if isinstance(output.name, bytes) else str(output.name)
        readers = [op for op in subgraph.operators if output_index in list(op.inputs)]
        if any(
            _builtin_code(model, op) not in _WEIGHTED_OPS or list(op.inputs).index(output_index) != 0
            for op in readers
        ):
            raise ValueError(
                f"int8 TFLite: {name} has requantization ratio {ratios.max():.3g} (XNNPACK needs < 256) and "
                "feeds an op that is not a convolution; calibrate with more varied images or export float16"
            )
        old_scale = float(output.quantization.scale[0])
        new_scale = old_scale * float(ratios.max()) / _TARGET_RATIO
        output.quantization.scale = [new_scale]
        for reader in readers:
            if len(reader.inputs) < 3 or reader.inputs[2] < 0:
                continue
            bias = _private_bias(model, reader)
            if bias.type != _INT32:
                continue
            buffer = model.buffers[bias.buffer]
            values = np.frombuffer(bytes(buffer.data), dtype=np.int32).astype(np.float64)
            rescaled = np.round(values * old_scale / new_scale).astype(np.int32)
            buffer.data = np.frombuffer(rescaled.tobytes(), dtype=np.uint8)
            bias.quantization.scale = list(_scales(bias) * new_scale / old_scale)
        widened.append(name)
    if not widened:
        return data, []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), widened
