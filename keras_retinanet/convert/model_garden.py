"""TF Model Garden's mobile RetinaNets (MediaPipe Model Maker's COCO-trained starts) as Keras models.

Reads the TensorFlow checkpoints of ``mobilenetv2_ssd_i256_ckpt`` (``MOBILENET_V2``) and
``mobilenetv3.5_ssd_i256_ckpt`` (``MOBILENET_MULTI_AVG``; a 384-px sibling) directly (no Model Garden needed)
into :data:`keras_retinanet.model.presets.MODEL_GARDEN_MOBILENET_V2` models (the MultiAVG one with
:mod:`keras_retinanet.backbones.mobilenet_multi_avg`), so that they compute Model Garden's function.

Checkpoint layout: ``backbone/layer_with_weights-N/_convK|_normK/VAR``, ``decoder/layer_with_weights-N/VAR``
(:data:`DECODER_LAYERS`), ``head/_cls_convs/I/VAR``, ``head/_cls_norms/LEVEL/I/VAR``, ``head/_classifier/VAR``
and the same for ``_box``. Converted: the anchor order (Model Garden's is scale-major with ratio = width /
height; :func:`anchor_permutation`), box deltas (dy, dx, dh, dw) -> (dx, dy, dw, dh), and the 91 class channels
(COCO category ids, channel 0 background; unused ones dropped unless ``keep_unused_slots``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from keras_retinanet.backbones.torchvision.state_dict import CheckpointError
from keras_retinanet.backbones.torchvision.weights import assign_weight
from keras_retinanet.convert.torchvision import cell_permutation, slot_selection
from keras_retinanet.model.presets import MODEL_GARDEN_MOBILENET_V2

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# The checkpoint's model variables (not the optimiser's or the step).
_MODEL_PARTS = ("backbone", "decoder", "head")
# --spec -> (backbone, input size). The 320-px MobileNetV2 model (levels P3-P6) does not fit the P3-P7 pyramid.
SPECS = {
    "mobilenet_v2": ("mobilenet_v2", 256),
    "mobilenet_multi_avg": ("mobilenet_multi_avg", 256),
    "mobilenet_multi_avg_i384": ("mobilenet_multi_avg", 384),
}
# decoder/layer_with_weights-N of a P3-P7 FPN: our FeaturePyramid's layer names, in Model Garden's graph order.
DECODER_LAYERS = (
    "lateral_c5", "lateral_c4", "output_p5", "lateral_c3", "p6", "output_p3", "output_p4", "p7",
    "norm_p3", "norm_p4", "norm_p5", "norm_p6", "norm_p7",
)  # fmt: skip
# Model Garden's box outputs (dy, dx, dh, dw) -> ours (dx, dy, dw, dh).
BOX_ORDER = (1, 0, 3, 2)
_BLOCK_PARTS = {"_conv0": "expand", "_norm0": "expand_BN", "_conv1": "depthwise", "_norm1": "depthwise_BN",
                "_conv2": "project", "_norm2": "project_BN"}  # fmt: skip


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """``({key without /.ATTRIBUTES/VARIABLE_VALUE: array}, checkpoint prefix)`` of the model variables of a TF
    checkpoint: a prefix (``ckpt-277200``) or a folder holding one checkpoint."""
    import tensorflow as tf

    prefix = str(path)
    if os.path.isdir(prefix):
        prefix = tf.train.latest_checkpoint(prefix) or ""
        if not prefix:
            indices = sorted(name for name in os.listdir(path) if name.endswith(".index"))
            if len(indices) != 1:
                raise CheckpointError(
                    f"{path}: expected one TensorFlow checkpoint (NAME.index + NAME.data-*) in the folder, found "
                    f"{len(indices)}{': ' + ', '.join(indices) if indices else ''}"
                )
            prefix = os.path.join(str(path), indices[0][: -len(".index")])
    elif not os.path.isfile(prefix + ".index"):
        raise CheckpointError(f"{path}: no TensorFlow checkpoint there (no {os.path.basename(prefix)}.index)")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as error:  # TensorFlow raises DataLossError, NotFoundError, ... for damaged files
        raise CheckpointError(
            f"{prefix}: not a readable TensorFlow checkpoint ({type(error).__name__})"
        ) from None
    variables = {}
    for key in reader.get_variable_to_shape_map():
        if key.endswith(_SUFFIX) and key.split("/", 1)[0] in _MODEL_PARTS:
            variables[key[: -len(_SUFFIX)]] = reader.get_tensor(key)
    if not variables:
        raise CheckpointError(
            f"{prefix}: no backbone/, decoder/ or head/ variables: not a Model Garden RetinaNet"
        )
    return variables, prefix


def mobilenet_v2_weight_name(key: str) -> str | None:
    """``keras.applications.MobileNetV2``'s ``LAYER/VARIABLE`` for a Model Garden backbone key, e.g.
    ``backbone/layer_with_weights-6/_norm0/gamma`` -> ``block_5_expand_BN/gamma``; None for the unused last
    1x1 conv (block 18) and keys outside the backbone. Blocks: 0 ``Conv1``, 1 ``expanded_conv_*``, 2-17
    ``block_1`` to ``block_16``."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "backbone" or not parts[1].startswith("layer_with_weights-"):
        return None
    block, part, variable = int(parts[1].rsplit("-", 1)[1]), parts[2], parts[3]
    variable = "kernel" if variable == "depthwise_kernel" else variable
    if block == 0:
        layer = {"_conv0": "Conv1", "_norm0": "bn_Conv1"}[part]
    elif block == 1:
        layer = "expanded_conv_" + _BLOCK_PARTS[part]
    elif block <= 17:
        layer = f"block_{block - 1}_" + _BLOCK_PARTS[part]
    else:
        return None
    return f"{layer}/{variable}"


