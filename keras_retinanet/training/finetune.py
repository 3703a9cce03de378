"""Fine-tuning from a trained RetinaNet (``retinanet train --init MODEL.keras``).

Every layer that does not depend on the class list is kept. The class head's last conv is rebuilt: its
(3, 3, C, A * K) kernel holds channel ``anchor * K + class``, so a new class whose name the old model knows gets
that class's column of every anchor and its bias; another starts at the prior probability. Names match exactly,
else after lower-casing with ``_``, ``-`` and spaces as one space (``"traffic_light"`` finds ``"traffic light"``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

import keras
import numpy as np

from keras_retinanet.model.retinanet import RetinaNet

# RetinaNet get_config keys that decide the class-independent layers' shapes and meaning.
_ARCHITECTURE_KEYS = (
    "backbone",
    "fpn_channels",
    "p6_source",
    "fpn_padding",
    "head_depth",
    "head_channels",
    "use_group_norm",
    "group_norm_epsilon",
    "backbone_feature_layers",
    "input_normalization",
    "fpn_batchnorm",
    "head_batchnorm",
    "separable_convs",
    "activation",
)


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def match_class_names(old: Sequence[str], new: Sequence[str]) -> dict[int, int]:
    """``{new class index: old class index}`` for the new classes the old model knows."""
    exact = {name: i for i, name in enumerate(old)}
    loose: dict[str, int] = {}
    for i, name in enumerate(old):
        loose.setdefault(_normalise(name), i)
    matches = {}
    for j, name in enumerate(new):
        if name in exact:
            matches[j] = exact[name]
        elif _normalise(name) in loose:
            matches[j] = loose[_normalise(name)]
    return matches


def _copy_layer_weights(source_layer, target_layer, what: str) -> int:
    """Assigns every variable of ``source_layer`` to the same-shaped one of ``target_layer``; returns the count."""
    source_vars, target_vars = source_layer.weights, target_layer.weights
    if len(source_vars) != len(target_vars):
        raise ValueError(
            f"{what}: the source has {len(source_vars)} weights, the new model {len(target_vars)}: not the same "
            "architecture"
        )
    for source_var, target_var in zip(source_vars, target_vars):
        if tuple(source_var.shape) != tuple(target_var.shape):
            raise ValueError(
                f"{what}: weight {source_var.path} has shape {tuple(source_var.shape)}, the new model's "
                f"{target_var.path} {tuple(target_var.shape)}: not the same architecture"
            )
        target_var.assign(source_var.value)
    return len(source_vars)


def transfer_weights(source: RetinaNet, target: RetinaNet) -> dict:
    """Copies a trained RetinaNet's weights into ``target``, a new one of the same architecture for another
    class list; ValueError when their class-independent layers differ.

    Returns:
        A report: ``kept`` (new class -> old class it starts from), ``new`` (classes starting from the prior),
        ``not_used`` (old classes), ``weights_copied`` and ``warnings`` (anchors or box coding that differ).
    """
    source_anchors = source.anchor_generator.num_anchors_per_location
    target_anchors = target.anchor_generator.num_anchors_per_location
    if source_anchors != target_anchors:
        raise ValueError(
            f"the source model has {source_anchors} anchors per location, the new one {target_anchors}"
        )
    copied = 0
    copied += _copy_layer_weights(source.backbone, target.backbone, "backbone")
    for name in ("feature_pyramid", "box_head"):
        copied += _copy_layer_weights(source.get_layer(name), target.get_layer(name), name)
    source_head = source.get_layer("classification_head")
    target_head = target.get_layer("classification_head")
    if len(source_head.convs) != len(target_head.convs):
        raise ValueError("classification_head: the two models' heads have different depths or norms")
    if len(source_head.level_norms) != len(target_head.level_norms):
        raise ValueError("classification_head: one model has BatchNorm per level in its head, the other not")
    for source_layer, target_layer in zip(
        [*source_head.convs, *source_head.level_norms], [*target_head.convs, *target_head.level_norms]
    ):
        copied += _copy_layer_weights(source_layer, target_layer, f"classification_head/{source_layer.name}")

    old_names, new_names = list(source.class_names), list(target.class_names)
    old_k, new_k = len(old_names), len(new_names)
    matches = match_class_names(old_names, new_names)
    # The last conv's (..., A * K) kernel: a Conv2D's, or a separable conv's pointwise one (its depthwise
    # kernel does not depend on the classes).
    source_final, target_final = source_head.final, target_head.final
    if isinstance(target_final, keras.layers.SeparableConv2D):
        target_final.depthwise_kernel.assign(source_final.depthwise_kernel.value)
        copied += 1
    kernel_name = "pointwise_kernel" if isinstance(target_final, keras.layers.SeparableConv2D) else "kernel"
    source_kernel = np.asarray(getattr(source_final, kernel_name).value)
    source_kernel = source_kernel.reshape(*source_kernel.shape[:-1], target_anchors, old_k)
    target_variable = getattr(target_final, kernel_name)
    kernel = np.asarray(target_variable.value).reshape(*source_kernel.shape[:-2], target_anchors, new_k)
    source_bias = np.asarray(source_final.bias.value).reshape(target_anchors, old_k)
    prior = target.prior_probability
    bias = np.full((target_anchors, new_k), -math.log((1.0 - prior) / prior), "float32")
    for new_index, old_index in matches.items():
        kernel[..., new_index] = source_kernel[..., old_index]
        bias[:, new_index] = source_bias[:, old_index]
    target_variable.assign(kernel.reshape(target_variable.shape))
    target_final.bias.assign(bias.reshape(-1))

    warnings = []
    for part in ("anchor_generator", "box_coder"):
        source_config = dict(keras.saving.serialize_keras_object(getattr(source, part))["config"])
        target_config = dict(keras.saving.serialize_keras_object(getattr(target, part))["config"])
        for config in (source_config, target_config):
            for key in ("name", "trainable", "dtype"):
                config.pop(key, None)
        if source_config != target_config:
            warnings.append(
                f"the {part} differs from the source model's ({source_config} -> {target_config}): the box head "
                "starts from weights trained for other anchors or box coding"
            )
    return {
        "kept": {new_names[j]: old_names[i] for j, i in sorted(matches.items())},
        "new": [name for j, name in enumerate(new_names) if j not in matches],
        "not_used": [name for i, name in enumerate(old_names) if i not in set(matches.values())],
        "weights_copied": copied,
        "warnings": warnings,
    }


def finetune_model(
    source: RetinaNet | str | os.PathLike, class_names: Sequence[str], **overrides
) -> tuple[RetinaNet, dict]:
    """``(model, report)``: a RetinaNet with ``source``'s (a model or its ``.keras`` path) architecture and
    weights for ``class_names``, and ``transfer_weights``' report. ``overrides``: ``RetinaNet`` arguments
    that leave the copied weights as they are (``image_size``, ``decoder``, ...; not the architecture keys)."""
    if not isinstance(source, RetinaNet):
        from keras_retinanet.detectors.loading import load_retinanet

        source = load_retinanet(source)
    fixed = sorted(set(overrides) & set(_ARCHITECTURE_KEYS))
    if fixed:
        raise ValueError(
            f"fine-tuning keeps the source model's architecture; cannot change {', '.join(fixed)}"
        )
    if not class_names:
        raise ValueError("fine-tuning needs the new class names")
    config = source.get_config()
    config.update(num_classes=len(class_names), class_names=list(class_names), name=source.name, **overrides)
    target = RetinaNet.from_config(config)
    return target, transfer_weights(source, target)


def format_report(report: dict) -> str:
    """A few human-readable lines for the training log."""
    lines = [
        f"--init: {report['weights_copied']} weights copied (backbone, pyramid, box head, class-head tower)",
        f"  classes starting from the old model's: {len(report['kept'])}"
        + (
            f" ({', '.join(f'{new} <- {old}' if new != old else new for new, old in report['kept'].items())})"
            if report["kept"]
            else ""
        ),
        f"  classes starting from the prior: {len(report['new'])}"
        + (f" ({', '.join(report['new'])})" if report["new"] else ""),
    ]
    lines += [f"  warning: {warning}" for warning in report["warnings"]]
    return "\n".join(lines)
