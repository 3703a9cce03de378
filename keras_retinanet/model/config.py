"""What model to build: :class:`ModelConfig`, every choosable argument of a RetinaNet and its parts.

Each field's metadata names the class and argument it sets (``target``); ``tests/test_config.py`` fails if a
default drifts from that argument's, or a class gains an argument no field sets. Training, the presets and the
benchmark all speak it. Standard library and PyYAML only: importing it does not import TensorFlow or Keras.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from keras_retinanet.conventions import DEFAULT_IMAGE_SIZE
from keras_retinanet.model.options import Options, check_keys, field_names, option

if typing.TYPE_CHECKING:
    from keras_retinanet.model.anchors import AnchorGenerator
    from keras_retinanet.model.matching import Matcher
    from keras_retinanet.model.retinanet import RetinaNet
    from keras_retinanet.model.targets import LabelEncoder

# The classes a ModelConfig field can set (metadata "target"), by name, so this module imports none of them.
TARGET_CLASSES = {
    "RetinaNet": "keras_retinanet.model.retinanet",
    "AnchorGenerator": "keras_retinanet.model.anchors",
    "BoxCoder": "keras_retinanet.model.box_coder",
    "Matcher": "keras_retinanet.model.matching",
    "DetectionDecoder": "keras_retinanet.model.decode",
    "FocalLoss": "keras_retinanet.model.losses",
    "BoxRegressionLoss": "keras_retinanet.model.losses",
}


@dataclasses.dataclass
class ModelConfig(Options):
    """A RetinaNet's architecture, parts, losses and input size: ``config.build(class_names)`` makes it.

    Defaults are the classes' own (the paper's), except ``image_size`` (``DEFAULT_IMAGE_SIZE``, where
    ``RetinaNet``'s ``None`` records no size) and ``matching="atss"`` with ``use_group_norm=True`` (measured
    better on short runs, docs/recipes.md; ``presets.PRESETS["paper"]`` restores the paper's).
    """

    # backbone
    backbone: str = option(
        "resnet50",
        "a name of keras_retinanet.backbones.registry.available_backbones()",
        target=("RetinaNet", "backbone"),
    )
    weights: str | None = option(
        "imagenet",
        "backbone weights: imagenet (Keras' cache, downloaded on first use; torchvision ResNets: torch's cache), "
        "none (from scratch) or a local file",
        target=("RetinaNet", "backbone_weights"),
    )
    backbone_kwargs: dict = option(
        help="JSON/YAML mapping of extra backbone arguments, e.g. '{\"alpha\": 0.35}'",
        factory=dict,
        target=("RetinaNet", "backbone_kwargs"),
    )
    batchnorm_momentum: float | None = option(
        0.9,
        "BatchNorm momentum of the backbone (none: Keras' own)",
        target=("RetinaNet", "backbone_batchnorm_momentum"),
    )
    backbone_feature_layers: tuple[str, ...] | None = option(
        None,
        "names of the backbone layers that give C3, C4, C5 (none: the last layer of each stride 8, 16, 32)",
        target=("RetinaNet", "backbone_feature_layers"),
    )
    input_normalization: Literal["caffe", "tf", "torch", "none"] | None = option(
        None,
        "pixel normalisation before the backbone: caffe, tf ([-1, 1]), torch (ImageNet mean/std) or none "
        "(none: what the backbone's ImageNet weights expect)",
        target=("RetinaNet", "input_normalization"),
    )
    # pyramid and heads
    fpn_channels: int = option(256, "width of the pyramid levels", target=("RetinaNet", "fpn_channels"))
    p6_source: Literal["c5", "p5"] = option(
        "c5", "P6 from C5 (paper) or from P5 (torchvision)", target=("RetinaNet", "p6_source")
    )
    fpn_padding: Literal["same", "symmetric"] = option(
        "same",
        "padding of the stride-2 P6/P7 convs: same (Keras) or symmetric (PyTorch, torchvision)",
        target=("RetinaNet", "fpn_padding"),
    )
    fpn_batchnorm: bool = option(
        False,
        "a BatchNorm on each pyramid level (TF Model Garden's mobile FPN)",
        target=("RetinaNet", "fpn_batchnorm"),
    )
    head_depth: int = option(4, "3x3 convs in each head", target=("RetinaNet", "head_depth"))
    head_channels: int | None = option(
        None, "width of the head convs (none: fpn_channels)", target=("RetinaNet", "head_channels")
    )
    use_group_norm: bool = option(
        True,
        "GroupNorm after each head conv (torchvision v2; paper: none); on by default: the heads learn within a "
        "short run (docs/small-objects.md)",
        target=("RetinaNet", "use_group_norm"),
    )
    group_norm_epsilon: float = option(
        1e-5, "epsilon of those GroupNorms (PyTorch's)", target=("RetinaNet", "group_norm_epsilon")
    )
    head_batchnorm: bool = option(
        False,
        "a BatchNorm per pyramid level after each head conv, instead of GroupNorm (TF Model Garden)",
        target=("RetinaNet", "head_batchnorm"),
    )
    separable_convs: bool = option(
        False,
        "depthwise-separable convs in the pyramid and the heads (the mobile models')",
        target=("RetinaNet", "separable_convs"),
    )
    activation: Literal["relu", "relu6"] = option(
        "relu", "activation of the heads and before the P7 conv", target=("RetinaNet", "activation")
    )
    prior_probability: float = option(
        0.01, "initial foreground probability of the classifier", target=("RetinaNet", "prior_probability")
    )
    image_size: int | tuple[int, int] = option(
        DEFAULT_IMAGE_SIZE,
        "network input, N or H W; recorded in the model",
        target=("RetinaNet", "image_size"),
    )
    # anchors (levels P3-P7: the pyramid has exactly these five)
    anchor_sizes: tuple[float, ...] = option(
        (32.0, 64.0, 128.0, 256.0, 512.0),
        "base anchor size per level P3-P7, pixels",
        target=("AnchorGenerator", "sizes"),
    )
    anchor_scales: tuple[float, ...] = option(
        (1.0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0)),
        "size multipliers per location",
        target=("AnchorGenerator", "scales"),
    )
    anchor_aspect_ratios: tuple[float, ...] = option(
        (0.5, 1.0, 2.0), "height / width ratios per location", target=("AnchorGenerator", "aspect_ratios")
    )
    anchor_offset: float = option(
        0.5,
        "anchor centre in strides: 0.5 cell centre, 0.0 corner (torchvision)",
        target=("AnchorGenerator", "offset"),
    )
    anchor_round_sizes: bool = option(
        False, "torchvision's integer anchor sizes and corners", target=("AnchorGenerator", "round_sizes")
    )
    # box coding
    box_weights: tuple[float, float, float, float] = option(
        (1.0, 1.0, 1.0, 1.0), "weights of the (dx, dy, dw, dh) deltas", target=("BoxCoder", "weights")
    )
    box_clamp: float = option(
        math.log(1000.0 / 16.0), "upper bound of the decoded dw, dh (log scale)", target=("BoxCoder", "clamp")
    )
    # matching
    positive_threshold: float = option(
        0.5, "IoU from which an anchor is positive", target=("Matcher", "positive_threshold")
    )
    negative_threshold: float = option(
        0.4, "IoU below which an anchor is negative", target=("Matcher", "negative_threshold")
    )
    allow_low_quality_matches: bool = option(
        False,
        "each box also keeps its best anchors (torchvision)",
        target=("Matcher", "allow_low_quality_matches"),
    )
    matching: Literal["iou", "atss"] = option(
        "atss",
        "iou: the fixed thresholds above (paper); atss: ATSS's per-box thresholds (mean + std of the IoUs of "
        "the nearest anchors), the default: it gives small boxes positives",
        target=("Matcher", "matching"),
    )
    atss_topk: int = option(
        9,
        "ATSS candidate locations per level and box (all their anchors are candidates)",
        target=("Matcher", "atss_topk"),
    )
    # decoding (what the trained model's predict / detect return)
    score_threshold: float = option(
        0.05, "detections below this score are dropped", target=("DetectionDecoder", "score_threshold")
    )
    topk_per_level: int = option(
        1000, "candidates per pyramid level before NMS", target=("DetectionDecoder", "topk_per_level")
    )
    nms_iou_threshold: float = option(
        0.5, "NMS IoU threshold", target=("DetectionDecoder", "nms_iou_threshold")
    )
    max_detections: int = option(100, "detections per image", target=("DetectionDecoder", "max_detections"))
    class_agnostic_nms: bool = option(
        False, "one NMS over all classes", target=("DetectionDecoder", "class_agnostic")
    )
    # losses
    focal_alpha: float | None = option(
        0.25, "focal loss alpha (none: no weighting)", target=("FocalLoss", "alpha")
    )
    focal_gamma: float = option(2.0, "focal loss gamma", target=("FocalLoss", "gamma"))
    box_loss: Literal["smooth_l1", "l1", "giou"] = option(
        "smooth_l1",
        "box regression loss: smooth_l1 (Detectron), l1 (torchvision v1) or giou (torchvision v2)",
        target=("BoxRegressionLoss", "box_loss"),
    )
    box_loss_beta: float = option(0.11, "smooth L1 beta", target=("BoxRegressionLoss", "beta"))

    def update(self, values: Mapping[str, Any]) -> ModelConfig:
        """A copy with ``values`` (field name -> value) applied and checked; unknown keys are an error."""
        check_keys(values, field_names(type(self)), "model option")
        return dataclasses.replace(self, **{key.replace("-", "_"): value for key, value in values.items()})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        return cls().update(values)

    def non_defaults(self) -> dict[str, Any]:
        """``{field name: value}`` of the options whose values differ from ``ModelConfig()``'s."""
        default = type(self)()
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(default, field.name)
        }

    def arguments(self, target: str) -> dict[str, Any]:
        """The keyword arguments this configuration gives the class named ``target`` (e.g. ``"Matcher"``)."""
        if target not in TARGET_CLASSES:
            raise ValueError(f"unknown target {target!r}; one of {', '.join(TARGET_CLASSES)}")
        arguments = {}
        for field in dataclasses.fields(self):
            class_name, argument = field.metadata["target"]
            if class_name == target:
                value = getattr(self, field.name)
                arguments[argument] = list(value) if isinstance(value, tuple) else value
        return arguments

    def build(self, class_names: Sequence[str], **overrides: Any) -> RetinaNet:
        """The ``RetinaNet`` this configuration describes, for ``class_names`` (K = ``len(class_names)``).

        ``overrides``: ``RetinaNet`` keyword arguments that replace the configuration's (a ``decoder``, a
        ``name``, ``image_size=None``). Under a ``tf.distribute`` strategy, call it inside ``strategy.scope()``.
        """
        if not class_names:
            raise ValueError("ModelConfig.build needs the class names (at least one)")
        arguments = dict(
            num_classes=len(class_names),
            class_names=list(class_names),
            anchor_generator=self.build_anchor_generator(),
            box_coder=self._part("BoxCoder"),
            matcher=self.build_matcher(),
            decoder=self._part("DetectionDecoder"),
            **self.arguments("RetinaNet"),
        )
        return self._part("RetinaNet", **{**arguments, **overrides})

    def _part(self, target: str, **extra: Any) -> Any:
        """The class named ``target`` (a key of :data:`TARGET_CLASSES`) built with this configuration's
        arguments, and ``extra``."""
        import importlib

        cls = getattr(importlib.import_module(TARGET_CLASSES[target]), target)
        return cls(**{**self.arguments(target), **extra})

    def build_anchor_generator(self) -> AnchorGenerator:
        """The ``AnchorGenerator`` these options describe (the one ``build`` gives the model)."""
        return self._part("AnchorGenerator", name="anchor_generator")

    def build_matcher(self) -> Matcher:
        return self._part("Matcher")

    def build_label_encoder(self) -> LabelEncoder:
        """The ``LabelEncoder`` (anchors, box coding, matching) of the model ``build`` gives."""
        from keras_retinanet.model.targets import LabelEncoder

        return LabelEncoder(self.build_anchor_generator(), self._part("BoxCoder"), self.build_matcher())

    def losses(self) -> dict:
        """``{"classification": FocalLoss, "box_regression": BoxRegressionLoss}`` for ``model.compile``."""
        return {
            "classification": self._part("FocalLoss"),
            # The GIoU loss decodes deltas, with the model's own box coding.
            "box_regression": self._part("BoxRegressionLoss", box_coder=self._part("BoxCoder")),
        }
