"""Named model conventions, each a :class:`~keras_retinanet.model.config.ModelConfig`: the paper's RetinaNet,
torchvision's v1 and v2, and TF Model Garden's mobile RetinaNet (MediaPipe Model Maker's detectors).

A preset is the same vocabulary as a training run's ``model:`` options (``configs/*.yaml``), so
``PRESETS["torchvision_v2"].update({"fpn_channels": 128}).build(class_names)`` and ``retinanet train`` speak of
the same fields. No TensorFlow here: the CLI reads the presets' values (``TORCHVISION_IMAGE_SIZE``) cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keras_retinanet.conventions import fallback_class_names
from keras_retinanet.model.config import ModelConfig
from keras_retinanet.model.options import field_names

if TYPE_CHECKING:
    from keras_retinanet.model.retinanet import RetinaNet

# torchvision's letterbox size, not this project's default (conventions.DEFAULT_IMAGE_SIZE): a multiple of 128,
# so that P6 and P7 have strides 64 and 128 exactly (torchvision derives a level's stride as image size //
# feature size, which is not 64 / 128 on other sizes), and close to torchvision's scale for 4:3 images (shorter
# side 800 -> 1067 x 800; letterboxed to 1024: 1024 x 768).
TORCHVISION_IMAGE_SIZE = 1024

# Lin et al. 2017 / Detectron: P6 from C5, anchors centred on their cells, IoU matching without low-quality
# matches, no GroupNorm in the heads; every other option is ModelConfig's default (the classes' own).
PAPER = ModelConfig(matching="iou", use_group_norm=False)

# torchvision retinanet_resnet50_fpn (v1): P6 from P5 by a conv padded as PyTorch pads, anchors on the cell corner
# with rounded sizes, low-quality matches, box weights (1, 1, 1, 1), L1 box loss, 300 detections per image.
TORCHVISION = PAPER.update(
    {
        "backbone": "torchvision_resnet50",
        "p6_source": "p5",
        "fpn_padding": "symmetric",
        "image_size": TORCHVISION_IMAGE_SIZE,
        "anchor_offset": 0.0,
        "anchor_round_sizes": True,
        "allow_low_quality_matches": True,
        "max_detections": 300,
        "box_loss": "l1",
    }
)

# torchvision retinanet_resnet50_fpn_v2: v1's conventions with P6 from C5, GroupNorm(32) with epsilon 1e-5 in
# the heads and the GIoU box loss.
TORCHVISION_V2 = TORCHVISION.update(
    {"p6_source": "c5", "use_group_norm": True, "group_norm_epsilon": 1e-5, "box_loss": "giou"}
)

# TF Model Garden's mobile RetinaNet, as MediaPipe Model Maker builds its MOBILENET_V2 object detector (and its
# COCO-trained start, mobilenetv2_ssd_i256_ckpt): MobileNetV2 features from block_5_add, block_12_add and
# block_16_project_BN, a 128-channel FPN and 4 x 128 heads of separable convs with BatchNorm (per level in the
# heads) and ReLU6, P6 from P5, anchors 24-384 px (3 x the stride), 256 px input, ImageNet mean/std pixels (the
# COCO checkpoints'; Model Maker's own fine-tuned models use [-1, 1], input_normalization "tf"). Matching and the
# losses stay this project's defaults: they only shape training.
MODEL_GARDEN_MOBILENET_V2 = ModelConfig(
    backbone="mobilenet_v2",
    backbone_feature_layers=("block_5_add", "block_12_add", "block_16_project_BN"),
    input_normalization="torch",
    batchnorm_momentum=0.99,
    fpn_channels=128,
    p6_source="p5",
    fpn_batchnorm=True,
    head_depth=4,
    use_group_norm=False,
    head_batchnorm=True,
    separable_convs=True,
    activation="relu6",
    image_size=256,
    anchor_sizes=(24.0, 48.0, 96.0, 192.0, 384.0),
)

PRESETS: dict[str, ModelConfig] = {
    "paper": PAPER,
    "torchvision": TORCHVISION,
    "torchvision_v2": TORCHVISION_V2,
    "model_garden_mobilenet_v2": MODEL_GARDEN_MOBILENET_V2,
}


def preset_config(preset: str) -> ModelConfig:
    """The :class:`ModelConfig` named ``preset``; ``ValueError`` listing the names for an unknown one."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    return PRESETS[preset]


def retinanet_from_preset(preset: str, num_classes: int, **kwargs) -> RetinaNet:
    """Builds a RetinaNet with one of :data:`PRESETS`' conventions.

    Args:
        preset: a name of :data:`PRESETS`.
        num_classes: K; the classes are named ``class_names`` if given, else ``"0"``, ``"1"``, ...
        **kwargs: ``ModelConfig`` fields (``backbone``, ``fpn_channels``, ``p6_source`` ...) replace the
            preset's values; any other ``RetinaNet`` argument (``class_names``, ``decoder``, ``name`` ...) is
            passed on and replaces what the configuration builds.
    """
    options = {key: value for key, value in kwargs.items() if key in field_names(ModelConfig)}
    arguments = {key: value for key, value in kwargs.items() if key not in options}
    class_names = arguments.pop("class_names", None)
    if class_names is None:
        class_names = fallback_class_names(num_classes)
    if len(class_names) != num_classes:
        raise ValueError(f"num_classes is {num_classes} but {len(class_names)} class names were given")
    return preset_config(preset).update(options).build(class_names, **arguments)
