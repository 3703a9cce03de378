"""Named configurations: the paper's RetinaNet and torchvision's conventions."""

from __future__ import annotations

from keras_retinanet.anchors import AnchorGenerator
from keras_retinanet.box_coder import BoxCoder
from keras_retinanet.matching import Matcher
from keras_retinanet.model import RetinaNet

PRESETS = {
    # Lin et al. 2017 / Detectron: P6 from C5, anchors centred on their cells, no low-quality matches.
    "paper": dict(
        p6_source="c5",
        anchor_offset=0.5,
        round_sizes=False,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        allow_low_quality_matches=False,
    ),
    # torchvision retinanet_resnet50_fpn (v1): P6 from P5 by a conv padded as PyTorch pads, anchors on the cell
    # corner with rounded sizes, low-quality matches, box weights (1, 1, 1, 1).
    "torchvision": dict(
        p6_source="p5",
        fpn_padding="symmetric",
        anchor_offset=0.0,
        round_sizes=True,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        allow_low_quality_matches=True,
    ),
    # torchvision retinanet_resnet50_fpn_v2: v1's conventions with P6 from C5 and GroupNorm(32) in the heads.
    "torchvision_v2": dict(
        p6_source="c5",
        fpn_padding="symmetric",
        use_group_norm=True,
        group_norm_epsilon=1e-5,
        anchor_offset=0.0,
        round_sizes=True,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        allow_low_quality_matches=True,
    ),
}
_PARTS = ("anchor_offset", "round_sizes", "box_weights", "allow_low_quality_matches")


def retinanet_from_preset(preset: str, num_classes: int, **kwargs) -> RetinaNet:
    """Builds a RetinaNet with one of ``PRESETS``' conventions; other ``RetinaNet`` arguments pass through and
    take precedence over the preset's (e.g. ``p6_source``, ``anchor_generator``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    conventions = PRESETS[preset]
    model_arguments = {k: v for k, v in conventions.items() if k not in _PARTS}
    parts = dict(
        anchor_generator=AnchorGenerator(
            offset=conventions["anchor_offset"],
            round_sizes=conventions["round_sizes"],
            name="anchor_generator",
        ),
        box_coder=BoxCoder(weights=conventions["box_weights"]),
        matcher=Matcher(allow_low_quality_matches=conventions["allow_low_quality_matches"]),
    )
    return RetinaNet(num_classes, **{**model_arguments, **parts, **kwargs})
