"""Backbones that return the C3, C4, C5 feature maps (strides 8, 16, 32), by name.

``weights="imagenet"`` (the default) reads Keras' cache (downloaded on first use) or, for torchvision's
ResNets, torch's (``$TORCH_HOME/hub/checkpoints``); ``None`` trains from scratch; a path loads a local file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import keras
from keras import ops

from keras_retinanet.backbones.batchnorm import FusedBatchNormalization
from keras_retinanet.backbones.mobilenet_multi_avg import FEATURE_LAYERS as MULTI_AVG_FEATURE_LAYERS
from keras_retinanet.backbones.mobilenet_multi_avg import build_mobilenet_multi_avg
from keras_retinanet.backbones.normalization import ImageNormalization
from keras_retinanet.backbones.torchvision.resnet import RESNET_BLOCKS, build_torchvision_resnet


def _mobilenet_multi_avg(
    include_top: bool = False, weights: str | None = None, input_shape=(None, None, 3)
) -> keras.Model:
    """``build_mobilenet_multi_avg`` with the ``keras.applications`` constructor's arguments."""
    if weights == "imagenet":
        raise BackboneWeightsError(
            "backbone 'mobilenet_multi_avg' has no ImageNet weights in Keras: start from a converted Model Garden "
            "checkpoint (`retinanet convert model-garden`, then `retinanet train --init MODEL.keras`), or pass "
            "--weights PATH or --weights none (train from scratch)"
        )
    model = build_mobilenet_multi_avg(input_shape)
    if weights is not None:
        model.load_weights(weights)
    return model


# name -> (keras.applications constructor, input normalisation the ImageNet weights expect)
_BACKBONES = {
    "resnet50": (keras.applications.ResNet50, "caffe"),
    "resnet101": (keras.applications.ResNet101, "caffe"),
    "resnet152": (keras.applications.ResNet152, "caffe"),
    "resnet50_v2": (keras.applications.ResNet50V2, "tf"),
    "resnet101_v2": (keras.applications.ResNet101V2, "tf"),
    "mobilenet_v2": (keras.applications.MobileNetV2, "tf"),
    # MobileNetV3 and EfficientNet normalise their inputs themselves (include_preprocessing / Rescaling).
    "mobilenet_v3_small": (keras.applications.MobileNetV3Small, "none"),
    "mobilenet_v3_large": (keras.applications.MobileNetV3Large, "none"),
    **{f"efficientnet_b{i}": (getattr(keras.applications, f"EfficientNetB{i}"), "none") for i in range(8)},
    **{
        f"efficientnet_v2_{v}": (getattr(keras.applications, f"EfficientNetV2{v.upper()}"), "none")
        for v in ("b0", "b1", "b2", "b3", "s", "m", "l")
    },
    # Its weights come from a converted Model Garden checkpoint, trained on ImageNet mean/std pixels.
    "mobilenet_multi_avg": (_mobilenet_multi_avg, "torch"),
}
# Backbones whose C3, C4, C5 are not the last layer of each stride: their layer names.
_FEATURE_LAYERS = {"mobilenet_multi_avg": MULTI_AVG_FEATURE_LAYERS}
_TORCHVISION_BACKBONES = {f"torchvision_resnet{depth}": depth for depth in RESNET_BLOCKS}
_BUILT_IN = frozenset([*_BACKBONES, *_TORCHVISION_BACKBONES])
FEATURE_STRIDES = (8, 16, 32)
# Size of the image used once to find which layers produce the stride-8/16/32 features.
_PROBE_SIZE = 256
# torchvision's ImageNet checkpoints (ResNet*_Weights.IMAGENET1K_V1), as torch.hub names them in its cache.
TORCHVISION_IMAGENET_FILES = {
    50: "resnet50-0676ba61.pth",
    101: "resnet101-63fe2227.pth",
    152: "resnet152-394f9c45.pth",
}
_FROM_SCRATCH_OR_FILE = "pass --weights PATH (a local weights file) or --weights none (train from scratch)"


class BackboneWeightsError(ValueError):
    """The backbone's weights cannot be had: ImageNet weights neither cached nor downloadable, or a bad file."""


def available_backbones() -> list[str]:
    return sorted([*_BACKBONES, *_TORCHVISION_BACKBONES])


def register_backbone(
    name: str, constructor, normalization: str = "none", feature_layers: Sequence[str] | None = None
) -> None:
    """Makes ``name`` a backbone of :func:`build_backbone`, hence of ``RetinaNet(backbone=name)`` and ``--backbone``.

    ``constructor(include_top=False, weights=None | "imagenet" | PATH, input_shape=(None, None, 3), **kwargs)``
    returns a functional model of pixels normalised as ``normalization`` says (caffe, tf, torch, none);
    ``feature_layers`` names C3, C4, C5 (``None``: the last layer of each stride). Built-in names are refused.
    """
    if name in _BUILT_IN:
        raise ValueError(f"backbone {name!r} is built in; register the new one under another name")
    _BACKBONES[name] = (constructor, normalization)
    _FEATURE_LAYERS.pop(name, None)
    if feature_layers is not None:
        _FEATURE_LAYERS[name] = tuple(feature_layers)


