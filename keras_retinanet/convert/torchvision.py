"""torchvision checkpoints as Keras models: ``retinanet_resnet50_fpn`` (v1), ``_v2``, and ImageNet ResNets.

The converted RetinaNet computes torchvision's function: the same backbone (``torchvision_resnet50``), pyramid
(P6 from P5 in v1, from C5 in v2; P6/P7 convs padded as PyTorch pads), heads (GroupNorm(32) with epsilon
1e-5 in v2), anchors, box coding and post-processing (score 0.05, 1,000 candidates per level, per-class NMS at
0.5, 300 detections). The backbone's frozen BatchNorm has epsilon 0 for v1, as torchvision runs its COCO v1
weights, and 1e-5 for v2 (``batchnorm_epsilon``). What differs is outside the network: torchvision resizes
each image so that its shorter side is 800 px (longer side at most 1,333) and pads to a multiple of 32 with the
mean colour, while this project letterboxes to the model's fixed ``image_size``.

Class slots: torchvision's COCO models have 91 outputs in COCO's category-id order, slot 0
``"__background__"`` and ten ``"N/A"`` slots (ids COCO never used) that never see a positive example. By
default these 11 slots are dropped: the converted model has the 80 COCO classes, named, in that order (class
``i`` of the model is the ``i``-th used COCO category id), so evaluation, export and prediction treat it as
any 80-class model. ``keep_unused_slots=True`` keeps all 91 outputs (unused ones named ``"__background__"``
and ``"N/A_<slot>"``) for a slot-by-slot comparison with torchvision.

Tensor layout: a PyTorch conv kernel (out, in, kh, kw) is a Keras kernel (kh, kw, in, out). Both heads emit
channel ``anchor * outputs_per_anchor + output`` at each cell and both order a cell's 9 anchors ratio-major
(for each ratio 0.5, 1, 2 its three sizes); :func:`anchor_permutation` checks the second against
torchvision's anchor formula and the conversion reorders channels by it, so a different anchor order would
still convert correctly (today the permutation is the identity).
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

# torchvision RetinaNet's anchors (_default_anchorgen), by its own formula: the reference that
# anchor_permutation checks our anchors against. The model's conventions are presets.PRESETS["torchvision"].
TORCHVISION_ANCHOR_SIZES = (32, 64, 128, 256, 512)
TORCHVISION_ASPECT_RATIOS = (0.5, 1.0, 2.0)


# ---------------------------------------------------------------------------------------------------------------
# RetinaNet


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
    """(9, 4) xyxy anchors of one cell of pyramid level 3..7 by torchvision's formula, in its order.

    ``AnchorGenerator.generate_anchors``: sizes (s, int(s * 2^(1/3)), int(s * 2^(2/3))) for s = 32 * 2^(level - 3);
    per ratio r (h / w) and size: w = size / sqrt(r), h = size * sqrt(r), corners (-w/2, -h/2, w/2, h/2) rounded;
    ratio-major. Computed in float32 as torch does.
    """
    base = TORCHVISION_ANCHOR_SIZES[level - 3]
    sizes = np.asarray([base, int(base * 2 ** (1.0 / 3.0)), int(base * 2 ** (2.0 / 3.0))], "float32")
    h_ratios = np.sqrt(np.asarray(TORCHVISION_ASPECT_RATIOS, "float32"))
    w_ratios = np.float32(1.0) / h_ratios
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2.0))


def anchor_permutation(anchor_generator) -> np.ndarray:
    """``perm`` with our cell anchor ``a`` == torchvision's cell anchor ``perm[a]`` on every level.

    Raises ``ValueError`` when the generator's anchors are not torchvision's (other sizes, offsets, rounding):
    a converted head would then predict relative to the wrong boxes.
    """
    if (anchor_generator.min_level, anchor_generator.max_level) != (3, 7) or anchor_generator.offset != 0.0:
        raise ValueError("torchvision's anchors are on levels 3..7 with offset 0 (cell corners)")
    permutation = None
    for level in anchor_generator.levels:
        ours = np.asarray(anchor_generator.cell_anchors(level), "float32")
        theirs = torchvision_cell_anchors(level)
        if ours.shape != theirs.shape:
            raise ValueError(
                f"level {level}: {ours.shape[0]} anchors per cell, torchvision has {theirs.shape[0]}"
            )
        level_perm = []
        for anchor in ours:
            match = np.flatnonzero(np.all(np.abs(theirs - anchor) < 1e-3, axis=1))
            if len(match) != 1:
                raise ValueError(
                    f"level {level}: anchor {anchor.tolist()} is not one of torchvision's {theirs.tolist()}"
                )
            level_perm.append(int(match[0]))
        if permutation is not None and level_perm != permutation:
            raise ValueError("the anchor order differs between levels")
        permutation = level_perm
    return np.asarray(permutation)


def slot_selection(
    num_slots: int, class_names: Sequence[str] | None = None, keep_unused_slots: bool = False
) -> tuple[list[int], list[str]]:
    """Which of a checkpoint's class slots become the model's classes, and their names.

    Args:
        num_slots: the checkpoint's number of class outputs per anchor (91 for torchvision's COCO models).
        class_names: one name per slot; default COCO's 91 for 91 slots, else ``"0"``, ``"1"``, ...
            Slots named ``"__background__"`` or ``"N/A"`` are unused.
        keep_unused_slots: keep every slot (unused ones renamed ``"N/A_<slot>"`` so names stay unique).
    Returns:
        (slot indices kept, in order; their class names).
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
    """An (unloaded) RetinaNet with torchvision's architecture and conventions for ``variant`` "v1" or "v2":
    ``presets.PRESETS["torchvision"]`` or ``["torchvision_v2"]`` with a ResNet of ``depth``.

    ``kwargs`` go to ``RetinaNet`` (e.g. ``backbone_kwargs={"trainable_layers": 3}``, a ``decoder``).
    """
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
    """Loads a ClassificationHead / BoxHead from ``head.classification_head`` / ``head.regression_head``."""
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
        class_names: one per class slot of the checkpoint (default: COCO's 91 for a 91-slot checkpoint); slots
            named ``"__background__"`` or ``"N/A"`` are dropped unless ``keep_unused_slots``.
        image_size: the letterbox size recorded in the model (default 1024, ``presets.TORCHVISION_IMAGE_SIZE``;
            ``None`` records none).
        batchnorm_epsilon: of the backbone's frozen BatchNorm. Default: 0 for v1, because torchvision runs its
            COCO v1 weights (``retinanet_resnet50_fpn_coco-eeacb38b.pth``) with ``overwrite_eps(model, 0.0)``
            (those weights predate its epsilon fix, pytorch/vision#2933); 1e-5 for v2. A v1 model built and
            trained in torchvision from ImageNet weights runs with 1e-5: pass it.
        **kwargs: more ``RetinaNet`` arguments (e.g. ``decoder``, ``backbone_kwargs``).
    Returns:
        (model, report): the ``RetinaNet`` (class ``i`` is slot ``report["slots"][i]``) and ``{"source",
        "variant", "depth", "num_slots", "slots", "dropped_slots", "tensors"}``.
    Raises:
        CheckpointError: the file is not such a checkpoint, a tensor is missing or misshapen, or some tensor
            found no place in the model.
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
