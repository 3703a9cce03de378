"""The inference graph of a trained RetinaNet: BatchNorm folded into the convolutions, optionally in bfloat16.

An inference-mode BatchNorm after a convolution merges into it (``kernel' = kernel * s``, ``bias' = (bias -
mean) * s + beta``, ``s = gamma / sqrt(var + eps)``); GroupNorm is not folded. ``precision="bf16"`` builds the
copy under ``"mixed_bfloat16"``, the head outputs (and so decoding and NMS) staying float32.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from keras_retinanet.backbones.registry import layer_consumers
from keras_retinanet.backbones.torchvision.resnet import FrozenBatchNormalization

# --precision name -> Keras dtype policy of the inference graph.
PRECISIONS = {"float32": "float32", "bf16": "mixed_bfloat16"}
# Convolutions a following BatchNorm folds into (exact classes: transposed and separable ones differ).
_FOLDABLE_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
# Layers of the RetinaNet around the backbone whose weights the copy takes over unchanged.
_HEAD_LAYERS = ("feature_pyramid", "classification_head", "box_head")


@contextlib.contextmanager
def global_dtype_policy(policy: str) -> Iterator[None]:
    """Keras' global dtype policy set to ``policy`` (e.g. ``"mixed_bfloat16"``) inside the block, restored after."""
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(saved)


def dtype_policy(precision: str) -> str:
    """The Keras dtype policy of a ``precision`` (a key of :data:`PRECISIONS`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def inference_model(
    model: keras.Model, precision: str = "float32", fold_batchnorm: bool = True
) -> keras.Model:
    """An inference-only, non-trainable copy of ``model`` (left unchanged) with BatchNorm folded.

    Args:
        precision: ``"float32"`` or ``"bf16"``.
        fold_batchnorm: fold every BatchNorm that is the only consumer of a linear ``Conv2D`` /
            ``DepthwiseConv2D``; ``False`` copies the graph as it is.
    Returns:
        A ``RetinaNet`` with ``model``'s raw outputs (float32) and detections in inference mode, up to float
        rounding; its backbone is saved as a graph. A backbone that is not functional is shared, unfolded.
    """
    policy = dtype_policy(precision)
    backbone = model.backbone
    folds: dict[str, dict[str, str]] = {}
    if isinstance(backbone, keras.Model) and "layers" in backbone.get_config():
        config = _rewrite(backbone, backbone.get_config(), policy, fold_batchnorm, folds, path="")
        backbone = keras.Model.from_config(config)
    config = model.get_config()
    config.update(backbone=backbone, backbone_weights=None)
    with global_dtype_policy(policy):
        copy_model = type(model).from_config(config)  # RetinaNet (model.py uses this module: no import)
    copy_model._inference_folds = folds
    update_inference_weights(copy_model, model)
    copy_model.trainable = False
    return copy_model


# model -> (its weights' fingerprint function, {(precision, fold): (copy, fingerprint of the copy's weights)});
# an entry goes with its model (it holds the model's variables, not the model).
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_inference_model(
    model: keras.Model, precision: str = "float32", fold_batchnorm: bool = True
) -> keras.Model:
    """:func:`inference_model` of ``model``, kept while ``model`` lives; its weights are copied in again (in
    place: no retrace) whenever a fingerprint of ``model``'s weights changed."""
    dtype_policy(precision)  # checks the name
    if model not in _CACHE:
        _CACHE[model] = (weights_fingerprint(model.weights), {})
    fingerprint_function, graphs = _CACHE[model]
    fingerprint = fingerprint_function()
    key = (precision, bool(fold_batchnorm))
    if key not in graphs:
        graph = inference_model(model, precision, fold_batchnorm)
    else:
        graph, seen = graphs[key]
        if np.array_equal(seen, fingerprint):
            return graph
        update_inference_weights(graph, model)
    graphs[key] = (graph, fingerprint)
    return graph


def weights_fingerprint(variables: list) -> Callable[[], np.ndarray]:
    """A function returning, for each variable, the wrapping int32 sum of its values' bit patterns (unlike a
    float sum, no change is lost to rounding)."""
    import tensorflow as tf

    variables = list(variables)

    @tf.function
    def fingerprint():
        sums = []
        for variable in variables:
            value = tf.convert_to_tensor(variable.value)
            if value.dtype.size == 4 and value.dtype != tf.int32:
                value = tf.bitcast(value, tf.int32)
            sums.append(tf.cast(tf.reduce_sum(tf.cast(value, tf.int32)), tf.int64))
        return tf.stack(sums) if sums else tf.zeros((0,), tf.int64)

    return lambda: fingerprint().numpy()


def update_inference_weights(inference: keras.Model, model: keras.Model) -> None:
    """Copies ``model``'s current weights into its :func:`inference_model` copy in place, folding again."""
    folds = getattr(inference, "_inference_folds", {})
    if inference.backbone is not model.backbone:
        _copy_weights(model.backbone, inference.backbone, folds, path="")
    for name in _HEAD_LAYERS:
        inference.get_layer(name).set_weights(model.get_layer(name).get_weights())


