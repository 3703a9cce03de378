"""int8 TFLite files stay loadable by XNNPACK when a convolution's calibrated output is constant."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import interpreter as litert

from keras_retinanet.export.requantization import (
    XNNPACK_MAX_RATIO,
    fit_requantization_scales,
    requantization_ratios,
)


def _int8_file_with_a_dead_convolution() -> tuple[bytes, np.ndarray]:
    """conv -> ReLU whose outputs are all 0 (bias -100) -> conv -> ReLU -> conv, fully int8-quantised."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    dead = keras.layers.Conv2D(
        8, 3, padding="same", activation="relu", bias_initializer=keras.initializers.Constant(-100.0)
    )
    x = dead(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", bias_initializer="ones")(x)
    outputs = keras.layers.Conv2D(4, 1, bias_initializer=keras.initializers.Constant(0.5))(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(0.0, 1.0, (16, 8, 8, 3)).astype("float32")

    # Variables frozen to constants first, as the export does (the converter keeps Keras 3 variables otherwise).
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec((1, 8, 8, 3), tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(function)])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert(), images[:4]


def _run(data: bytes, images: np.ndarray, xnnpack: bool) -> list[np.ndarray]:
    resolver = (
        litert.OpResolverType.AUTO if xnnpack else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter = litert.Interpreter(
        model_content=data, experimental_op_resolver_type=resolver, num_threads=1
    )
    interpreter.allocate_tensors()
    outputs = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    return outputs


def _max_ratio(data: bytes) -> float:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    ratios = [requantization_ratios(model, op) for op in model.subgraphs[0].operators]
    return max(float(r.max()) for r in ratios if r is not None)


def test_dead_convolution_is_widened_so_xnnpack_loads_the_file_with_the_same_results():
    data, images = _int8_file_with_a_dead_convolution()
    assert _max_ratio(data) >= XNNPACK_MAX_RATIO
    with pytest.raises(RuntimeError, match="XNNPACK"):
        _run(data, images, xnnpack=True)

    fixed, widened = fit_requantization_scales(data)
    assert len(widened) == 1
    assert _max_ratio(fixed) < XNNPACK_MAX_RATIO
    expected = _run(data, images, xnnpack=False)  # the reference kernels accept any ratio
    for got in (_run(fixed, images, xnnpack=False), _run(fixed, images, xnnpack=True)):
        for g, e in zip(got, expected):
            # The dead layer is 0 either way; its reader's bias was rescaled to the new input scale.
            np.testing.assert_allclose(g, e, atol=np.abs(e).max() * 0.02)


def test_a_file_within_the_limit_is_returned_unchanged():
    data, _ = _int8_file_with_a_dead_convolution()
    fixed, _ = fit_requantization_scales(data)
    assert fit_requantization_scales(fixed) == (fixed, [])