def _feature_layer_indices(model: keras.Model) -> list[int]:
    """Indices of the last layers whose outputs have strides 8, 16 and 32, found on a probe-sized model
    (indices, not names: some applications name layers from a global counter)."""
    indices = []
    for stride in FEATURE_STRIDES:
        size = _PROBE_SIZE // stride
        matching = [
            index
            for index, layer in enumerate(model.layers)
            if len(layer.output.shape) == 4 and tuple(layer.output.shape[1:3]) == (size, size)
        ]
        if not matching:
            raise ValueError(f"backbone {model.name} has no layer with stride {stride}")
        indices.append(matching[-1])
    return indices


def layer_consumers(config: dict) -> tuple[dict[str, list[dict]], set[str]]:
    """Of a functional model's config: {layer name: the configs of the layers that read it}, and the names of
    its output layers."""
    consumers: dict[str, list[dict]] = {}

    def visit(value, layer_config: dict) -> None:
        if isinstance(value, dict) and "keras_history" in value:
            consumers.setdefault(value["keras_history"][0], []).append(layer_config)
        elif isinstance(value, (dict, list, tuple)):
            for item in value.values() if isinstance(value, dict) else value:
                visit(item, layer_config)

    for layer_config in config["layers"]:
        visit(layer_config.get("inbound_nodes", []), layer_config)
    outputs = config["output_layers"]
    outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs  # one output: not nested
    return consumers, {output[0] for output in outputs}


