"""Named model conventions, each a :class:`~keras_retinanet.model.config.ModelConfig` (the vocabulary of a
run's ``model:`` options): the paper's RetinaNet, torchvision's v1 and v2, and TF Model Garden's mobile RetinaNet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keras_retinanet.conventions import fallback_class_names
from keras_retinanet.model.config import ModelConfig
from keras_retinanet.model.options import field_names

if TYPE_CHECKING:
    from keras_retinanet.model.retinanet import RetinaNet

# A multiple of 128, so that torchvision's strides (image size // feature size) of P6 and P7 are 64 and 128
# exactly, and close to torchvision's scale for 4:3 images (800 x 1067).
TORCHVISION_IMAGE_SIZE = 1024

# Lin et al. 2017 / Detectron: ModelConfig's defaults (the classes' own) with IoU matching and no GroupNorm.
PAPER = ModelConfig(matching="iou", use_group_norm=False)

# torchvision retinanet_resnet50_fpn (v1).
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

# torchvision retinanet_resnet50_fpn_v2.
TORCHVISION_V2 = TORCHVISION.update(
    {"p6_source": "c5", "use_group_norm": True, "group_norm_epsilon": 1e-5, "box_loss": "giou"}
)

# TF Model Garden's mobile RetinaNet, as MediaPipe Model Maker builds its MOBILENET_V2 object detector, with the
# COCO checkpoints' ImageNet mean/std pixels (Model Maker's fine-tuned models use "tf"). Matching and the losses
# stay this project's defaults: they only shape training.
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
        num_classes: K; the classes are named ``class_names`` if given, else ``"0"``, ``"1"``, ...
        **kwargs: ``ModelConfig`` fields replace the preset's values; any other ``RetinaNet`` argument
            (``class_names``, ``decoder``, ``name`` ...) replaces what the configuration builds.
    """
    options = {key: value for key, value in kwargs.items() if key in field_names(ModelConfig)}
    arguments = {key: value for key, value in kwargs.items() if key not in options}
    class_names = arguments.pop("class_names", None)
    if class_names is None:
        class_names = fallback_class_names(num_classes)
    if len(class_names) != num_classes:
        raise ValueError(f"num_classes is {num_classes} but {len(class_names)} class names were given")
    return preset_config(preset).update(options).build(class_names, **arguments)