def backbone_weight_name(spec: str, key: str) -> str | None:
    """The Keras backbone's ``LAYER/VARIABLE`` for a Model Garden backbone key of ``spec`` (None: not used)."""
    if SPECS[spec][0] == "mobilenet_v2":
        return mobilenet_v2_weight_name(key)
    from keras_retinanet.backbones.mobilenet_multi_avg import model_garden_weight_names

    try:
        return model_garden_weight_names(key)
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def model_garden_cell_anchors(level: int) -> np.ndarray:
    """(9, 4) xyxy anchors of one cell centred on (0, 0), by Model Garden's formula (``ops/anchor.py``), in its
    order: scale-major, then aspect ratio (width / height); size ``3 * 2^level * 2^(scale / 3)``."""
    anchors = []
    for scale in range(3):
        base = 3.0 * 2.0**level * 2.0 ** (scale / 3.0)
        for ratio in (0.5, 1.0, 2.0):
            width, height = base * math.sqrt(ratio), base / math.sqrt(ratio)
            anchors.append([-width / 2, -height / 2, width / 2, height / 2])
    return np.asarray(anchors, "float32")


def anchor_permutation(anchor_generator) -> np.ndarray:
    """:func:`~keras_retinanet.convert.torchvision.cell_permutation` against Model Garden's anchors."""
    return cell_permutation(anchor_generator, model_garden_cell_anchors, "Model Garden")


def detect_spec(variables: Mapping[str, np.ndarray]) -> str:
    """``"mobilenet_v2"`` or ``"mobilenet_multi_avg"`` from the backbone's first blocks (MultiAVG's block 1
    expands its input; MobileNetV2's does not). Raises for a P3-P6 model or a checkpoint of another kind."""
    if "backbone/layer_with_weights-0/_conv0/kernel" not in variables:
        raise CheckpointError("no MobileNet stem (backbone/layer_with_weights-0/_conv0/kernel)")
    decoder_layers = {key.split("/")[1] for key in variables if key.startswith("decoder/")}
    if len(decoder_layers) != len(DECODER_LAYERS):
        raise CheckpointError(
            f"the FPN has {len(decoder_layers)} weighted layers, a P3-P7 one has {len(DECODER_LAYERS)}: P3-P6 "
            "models (MOBILENET_V2_I320) are not supported (this project's pyramid is P3-P7)"
        )
    expands = "backbone/layer_with_weights-1/_conv0/kernel" in variables
    return "mobilenet_multi_avg" if expands else "mobilenet_v2"


def build_model_garden_retinanet(spec: str, class_names: Sequence[str], **kwargs):
    """An (unloaded) RetinaNet with Model Garden's mobile architecture for ``spec`` (a key of :data:`SPECS`)."""
    if spec not in SPECS:
        raise ValueError(f"unknown spec {spec!r}; one of {', '.join(SPECS)}")
    backbone, size = SPECS[spec]
    config = MODEL_GARDEN_MOBILENET_V2.update({"backbone": backbone, "image_size": size, "weights": None})
    if backbone != "mobilenet_v2":
        config = config.update({"backbone_feature_layers": None})  # the backbone's own (block_6/12/16_add)
    kwargs.setdefault("name", f"retinanet_{spec}")
    return config.build(class_names, **kwargs)


class _Variables:
    """The checkpoint's variables, each to be used once: ``take`` marks, ``unused`` lists what is left."""

    def __init__(self, variables: Mapping[str, np.ndarray], source: str):
        self.variables, self.source, self.used = dict(variables), source, set()

    def take(self, key: str) -> np.ndarray:
        if key not in self.variables:
            raise CheckpointError(f"{self.source}: no variable {key}")
        self.used.add(key)
        return np.asarray(self.variables[key], "float32")

    def unused(self) -> list[str]:
        return sorted(set(self.variables) - self.used)


def _load_layer(layer: keras.layers.Layer, variables: _Variables, prefix: str, transform=None) -> None:
    """Every weight of ``layer`` from ``prefix/NAME`` (same names), through ``transform(name, value)``."""
    for weight in layer.weights:
        value = variables.take(f"{prefix}/{weight.name}")
        assign_weight(
            weight, transform(weight.name, value) if transform else value, f"{variables.source}: {prefix}"
        )


