"""torchvision checkpoints as Keras models: ``retinanet_resnet50_fpn`` (v1), ``_v2``, and ImageNet ResNets.

The converted RetinaNet computes torchvision's network function (backbone, pyramid, heads, anchors, box coding,
post-processing); only the resize differs: torchvision resizes the shorter side to 800 px, this project
letterboxes to the model's ``image_size``. The backbone's frozen BatchNorm epsilon is 0 for v1 (as torchvision
runs its COCO v1 weights) and 1e-5 for v2.

Class slots: torchvision's COCO models have 91 outputs in COCO category-id order; slot 0 ``"__background__"`` and
the ten ``"N/A"`` slots are dropped by default (80 named classes), kept with ``keep_unused_slots=True``.

Tensor layout: a PyTorch conv kernel (out, in, kh, kw) is a Keras kernel (kh, kw, in, out); head channels are
``anchor * outputs_per_anchor + output``, anchors reordered by :func:`anchor_permutation`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from keras_retinanet.backbones.torchvision.resnet import TORCH_BATCHNORM_EPSILON
from keras_retinanet.backbones.torchvision.state_dict import CheckpointError
from keras_retinanet.backbones.torchvision.weights import (
    TensorReader,
    assign_weight,
    load_conv,
    load_norm,
    load_resnet,
    read_state_dict,
    resnet_depth,
    torch_kernel,
)
from keras_retinanet.conventions import fallback_class_names
from keras_retinanet.model.presets import PRESETS, TORCHVISION_IMAGE_SIZE

# torchvision.models.detection's COCO category names, indexed by COCO category id (torchvision's label).
COCO_91_SLOT_NAMES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A",
    "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet",
    "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
UNUSED_SLOT_NAMES = ("__background__", "N/A")
COCO_CLASS_NAMES = tuple(name for name in COCO_91_SLOT_NAMES if name not in UNUSED_SLOT_NAMES)


def torchvision_variant(tensors: Mapping[str, np.ndarray]) -> str:
    """``"v1"`` or ``"v2"`` from a torchvision RetinaNet state dict (v2: P6 from C5 and GroupNorm heads)."""
    p6 = tensors.get("backbone.fpn.extra_blocks.p6.weight")
    if p6 is None and "layer1.0.conv1.weight" in tensors:
        raise CheckpointError(
            "a torchvision ResNet classifier, not a RetinaNet: use it as backbone weights (`retinanet train "
            "--backbone torchvision_resnet50 --weights FILE`), or write a torch-free copy with "
            "`retinanet convert torchvision FILE --output FILE.npz`"
        )
    if p6 is None or "head.classification_head.cls_logits.weight" not in tensors:
        raise CheckpointError(
            "not a torchvision RetinaNet state dict (no backbone.fpn.extra_blocks.p6.weight or "
            "head.classification_head.cls_logits.weight)"
        )
    group_norm = "head.classification_head.conv.0.1.weight" in tensors
    from_c5 = np.shape(p6)[1] != np.shape(tensors["backbone.fpn.layer_blocks.0.0.weight"])[0]
    if group_norm and from_c5:
        return "v2"
    if not group_norm and not from_c5:
        return "v1"
    raise CheckpointError(
        "a torchvision RetinaNet state dict that is neither v1 nor v2: "
        f"GroupNorm heads {group_norm}, P6 from C5 {from_c5}"
    )


def torchvision_cell_anchors(level: int) -> np.ndarray:
    """(9, 4) xyxy anchors of one cell of pyramid level 3..7 by torchvision's ``_default_anchorgen`` formula, in
    its (ratio-major) order, in float32 as torch computes them."""
    base = 32 * 2 ** (level - 3)
    sizes = np.asarray([base, int(base * 2 ** (1.0 / 3.0)), int(base * 2 ** (2.0 / 3.0))], "float32")
    h_ratios = np.sqrt(np.asarray((0.5, 1.0, 2.0), "float32"))
    w_ratios = np.float32(1.0) / h_ratios
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2.0))


def cell_permutation(anchor_generator, cell_anchors, source: str) -> np.ndarray:
    """``perm`` with our cell anchor ``a`` == ``cell_anchors(level)[perm[a]]`` on every level.

    Raises ``ValueError`` when the generator's anchors are not ``source``'s: a converted head would then predict
    relative to the wrong boxes.
    """
    permutation = None
    for level in anchor_generator.levels:
        ours, theirs = np.asarray(anchor_generator.cell_anchors(level), "float32"), cell_anchors(level)
        if ours.shape != theirs.shape:
            raise ValueError(
                f"level {level}: {ours.shape[0]} anchors per cell, {source} has {theirs.shape[0]}"
            )
        level_perm = []
        for anchor in ours:
            match = np.flatnonzero(np.all(np.abs(theirs - anchor) < 1e-3, axis=1))
            if len(match) != 1:
                raise ValueError(f"level {level}: anchor {anchor.tolist()} is not one of {source}'s")
            level_perm.append(int(match[0]))
        if permutation is not None and level_perm != permutation:
            raise ValueError("the anchor order differs between levels")
        permutation = level_perm
    return np.asarray(permutation)


def anchor_permutation(anchor_generator) -> np.ndarray:
    """:func:`cell_permutation` against torchvision's anchors (levels 3..7, offset 0)."""
    if (anchor_generator.min_level, anchor_generator.max_level) != (3, 7) or anchor_generator.offset != 0.0:
        raise ValueError("torchvision's anchors are on levels 3..7 with offset 0 (cell corners)")
    return cell_permutation(anchor_generator, torchvision_cell_anchors, "torchvision")