def folded_weights(conv: keras.layers.Layer, batchnorm: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray]:
    """The kernel and bias of ``conv`` with the inference-mode ``batchnorm`` after it folded in.

    Args:
        conv: a built ``Conv2D`` (kernel (kh, kw, in, out)) or ``DepthwiseConv2D`` (kernel (kh, kw, in, mult),
            output channel ``i * mult + m``), with or without bias.
        batchnorm: a built BatchNorm over the conv's C output channels (``scale`` / ``center`` may be off).
    Returns:
        kernel (the conv's shape) and bias (C,), float32, computed in float64.
    """
    kernel = np.asarray(conv.kernel, np.float64)
    channels = kernel.shape[2] * kernel.shape[3] if isinstance(conv, keras.layers.DepthwiseConv2D) else None
    channels = channels or kernel.shape[-1]
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros(channels)

    def weight(name: str, default: float) -> np.ndarray:
        value = getattr(batchnorm, name, None)
        return np.full(channels, default) if value is None else np.asarray(value, np.float64)

    scale = weight("gamma", 1.0) / np.sqrt(weight("moving_variance", 1.0) + float(batchnorm.epsilon))
    new_bias = (bias - weight("moving_mean", 0.0)) * scale + weight("beta", 0.0)
    new_kernel = kernel * scale.reshape(kernel.shape[2:] if channels != kernel.shape[-1] else (channels,))
    return new_kernel.astype(np.float32), new_bias.astype(np.float32)


def _is_foldable_batchnorm(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, FrozenBatchNormalization):
        return True
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return list(axis) in ([-1], [3]) and not getattr(layer, "renorm", False)


def _rewrite(
    model: keras.Model, config: dict, policy: str, fold: bool, folds: dict[str, dict[str, str]], path: str
) -> dict:
    """A functional model's config with foldable BatchNorms removed and every layer in ``policy``; recurses
    into nested models. Records ``folds[path] = {conv name: BatchNorm name}`` (``path``: "", "features/")."""
    config = copy.deepcopy(config)
    serialized_policy = keras.saving.serialize_keras_object(keras.DTypePolicy(policy))
    consumers, output_names = layer_consumers(config)

    pairs: dict[str, str] = {}
    if fold:
        for layer_config in config["layers"]:
            name = layer_config["name"]
            layer = model.get_layer(name)
            if (
                type(layer) not in _FOLDABLE_CONVS
                or name in output_names
                or len(consumers.get(name, [])) != 1
            ):
                continue
            batchnorm = model.get_layer(consumers[name][0]["name"])
            if (
                layer.activation is keras.activations.linear
                and layer.data_format == "channels_last"
                and len(layer._inbound_nodes) == 1
                and len(batchnorm._inbound_nodes) == 1
                and _is_foldable_batchnorm(batchnorm)
            ):
                pairs[name] = batchnorm.name
    folds[path] = pairs
    renamed = {batchnorm: conv for conv, batchnorm in pairs.items()}

    layers = []
    for layer_config in config["layers"]:
        name = layer_config["name"]
        if name in renamed:
            continue
        if name in pairs:
            layer_config["config"]["use_bias"] = True
        if layer_config["class_name"] == "Functional":
            nested = model.get_layer(name)
            layer_config["config"] = _rewrite(
                nested, layer_config["config"], policy, fold, folds, path=f"{path}{name}/"
            )
        elif layer_config["class_name"] != "InputLayer":
            layer_config["config"]["dtype"] = serialized_policy
        _rename_history(layer_config.get("inbound_nodes", []), renamed)
        layers.append(layer_config)
    config["layers"] = layers
    outputs = config["output_layers"]
    for output in (
        outputs if outputs and not isinstance(outputs[0], str) else [outputs]
    ):  # [name, node, tensor]
        output[0] = renamed.get(output[0], output[0])
    return config


def _rename_history(value: Any, renamed: dict[str, str]) -> None:
    """Points every ``keras_history`` reference to a removed BatchNorm at its convolution, in place."""
    if isinstance(value, dict):
        history = value.get("keras_history")
        if history is not None and history[0] in renamed:
            value["keras_history"] = [renamed[history[0]], *history[1:]]
        for item in value.values():
            _rename_history(item, renamed)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _rename_history(item, renamed)


def _copy_weights(
    source: keras.Model, target: keras.Model, folds: dict[str, dict[str, str]], path: str
) -> None:
    """Sets every layer of ``target`` (a rewritten copy of ``source``) from its namesake in ``source``."""
    pairs = folds.get(path, {})
    for layer in target.layers:
        original = source.get_layer(layer.name)
        if isinstance(layer, keras.Model) and layer.name and f"{path}{layer.name}/" in folds:
            _copy_weights(original, layer, folds, f"{path}{layer.name}/")
        elif layer.name in pairs:
            layer.set_weights(list(folded_weights(original, source.get_layer(pairs[layer.name]))))
        elif layer.weights:
            layer.set_weights(original.get_weights())