def streamline_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of a functional model with the same outputs (up to float rounding) and a faster BatchNorm.

    Every ``BatchNormalization`` becomes a ``FusedBatchNormalization`` (same weights), and the bias of a
    ``Conv2D`` read only by a BatchNorm moves into its moving mean (BatchNorm subtracts the mean, so the bias
    only cost a BiasAdd and a gradient reduction). Returns ``model`` itself when not functional or without
    BatchNorm.
    """
    config = model.get_config()
    if "output_layers" not in config:  # not a functional model (e.g. Sequential): left as it is
        return model
    batchnorms = [c for c in config["layers"] if c["class_name"] == "BatchNormalization"]
    if not batchnorms:
        return model
    for layer_config in batchnorms:
        layer_config.update(
            class_name=FusedBatchNormalization.__name__,
            module=None,
            registered_name=keras.saving.get_registered_name(FusedBatchNormalization),
        )

    consumers, output_names = layer_consumers(config)
    folded = {}  # conv name -> BatchNorm name
    for layer_config in config["layers"]:
        name = layer_config["name"]
        users = consumers.get(name, [])
        if (
            layer_config["class_name"] == "Conv2D"
            and layer_config["config"].get("use_bias")
            and name not in output_names
            and len(users) == 1
            and users[0]["class_name"] == FusedBatchNormalization.__name__
        ):
            layer_config["config"]["use_bias"] = False
            folded[name] = users[0]["name"]

    rebuilt = keras.Model.from_config(config)
    for layer in model.layers:
        weights = layer.get_weights()
        if layer.name in folded:
            weights = weights[:1]  # the kernel
        if weights:
            rebuilt.get_layer(layer.name).set_weights(weights)
    for conv_name, batchnorm_name in folded.items():
        bias = model.get_layer(conv_name).bias
        moving_mean = rebuilt.get_layer(batchnorm_name).moving_mean
        moving_mean.assign(moving_mean - ops.cast(bias, moving_mean.dtype))
    return rebuilt


def describe_weights(name: str, weights: str | None) -> str:
    """The weights a backbone starts from, in words, for the training plan."""
    if weights is None:
        return "random (from scratch)"
    if weights != "imagenet":
        return str(weights)
    if name in _TORCHVISION_BACKBONES:
        return f"ImageNet (torchvision's {TORCHVISION_IMAGENET_FILES[_TORCHVISION_BACKBONES[name]]})"
    from keras.src.backend.config import keras_home

    return f"ImageNet (Keras' cache {os.path.join(keras_home(), 'models')})"


def build_backbone(
    name: str = "resnet50",
    weights: str | None = "imagenet",
    batchnorm_momentum: float | None = 0.9,
    feature_layers: Sequence[str] | None = None,
    normalization: str | None = None,
    **kwargs,
) -> keras.Model:
    """Builds a backbone that maps (B, H, W, 3) RGB pixels in [0, 255] to [C3, C4, C5].

    Args:
        name: one of ``available_backbones()``.
        weights: ``"imagenet"``, ``None`` (random init) or a local weights file of the model without its top.
        batchnorm_momentum: of every BatchNorm (PyTorch's; the applications' 0.99-0.999 lag for hundreds of
            steps); ``None`` keeps theirs.
        feature_layers: names of the three layers whose outputs are C3, C4, C5 (e.g. MobileNetV2's
            ``block_5_add``, ``block_12_add``, ``block_16_project_BN``); ``None``: the last layer of each stride.
        normalization: ``ImageNormalization`` mode in front of the backbone; ``None``: what its ImageNet
            weights expect.
        **kwargs: passed to the ``keras.applications`` constructor (e.g. ``alpha`` for MobileNet).
    Returns:
        A functional ``keras.Model``: (B, H, W, 3) -> [C3, C4, C5], the normalisation inside, BatchNorm
        streamlined (:func:`streamline_batchnorm`).
    """
    if name in _TORCHVISION_BACKBONES:
        if feature_layers or normalization:
            raise ValueError(f"backbone {name!r} fixes its feature layers and input normalisation")
        weights = resolve_torchvision_weights(name, weights)
        model = build_torchvision_resnet(
            _TORCHVISION_BACKBONES[name], batchnorm_momentum=batchnorm_momentum, name=name, **kwargs
        )
        if weights is not None:
            from keras_retinanet.backbones.torchvision.weights import load_torchvision_resnet_weights

            load_torchvision_resnet_weights(model, weights)
        return model
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    constructor, weights_normalization = _BACKBONES[name]
    normalization = normalization or weights_normalization
    _check_weights_file(weights)
    feature_layers = feature_layers or _FEATURE_LAYERS.get(name)
    if feature_layers is None:
        probe = constructor(
            include_top=False, weights=None, input_shape=(_PROBE_SIZE, _PROBE_SIZE, 3), **kwargs
        )
        layer_indices = _feature_layer_indices(probe)
        del probe
    elif len(feature_layers) != len(FEATURE_STRIDES):
        raise ValueError(f"feature_layers names C3, C4 and C5: three layers, got {list(feature_layers)}")

    try:
        with warnings.catch_warnings():
            # Without a top the ImageNet weights fit any input size; Keras warns about 224x224 all the same.
            warnings.filterwarnings("ignore", message=".*input_shape. is undefined or non-square")
            base = constructor(include_top=False, weights=weights, input_shape=(None, None, 3), **kwargs)
    except BackboneWeightsError:
        raise
    except Exception as error:  # Keras raises several kinds for a failed download or a wrong file.
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        if weights == "imagenet":
            raise BackboneWeightsError(
                f"the ImageNet weights of backbone {name!r} are not in Keras' cache and could not be downloaded "
                f"({reason}); {_FROM_SCRATCH_OR_FILE}"
            ) from None
        raise BackboneWeightsError(
            f"could not load backbone weights from {weights!r} for {name!r}: {reason}"
        ) from None
    base = streamline_batchnorm(base)

    if batchnorm_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(batchnorm_momentum)

    images = keras.Input((None, None, 3), name="images")
    normalized = ImageNormalization(normalization, name="image_normalization")(images)
    if feature_layers is None:
        outputs = [base.layers[i].output for i in layer_indices]
    else:
        outputs = [_layer(base, layer_name).output for layer_name in feature_layers]
    features = keras.Model(base.inputs, outputs, name=f"{name}_features")(normalized)
    return keras.Model(images, features, name=name)


def _layer(model: keras.Model, name: str) -> keras.layers.Layer:
    try:
        return model.get_layer(name)
    except ValueError:
        raise ValueError(f"backbone {model.name} has no layer {name!r} (feature_layers)") from None


def _check_weights_file(weights: str | None) -> None:
    if weights not in (None, "imagenet") and not os.path.isfile(str(weights)):
        raise FileNotFoundError(f"backbone weights file {weights!r} does not exist")


def resolve_torchvision_weights(name: str, weights: str | None) -> str | None:
    """The file a ``torchvision_resnet*`` backbone loads: ``weights`` itself, or for ``"imagenet"`` torchvision's
    ImageNet checkpoint in torch's cache (the backbone never downloads).

    Raises:
        BackboneWeightsError: ``weights="imagenet"`` and the file is not in torch's cache: says where to get it.
        FileNotFoundError: a path that is not a file.
    """
    if weights != "imagenet":
        _check_weights_file(weights)
        return weights
    file_name = TORCHVISION_IMAGENET_FILES[_TORCHVISION_BACKBONES[name]]
    # torch.hub's checkpoint folder, found without importing torch.
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    torch_home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    cached = os.path.join(torch_home, "hub", "checkpoints", file_name)
    if os.path.isfile(cached):
        return cached
    raise BackboneWeightsError(
        f"backbone {name!r} starts from torchvision's ImageNet file {file_name}, which is not in torch's cache "
        f"({cached}): download https://download.pytorch.org/models/{file_name} there (.pth files need "
        f"pip install 'keras-retinanet[torch]'), or {_FROM_SCRATCH_OR_FILE}"
    )
