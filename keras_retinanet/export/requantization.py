"""Keeps int8 TFLite files within XNNPACK's requantization limit.

A quantised convolution rescales its int32 accumulator by ``input_scale * filter_scale / output_scale``, and
XNNPACK refuses the whole file when any such ratio is 256 or more. The converter makes one when a convolution's
output was (almost) constant on every calibration image (its scale collapses to ~1e-8).
:func:`fit_requantization_scales` widens each such output scale (zero point kept, so every calibrated value
stays representable) and rescales the int32 biases of the convolutions that read it to the new input scale.
"""

from __future__ import annotations

import copy

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from keras_retinanet.detectors.tflite_file import as_text, op_name, pack_model, read_model

# XNNPACK accepts requantization ratios below 256; stay well inside it.
XNNPACK_MAX_RATIO = 256.0
_TARGET_RATIO = 128.0
# The ops with an int8 weight and an int32 bias.
_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
_INT8, _INT32 = schema.TensorType.INT8, schema.TensorType.INT32


def _scales(tensor) -> np.ndarray | None:
    quantization = tensor.quantization
    if quantization is None or quantization.scale is None or len(quantization.scale) == 0:
        return None
    return np.asarray(quantization.scale, dtype=np.float64)


def requantization_ratios(model, operator) -> np.ndarray | None:
    """Per-output-channel ``input_scale * filter_scale / output_scale`` of an int8 conv / FC operator of
    ``model`` (a .tflite's object form); None for any other operator."""
    tensors = model.subgraphs[0].tensors
    if op_name(model, operator) not in _WEIGHTED_OPS or len(operator.inputs) < 2:
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
    model = read_model(data)
    subgraph = model.subgraphs[0]
    widened = []
    for operator in subgraph.operators:  # execution order: a widened output is seen by the ops after it
        ratios = requantization_ratios(model, operator)
        if ratios is None or ratios.max() < XNNPACK_MAX_RATIO:
            continue
        output_index = operator.outputs[0]
        output = subgraph.tensors[output_index]
        name = str(as_text(output.name))
        readers = [op for op in subgraph.operators if output_index in list(op.inputs)]
        if any(
            op_name(model, op) not in _WEIGHTED_OPS or list(op.inputs).index(output_index) != 0
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
    return pack_model(model), widened