def slot_selection(
    num_slots: int, class_names: Sequence[str] | None = None, keep_unused_slots: bool = False
) -> tuple[list[int], list[str]]:
    """(slot indices kept, their class names) of a checkpoint's ``num_slots`` class outputs per anchor.

    ``class_names``: one per slot (default COCO's 91 for 91 slots, else ``"0"``, ``"1"``, ...); slots named
    ``"__background__"`` or ``"N/A"`` are dropped, or kept with ``keep_unused_slots`` (renamed ``"N/A_<slot>"``).
    """
    if class_names is None:
        class_names = (
            COCO_91_SLOT_NAMES if num_slots == len(COCO_91_SLOT_NAMES) else fallback_class_names(num_slots)
        )
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_slots:
        raise ValueError(f"got {len(class_names)} class names for a checkpoint with {num_slots} class slots")
    if keep_unused_slots:
        names = [
            name if name not in UNUSED_SLOT_NAMES or name == "__background__" and i == 0 else f"N/A_{i}"
            for i, name in enumerate(class_names)
        ]
        return list(range(num_slots)), names
    kept = [i for i, name in enumerate(class_names) if name not in UNUSED_SLOT_NAMES]
    names = [class_names[i] for i in kept]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate class names: {', '.join(duplicates)}")
    return kept, names


def build_torchvision_retinanet(
    variant: str = "v1",
    class_names: Sequence[str] = COCO_CLASS_NAMES,
    depth: int = 50,
    image_size: int | Sequence[int] | None = TORCHVISION_IMAGE_SIZE,
    **kwargs,
):
    """An (unloaded) RetinaNet of ``PRESETS["torchvision"]`` (v1) or ``["torchvision_v2"]`` with a ResNet of
    ``depth``; ``kwargs`` go to ``RetinaNet``."""
    if variant not in ("v1", "v2"):
        raise ValueError(f"variant must be 'v1' or 'v2', got {variant!r}")
    config = PRESETS["torchvision" if variant == "v1" else "torchvision_v2"]
    # Every weight comes from the checkpoint: no ImageNet start to load first.
    config = config.update({"backbone": f"torchvision_resnet{depth}", "weights": None})
    if image_size is None:
        kwargs["image_size"] = None  # a model that records no size
    else:
        config = config.update({"image_size": image_size})
    kwargs.setdefault("name", f"retinanet_resnet{depth}_fpn" + ("_v2" if variant == "v2" else ""))
    return config.build(class_names, **kwargs)


def _load_head(
    head, tensors: TensorReader, prefix: str, final_name: str, slots: list[int] | None, perm: np.ndarray
):
    """Loads a ClassificationHead / BoxHead from ``prefix`` (``slots``: the class outputs kept)."""
    convs = [layer for layer in head.convs if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in head.convs if isinstance(layer, keras.layers.GroupNormalization)]
    for i, conv in enumerate(convs):
        load_conv(conv, tensors, f"{prefix}.conv.{i}.0", allow_missing_bias=bool(norms))
    for i, norm in enumerate(norms):
        load_norm(norm, tensors, f"{prefix}.conv.{i}.1")
    leftover = [n for n in tensors.unused(f"{prefix}.conv.") if int(n.split(".")[3]) >= len(convs)]
    if leftover:
        raise CheckpointError(
            f"{tensors.source}: the checkpoint's {prefix} is deeper than {len(convs)} convs"
        )

    weight = tensors.take(f"{prefix}.{final_name}.weight", ndim=4)
    bias = tensors.take(f"{prefix}.{final_name}.bias", ndim=1)
    num_anchors = len(perm)
    per_anchor = weight.shape[0] // num_anchors
    if weight.shape[0] != num_anchors * per_anchor:
        raise CheckpointError(
            f"{tensors.source}: {prefix}.{final_name} has {weight.shape[0]} outputs, not a multiple of {num_anchors}"
        )
    # (A * K, C, 3, 3) -> (A, K, C, 3, 3): reorder the anchors to ours and keep the selected outputs.
    weight = weight.reshape(num_anchors, per_anchor, *weight.shape[1:])[perm]
    bias = bias.reshape(num_anchors, per_anchor)[perm]
    if slots is not None:
        weight, bias = weight[:, slots], bias[:, slots]
    weight = weight.reshape(-1, *weight.shape[2:])
    what = f"{tensors.source}: {prefix}.{final_name}"
    assign_weight(head.final.kernel, torch_kernel(weight), what + ".weight")
    assign_weight(head.final.bias, bias.reshape(-1), what + ".bias")


