"""``keras.applications`` backbones that return the C3, C4, C5 feature maps (strides 8, 16, 32)."""

from __future__ import annotations

import os

import keras
from keras import ops

from keras_retinanet.batchnorm import FusedBatchNormalization
from keras_retinanet.layers.normalization import ImageNormalization
from keras_retinanet.torchvision_resnet import RESNET_BLOCKS, build_torchvision_resnet

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
}
# torchvision's ResNets (stride on the 3x3 conv, PyTorch padding, frozen BatchNorm with epsilon 1e-5, ImageNet
# mean/std input normalisation), for torchvision checkpoints: see keras_retinanet.torchvision_resnet.
_TORCHVISION_BACKBONES = {f"torchvision_resnet{depth}": depth for depth in RESNET_BLOCKS}
FEATURE_STRIDES = (8, 16, 32)
# Size of the image used once to find which layers produce the stride-8/16/32 features.
_PROBE_SIZE = 256


def available_backbones() -> list[str]:
    return sorted([*_BACKBONES, *_TORCHVISION_BACKBONES])


def _feature_layer_indices(model: keras.Model) -> list[int]:
    """Indices of the last layers whose outputs have strides 8, 16 and 32, found on a probe-sized model.

    Indices, not names: some applications name layers from a global counter, so names differ between two
    instances while the layer order does not.
    """
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


def _inbound_layer_names(layer_config: dict) -> list[str]:
    """Names of the layers whose outputs a layer of a functional model's config consumes."""
    names = []

    def visit(value) -> None:
        if isinstance(value, dict):
            if "keras_history" in value:
                names.append(value["keras_history"][0])
            else:
                for item in value.values():
                    visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(layer_config.get("inbound_nodes", []))
    return names


def streamline_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of a functional model with the same outputs and a faster BatchNorm in training.

    - Every ``BatchNormalization`` becomes a ``FusedBatchNormalization`` (same weights; one fused kernel per
      direction in training mode, see ``keras_retinanet.batchnorm``).
    - The bias of a ``Conv2D`` whose only consumer is a BatchNorm is folded into that BatchNorm's moving mean.
      BatchNorm subtracts the mean of its input, so the bias does nothing in training mode (its gradient is
      zero) and in inference mode equals a shift of the moving mean. ``keras.applications``' ResNet v1 models
      carry one on each of their 53 convolutions, each costing a BiasAdd and, in training, a reduction over the
      whole activation for its gradient.

    The outputs are unchanged up to float rounding. Returns ``model`` itself when it is not functional or has
    no BatchNorm.
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

    consumers: dict[str, list[dict]] = {}
    for layer_config in config["layers"]:
        for name in _inbound_layer_names(layer_config):
            consumers.setdefault(name, []).append(layer_config)
    outputs = config["output_layers"]
    outputs = [outputs] if outputs and isinstance(outputs[0], str) else outputs  # one output: not nested
    output_names = {output[0] for output in outputs}
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


def build_backbone(
    name: str = "resnet50", weights: str | None = None, batchnorm_momentum: float | None = 0.9, **kwargs
) -> keras.Model:
    """Builds a backbone that maps (B, H, W, 3) RGB pixels in [0, 255] to [C3, C4, C5].

    Args:
        name: one of ``available_backbones()``.
        weights: ``None`` (random init), ``"imagenet"`` (downloaded by Keras; needs network or Keras' cache)
            or the path of a local weights file for the ``keras.applications`` model without its top.
        batchnorm_momentum: momentum of every BatchNorm moving average (0.9, PyTorch's 0.1). The applications
            use 0.99-0.999 (MobileNets 0.999): after a few hundred steps their moving statistics are still mostly
            the initial ones, and inference-mode outputs are wrong. ``None`` keeps the application's values.
        **kwargs: passed to the ``keras.applications`` constructor (e.g. ``alpha`` for MobileNet).
    Returns:
        A functional ``keras.Model`` with input (None, None, None, 3) and outputs C3 (stride 8), C4 (stride 16)
        and C5 (stride 32); the input normalisation of the weights is inside it. After the weights are
        loaded, convolution biases that only feed a BatchNorm are folded into it and BatchNorm trains with the
        fused kernel (``streamline_batchnorm``).
    """
    if name in _TORCHVISION_BACKBONES:
        return _build_torchvision_backbone(name, weights, batchnorm_momentum, **kwargs)
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    constructor, normalization = _BACKBONES[name]
    if weights not in (None, "imagenet") and not os.path.isfile(str(weights)):
        raise FileNotFoundError(f"backbone weights file {weights!r} does not exist")
    probe = constructor(include_top=False, weights=None, input_shape=(_PROBE_SIZE, _PROBE_SIZE, 3), **kwargs)
    layer_indices = _feature_layer_indices(probe)
    del probe

    try:
        base = constructor(include_top=False, weights=weights, input_shape=(None, None, 3), **kwargs)
    except Exception as error:  # Keras raises several kinds for a failed download or a wrong file.
        if weights == "imagenet":
            raise RuntimeError(
                f"could not load ImageNet weights for backbone {name!r} ({type(error).__name__}: {error}). "
                "They are downloaded on first use: check the network, or download them elsewhere and pass the "
                "file with weights=PATH (--weights PATH), or train from scratch with weights=None."
            ) from None
        raise ValueError(f"could not load backbone weights from {weights!r} for {name!r}: {error}") from None
    base = streamline_batchnorm(base)

    if batchnorm_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = float(batchnorm_momentum)

    images = keras.Input((None, None, 3), name="images")
    normalized = ImageNormalization(normalization, name="image_normalization")(images)
    features = keras.Model(
        base.inputs, [base.layers[i].output for i in layer_indices], name=f"{name}_features"
    )(normalized)
    return keras.Model(images, features, name=name)


def check_torchvision_weights(name: str, weights: str | None) -> None:
    """Refuses what a ``torchvision_resnet*`` backbone cannot load: it never downloads, and reads only files.

    Raises:
        ValueError: ``weights="imagenet"``, with the torchvision file to fetch instead.
        FileNotFoundError: a path that is not a file.
    """
    if weights == "imagenet":
        raise ValueError(
            f"backbone {name!r} takes torchvision's ImageNet weights from a file: download "
            "https://download.pytorch.org/models/resnet50-0676ba61.pth (torchvision's ResNet50_Weights.IMAGENET1K_V1; "
            "resnet101-63fe2227.pth for ResNet-101) and pass its path with weights=PATH (--weights PATH). "
            ".pth/.pt files need torch installed (pip install 'keras-retinanet[torch]'); "
            "`retinanet convert torchvision FILE.pth --output FILE.npz` turns one into a torch-free .npz."
        )
    if weights is not None and not os.path.isfile(str(weights)):
        raise FileNotFoundError(f"backbone weights file {weights!r} does not exist")


def _build_torchvision_backbone(
    name: str, weights: str | None, batchnorm_momentum: float | None, **kwargs
) -> keras.Model:
    """A ``torchvision_resnet*`` backbone, its weights read from a torchvision checkpoint file."""
    check_torchvision_weights(name, weights)
    model = build_torchvision_resnet(
        _TORCHVISION_BACKBONES[name], batchnorm_momentum=batchnorm_momentum, name=name, **kwargs
    )
    if weights is not None:
        from keras_retinanet.torchvision_weights import load_torchvision_resnet_weights

        load_torchvision_resnet_weights(model, weights)
    return model