def _load_backbone(backbone: keras.Model, variables: _Variables, spec: str) -> None:
    layers = {layer.name: layer for model in _models(backbone) for layer in model.layers}
    for key in [k for k in variables.variables if k.startswith("backbone/")]:
        name = backbone_weight_name(spec, key)
        if name is None:
            variables.used.add(key)  # the unused last convs: not part of the detector
            continue
        layer_name, variable = name.split("/")
        if layer_name not in layers:
            raise CheckpointError(
                f"{variables.source}: {key} -> {name}: the backbone has no layer {layer_name}"
            )
        (weight,) = [w for w in layers[layer_name].weights if w.name == variable]
        value = variables.take(key)
        if variable == "kernel" and isinstance(layers[layer_name], keras.layers.DepthwiseConv2D):
            value = value.reshape(weight.shape)
        assign_weight(weight, value, f"{variables.source}: {key}")


def _models(model: keras.Model) -> list[keras.Model]:
    """``model`` and every functional model nested in it."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return [model, *(m for inner in nested for m in _models(inner))]


def _load_head(head, variables: _Variables, tower: str, final: str, perm: np.ndarray, kept) -> None:
    """A head's shared convs, its per-level BatchNorms and its last conv, whose (..., A, K) outputs are taken in
    our anchor order ``perm`` and then ``kept`` (class slots, or our box order)."""
    for i, conv in enumerate(head.convs):
        _load_layer(conv, variables, f"head/_{tower}_convs/{i}")
    for index, norm in enumerate(head.level_norms):
        level, i = divmod(index, head.depth)
        _load_layer(norm, variables, f"head/_{tower}_norms/{level}/{i}")

    def outputs(name: str, value: np.ndarray) -> np.ndarray:
        if name == "depthwise_kernel":
            return value
        value = value.reshape(*value.shape[:-1], head.num_anchors, -1)[..., perm, :][..., kept]
        return value.reshape(*value.shape[:-2], -1)

    _load_layer(head.final, variables, f"head/{final}", outputs)


def convert_model_garden_retinanet(
    source: str | os.PathLike | Mapping[str, np.ndarray],
    spec: str | None = None,
    class_names: Sequence[str] | None = None,
    keep_unused_slots: bool = False,
    **kwargs,
):
    """A Keras RetinaNet with the weights of a Model Garden mobile RetinaNet checkpoint.

    Args:
        source: the checkpoint (prefix ``.../ckpt-277200`` or its folder) or ``{key: array}`` with the keys
            without ``/.ATTRIBUTES/VARIABLE_VALUE``.
        spec: a key of :data:`SPECS`; ``None`` detects the backbone (MobileNetV2 or MultiAVG at 256 px).
        class_names, keep_unused_slots: as in :func:`~keras_retinanet.convert.torchvision.slot_selection`.
    Returns:
        (model, report): the ``RetinaNet`` and ``{"source", "spec", "num_slots", "slots", "class_names",
        "dropped_slots", "variables"}``.
    Raises:
        CheckpointError: not such a checkpoint, a variable missing or misshapen, or one left without a place.
    """
    if isinstance(source, Mapping):
        raw, name = {k: v for k, v in source.items() if k.split("/", 1)[0] in _MODEL_PARTS}, "checkpoint"
    else:
        raw, name = read_checkpoint(source)
    try:
        detected = detect_spec(raw)
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None
    spec = spec or detected
    if spec not in SPECS:
        raise ValueError(f"unknown spec {spec!r}; one of {', '.join(SPECS)}")
    if SPECS[spec][0] != detected:
        raise CheckpointError(f"{name}: --spec {spec} given, but the checkpoint's backbone is {detected}")
    num_anchors = 9
    num_slots = raw["head/_classifier/bias"].shape[0] // num_anchors
    slots, names = slot_selection(num_slots, class_names, keep_unused_slots)
    model = build_model_garden_retinanet(spec, names, **kwargs)
    perm = anchor_permutation(model.anchor_generator)

    variables = _Variables(raw, name)
    _load_backbone(model.backbone, variables, spec)
    pyramid = model.get_layer("feature_pyramid")
    layers = [*pyramid.lateral, *pyramid.output_convs, pyramid.p6_conv, pyramid.p7_conv, *pyramid.norms]
    by_name = {layer.name: layer for layer in layers}
    for index, layer_name in enumerate(DECODER_LAYERS):
        _load_layer(by_name[layer_name], variables, f"decoder/layer_with_weights-{index}")
    _load_head(model.get_layer("classification_head"), variables, "cls", "_classifier", perm, slots)
    _load_head(model.get_layer("box_head"), variables, "box", "_box_regressor", perm, BOX_ORDER)
    leftover = variables.unused()
    if leftover:
        raise CheckpointError(
            f"{name}: {len(leftover)} variables have no place in the converted model: {', '.join(leftover[:10])}"
        )
    return model, {
        "source": name,
        "spec": spec,
        "num_slots": num_slots,
        "slots": slots,
        "class_names": names,
        "dropped_slots": [i for i in range(num_slots) if i not in slots],
        "variables": len(variables.used),
    }