def convert_torchvision_retinanet(
    source: str | os.PathLike | Mapping[str, np.ndarray],
    variant: str | None = None,
    class_names: Sequence[str] | None = None,
    keep_unused_slots: bool = False,
    image_size: int | Sequence[int] | None = TORCHVISION_IMAGE_SIZE,
    batchnorm_epsilon: float | None = None,
    **kwargs,
):
    """A Keras RetinaNet with the weights of a torchvision ``retinanet_resnet50_fpn`` (v1) or ``_v2`` checkpoint.

    Args:
        source: the checkpoint (``.pth``/``.pt`` with torch, ``.safetensors``, ``.npz``) or ``{name: array}``
            (``model.state_dict()`` names; a ``module.`` prefix or a ``{"model": ...}`` wrapper is removed).
        variant: ``"v1"`` / ``"v2"`` to insist on one; ``None`` detects it (v2: GroupNorm heads, P6 from C5).
        class_names, keep_unused_slots: as in :func:`slot_selection`.
        image_size: the letterbox size recorded in the model (``None`` records none).
        batchnorm_epsilon: of the backbone's frozen BatchNorm. Default: 0 for v1 (torchvision runs its COCO v1
            weights with ``overwrite_eps(model, 0.0)``), 1e-5 for v2. A v1 model trained in torchvision from
            ImageNet weights runs with 1e-5: pass it.
        **kwargs: more ``RetinaNet`` arguments.
    Returns:
        (model, report): the ``RetinaNet`` (class ``i`` is slot ``report["slots"][i]``) and ``{"source",
        "variant", "depth", "num_slots", "slots", "dropped_slots", "tensors"}``.
    Raises:
        CheckpointError: not such a checkpoint, a tensor missing or misshapen, or one left without a place.
    """
    raw, name = read_state_dict(source)
    try:
        detected = torchvision_variant(raw)
    except CheckpointError as error:
        raise CheckpointError(f"{name}: {error}") from None
    if variant is not None and variant != detected:
        raise CheckpointError(
            f"{name}: --variant {variant} given, but the checkpoint is a torchvision RetinaNet {detected}"
        )
    depth = resnet_depth(raw, "backbone.body.")
    logits = np.shape(raw["head.classification_head.cls_logits.weight"])[0]
    num_anchors = np.shape(raw["head.regression_head.bbox_reg.weight"])[0] // 4
    num_slots = logits // num_anchors
    slots, names = slot_selection(num_slots, class_names, keep_unused_slots)

    if batchnorm_epsilon is None:
        batchnorm_epsilon = 0.0 if detected == "v1" else TORCH_BATCHNORM_EPSILON
    backbone_kwargs = {"batchnorm_epsilon": float(batchnorm_epsilon), **kwargs.pop("backbone_kwargs", {})}
    model = build_torchvision_retinanet(
        detected, names, depth=depth, image_size=image_size, backbone_kwargs=backbone_kwargs, **kwargs
    )
    perm = anchor_permutation(model.anchor_generator)
    if len(perm) != num_anchors:
        raise CheckpointError(
            f"{name}: {num_anchors} anchors per cell, torchvision's RetinaNet has {len(perm)}"
        )

    tensors = TensorReader(raw, name)
    load_resnet(model.backbone, tensors, "backbone.body.")
    pyramid = model.get_layer("feature_pyramid")
    for i, level in enumerate((3, 4, 5)):
        load_conv(pyramid.lateral[i], tensors, f"backbone.fpn.inner_blocks.{i}.0")
        load_conv(pyramid.output_convs[i], tensors, f"backbone.fpn.layer_blocks.{i}.0")
        assert pyramid.lateral[i].name == f"lateral_c{level}"
    load_conv(pyramid.p6_conv, tensors, "backbone.fpn.extra_blocks.p6")
    load_conv(pyramid.p7_conv, tensors, "backbone.fpn.extra_blocks.p7")
    _load_head(
        model.get_layer("classification_head"), tensors, "head.classification_head", "cls_logits", slots, perm
    )
    _load_head(model.get_layer("box_head"), tensors, "head.regression_head", "bbox_reg", None, perm)

    leftover = tensors.unused()
    if leftover:
        raise CheckpointError(
            f"{name}: {len(leftover)} tensors have no place in the converted model: {', '.join(leftover[:10])}"
        )
    return model, {
        "source": name,
        "variant": detected,
        "depth": depth,
        "num_slots": num_slots,
        "slots": slots,
        "class_names": names,
        "dropped_slots": [i for i in range(num_slots) if i not in slots],
        "tensors": len(tensors.used),
        "batchnorm_epsilon": float(batchnorm_epsilon),
    }
