"""Configuration of a training run: what to train (:class:`ModelConfig`) and how (:class:`TrainConfig`).

This module needs only the standard library and PyYAML: importing it does not import TensorFlow or Keras, so
``retinanet train --help`` builds its flags and a YAML file is checked before anything slow starts.

:class:`ModelConfig` holds every argument of ``RetinaNet`` and of the parts it is made of that a run can
choose (backbone, pyramid, heads, anchors, box coding, matching, decoding), the losses it is trained with, and
the input size the model records. Each field's metadata names the class and argument it sets (``target``);
:meth:`ModelConfig.build` passes them on and ``tests/test_config.py`` fails if a default here drifts from the
default of that argument, or if one of those classes gains an argument that no field sets.

:class:`TrainConfig` holds the data, augmentation, optimisation, hardware and logging options and **contains**
a ``ModelConfig`` as ``config.model``. Both accept their options in two spellings:

- flat, as the CLI flags and the YAML files of earlier versions: ``{"fpn_channels": 64, "epochs": 3}``
  (``TrainConfig.update`` routes the model's keys into ``config.model``), also ``"model.fpn_channels"``;
- nested, as ``TrainConfig.to_dict`` writes ``config.yaml``: ``{"model": {"fpn_channels": 64}, "epochs": 3}``.

Values are checked against the fields' types (``typing.get_type_hints``) with an error that names the option:
lists become tuples, ``"none"`` is ``None`` for the optional fields, ``"1e-4"`` is a number, an unknown key or a
value of the wrong type is an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

import yaml

if typing.TYPE_CHECKING:
    from keras_retinanet.anchors import AnchorGenerator
    from keras_retinanet.matching import Matcher
    from keras_retinanet.model import RetinaNet

# The anchor options that ``--anchors auto`` or ``--anchors FILE`` set (keras_retinanet.training.anchors).
FITTED_ANCHOR_FIELDS = ("anchor_sizes", "anchor_scales", "anchor_aspect_ratios")

# The options a recipe sets (flat names, as the CLI flags), and the paper's values of them (Lin et al. 2017,
# Detectron's retinanet_R-50-FPN_1x). The default recipe's values are the fields' defaults (recipe_options).
PAPER_RECIPE = {
    "anchors": "paper",
    "image_shape": "square",
    "schedule": "step",
    "warmup_steps": 500,
    "matching": "iou",
    "use_group_norm": False,
}
RECIPES = ("default", "paper")

# The classes a ModelConfig field can set (metadata "target"), by name, so this module imports none of them.
TARGET_CLASSES = {
    "RetinaNet": "keras_retinanet.model",
    "AnchorGenerator": "keras_retinanet.anchors",
    "BoxCoder": "keras_retinanet.box_coder",
    "Matcher": "keras_retinanet.matching",
    "DetectionDecoder": "keras_retinanet.decode",
    "FocalLoss": "keras_retinanet.losses",
    "BoxRegressionLoss": "keras_retinanet.losses",
}

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null", "~")


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    target: tuple[str, str] | None = None,
    group: str | None = None,
) -> Any:
    """A dataclass field with its CLI help, the ``(class, argument)`` it sets and its help group."""
    metadata = {"help": help, "target": target, "group": group}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class _Options:
    """Type checking, ``update`` and ``to_dict`` shared by the two configs."""

    def __post_init__(self) -> None:
        hints = field_types(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            object.__setattr__(self, field.name, coerce(value, hints[field.name], field.name))

    def to_dict(self) -> dict:
        """Plain YAML/JSON values: tuples become lists, a nested config a nested dict."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass
class ModelConfig(_Options):
    """A RetinaNet's architecture, parts, losses and input size: ``config.build(class_names)`` makes it.

    Defaults are the paper's (Lin et al. 2017, Detectron), the same as the classes' own defaults (checked by
    tests/test_config.py), except:

    - ``image_size``: 512 here, where ``RetinaNet``'s ``None`` means "not recorded"; a trained model records
      the size it was trained at, and evaluation, prediction and export letterbox images to it;
    - ``matching="atss"`` and ``use_group_norm=True``: the default recipe, measured better than the paper's
      on short runs (docs/recipes.md); ``--recipe paper`` (:data:`RECIPES`) restores the paper's.
    """

    # backbone
    backbone: str = option(
        "resnet50",
        "a name of keras_retinanet.backbones.available_backbones()",
        target=("RetinaNet", "backbone"),
    )
    weights: str | None = option(
        None, "backbone weights: none, imagenet or a local file", target=("RetinaNet", "backbone_weights")
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
    head_depth: int = option(4, "3x3 convs in each head", target=("RetinaNet", "head_depth"))
    head_channels: int | None = option(
        None, "width of the head convs (none: fpn_channels)", target=("RetinaNet", "head_channels")
    )
    use_group_norm: bool = option(
        True,
        "GroupNorm after each head conv (torchvision v2; paper: none). Default on: on BCCD-quick it took AP "
        "0.389 -> 0.468 with ATSS, the heads learning within a short run",
        target=("RetinaNet", "use_group_norm"),
    )
    group_norm_epsilon: float = option(
        1e-5, "epsilon of those GroupNorms (PyTorch's)", target=("RetinaNet", "group_norm_epsilon")
    )
    prior_probability: float = option(
        0.01, "initial foreground probability of the classifier", target=("RetinaNet", "prior_probability")
    )
    image_size: int | tuple[int, int] = option(
        512, "network input, N or H W; recorded in the model", target=("RetinaNet", "image_size")
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
        "the nearest anchors). Default atss: it gives small boxes positives (BCCD platelets AP50 0.0003 -> 0.50)",
        target=("Matcher", "kind"),
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
        target=("BoxRegressionLoss", "kind"),
    )
    box_loss_beta: float = option(0.11, "smooth L1 beta", target=("BoxRegressionLoss", "beta"))

    def update(self, values: Mapping[str, Any]) -> ModelConfig:
        """A copy with ``values`` (field name -> value) applied and checked; unknown keys are an error."""
        _check_keys(type(self), values, "model option")
        return dataclasses.replace(self, **{key.replace("-", "_"): value for key, value in values.items()})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        return cls().update(values)

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

    def build(self, class_names: Sequence[str]) -> RetinaNet:
        """The ``RetinaNet`` this configuration describes, for ``class_names`` (K = ``len(class_names)``).

        Under a ``tf.distribute`` strategy, call it inside ``strategy.scope()``.
        """
        from keras_retinanet.box_coder import BoxCoder
        from keras_retinanet.decode import DetectionDecoder
        from keras_retinanet.model import RetinaNet

        if not class_names:
            raise ValueError("ModelConfig.build needs the class names (at least one)")
        return RetinaNet(
            num_classes=len(class_names),
            class_names=list(class_names),
            anchor_generator=self.build_anchor_generator(),
            box_coder=BoxCoder(**self.arguments("BoxCoder")),
            matcher=self.build_matcher(),
            decoder=DetectionDecoder(**self.arguments("DetectionDecoder")),
            **self.arguments("RetinaNet"),
        )

    def build_anchor_generator(self) -> AnchorGenerator:
        """The ``AnchorGenerator`` these options describe (the one ``build`` gives the model)."""
        from keras_retinanet.anchors import AnchorGenerator

        return AnchorGenerator(name="anchor_generator", **self.arguments("AnchorGenerator"))

    def build_matcher(self) -> Matcher:
        """The ``Matcher`` these options describe."""
        from keras_retinanet.matching import Matcher

        return Matcher(**self.arguments("Matcher"))

    def losses(self) -> dict:
        """``{"classification": FocalLoss, "box_regression": BoxRegressionLoss}`` for ``model.compile``."""
        from keras_retinanet.box_coder import BoxCoder
        from keras_retinanet.losses import BoxRegressionLoss, FocalLoss

        return {
            "classification": FocalLoss(**self.arguments("FocalLoss")),
            # The GIoU loss decodes deltas, with the model's own box coding.
            "box_regression": BoxRegressionLoss(
                box_coder=BoxCoder(**self.arguments("BoxCoder")), **self.arguments("BoxRegressionLoss")
            ),
        }


@dataclasses.dataclass
class TrainConfig(_Options):
    """Every option of a training run; ``config.model`` is the :class:`ModelConfig` of the model it trains.

    Defaults are the default recipe (:data:`RECIPES`): the paper's optimiser (SGD with momentum 0.9, learning
    rate 0.01, weight decay 1e-4 off normalisation parameters and biases, global-norm clipping at 10,
    horizontal flips), with what our measurements changed for runs of a few hundred to a few thousand steps:
    a warm-up of a tenth of the run (at most the paper's 500 steps) then cosine decay, anchors fitted to the
    data, the input shaped like the training images, and (in ``ModelConfig``) ATSS matching and GroupNorm
    heads. ``TrainConfig.from_recipe("paper")`` is the paper's schedule, anchors, matcher and square input.
    """

    # data
    data: str = option("", "training data spec, e.g. voc:DIR:trainval (see `retinanet --help`)", group="data")
    val_data: str | None = option(
        None, "validation data spec; enables val_AP, best.keras and early stopping", group="data"
    )
    output: str = option(
        "runs/train",
        "run folder: config.yaml, class_names.txt, model.keras, checkpoints/, backup/, log.csv",
        group="data",
    )
    skip_bad: bool = option(False, "skip bad records (always reported) instead of stopping", group="data")
    allow_outside_paths: bool = option(
        False,
        "read COCO images whose file_name leads outside the image folder (../x.jpg, /abs)",
        group="data",
    )
    batch_size: int = option(8, "images per step, over all replicas", group="data")
    flip_probability: float = option(0.5, "chance of a horizontal flip", group="data")
    scale_range: tuple[float, float] = option(
        (1.0, 1.0), "scale jitter with random crop, min max; 1 1: off", group="data"
    )
    photometric: bool = option(False, "brightness / contrast / saturation / hue jitter", group="data")
    cache: bool = option(True, "keep decoded images in memory after the first epoch", group="data")
    seed: int = option(0, "seed of the weights, the shuffling and the augmentation", group="data")
    # the model
    model: ModelConfig = option(help="the model trained", factory=ModelConfig)
    anchors: str = option(
        "auto",
        "auto: fit sizes, scales and ratios to the training set when under 95%% of a class's boxes reach the "
        "positive IoU with an anchor (default: the paper's anchors miss objects under 32 px); paper: the anchor "
        "options as given (the paper's unless set); FILE: the anchors of a `retinanet data check --json` file "
        "or a run's anchors.json",
        group="data",
    )
    image_shape: Literal["data", "square"] = option(
        "data",
        "data: a square --image-size N becomes N on the longer side and the training images' median aspect "
        "ratio on the other (e.g. 288x384 for 4:3 photos), the shape a phone app feeds; default, since heads "
        "trained on letterbox padding lost a third of their AP without it; square: letterbox into NxN (paper)",
        group="data",
    )
    init: str | None = option(
        None,
        "fine-tune from this trained RetinaNet .keras (e.g. a converted COCO model): its architecture, backbone, "
        "pyramid and box head; the class head is rebuilt for the data's classes, same names keep their weights",
        group="optimisation",
    )
    # optimisation
    epochs: int = option(12, "", group="optimisation")
    steps_per_epoch: int | None = option(
        None, "none: one pass over the training images", group="optimisation"
    )
    optimizer: Literal["sgd", "adamw"] = option("sgd", "", group="optimisation")
    learning_rate: float = option(0.01, "after the warm-up", group="optimisation")
    momentum: float = option(0.9, "SGD momentum", group="optimisation")
    weight_decay: float = option(1e-4, "decoupled; not on norms and biases (0: off)", group="optimisation")
    schedule: Literal["step", "cosine", "constant"] = option(
        "cosine",
        "after a linear warm-up: x0.1 at lr_milestones (the paper's 1x), cosine (default: torchvision's v2 "
        "recipe and the BCCD-quick protocol's; no plateau to tune for a short run), or constant",
        group="optimisation",
    )
    warmup_steps: int | None = option(
        None,
        "linear warm-up length; none: a tenth of the run, at most the paper's 500 (500 steps never ended in a "
        "few-hundred-step run)",
        group="optimisation",
    )
    warmup_factor: float = option(0.001, "starting fraction of the learning rate", group="optimisation")
    lr_milestones: tuple[float, ...] = option(
        (2.0 / 3.0, 8.0 / 9.0),
        "fractions of training where the step schedule multiplies by 0.1",
        group="optimisation",
    )
    clip_norm: float | None = option(10.0, "global gradient-norm clipping (none: off)", group="optimisation")
    freeze_batchnorm: bool = option(
        False, "BatchNorm in inference mode with fixed statistics (small batches)", group="optimisation"
    )
    freeze_backbone_epochs: int = option(
        0, "train only the pyramid and heads for this many epochs", group="optimisation"
    )
    precise_bn_batches: int = option(
        20,
        "recompute BatchNorm statistics over this many batches after training (0: off)",
        group="optimisation",
    )
    # hardware
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker", "tpu"] = option(
        "auto", "tf.distribute strategy", group="hardware"
    )
    tpu_address: str | None = option(
        None, "TPU to connect to (none: the local Cloud TPU VM's)", group="hardware"
    )
    mixed_precision: bool = option(
        False,
        "mixed_float16 on GPU, mixed_bfloat16 on TPU/CPU; losses and box decoding stay float32",
        group="hardware",
    )
    jit_compile: bool = option(False, "compile the training step with XLA (for GPUs)", group="hardware")
    # evaluation, checkpoints and logs
    eval_every: int = option(1, "evaluate on val_data every N epochs (and after the last)", group="logging")
    early_stopping_patience: int | None = option(
        None, "stop after N evaluations without a better val_AP (none: never)", group="logging"
    )
    tensorboard: bool = option(True, "losses, learning rate, AP and predicted boxes", group="logging")
    tensorboard_images: int = option(4, "validation images drawn with their predictions", group="logging")
    verbose: int = option(1, "Keras progress: 0 silent, 1 bar, 2 one line per epoch", group="logging")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_counts(self)

    def update(self, values: Mapping[str, Any]) -> TrainConfig:
        """A copy with ``values`` applied and checked.

        Keys are this config's fields, ``ModelConfig``'s fields (flat, as the CLI flags), ``"model.NAME"``, or
        ``"model"`` with a mapping of model options (nested, as ``config.yaml``). Dashes count as underscores.
        ``"recipe"`` (``"default"`` or ``"paper"``) sets the recipe's options first, then the other values
        apply. Unknown keys, and a model option given both flat and nested with different values, are errors.
        """
        own, model = {}, {}
        _check_keys(type(self), values, "training option")
        if "recipe" in values:
            values = dict(values)
            return self.update(recipe_options(values.pop("recipe"))).update(values)
        for key, value in values.items():
            key = key.replace("-", "_")
            if key == "model":
                if isinstance(value, ModelConfig):
                    value = value.to_dict()
                if not isinstance(value, Mapping):
                    raise ValueError(f"option model: expected a mapping of model options, got {value!r}")
                nested = {k.replace("-", "_"): v for k, v in value.items()}
                _check_keys(ModelConfig, nested, "model option")
                _merge(model, nested)
            elif key.startswith("model."):
                _merge(model, {key[len("model.") :]: value})
            elif key in _field_names(ModelConfig):
                _merge(model, {key: value})
            else:
                own[key] = value
        return dataclasses.replace(self, model=self.model.update(model), **own)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        return cls().update(values)

    @classmethod
    def from_recipe(cls, recipe: str = "default", **values: Any) -> TrainConfig:
        """The options of ``recipe`` (``"default"`` or ``"paper"``), then ``values`` (flat or nested)."""
        return cls().update({"recipe": recipe, **values})

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, recipe: str | None = None) -> TrainConfig:
        """Reads a flat or nested YAML mapping (``config.yaml`` of a run folder, ``configs/*.yaml``).

        ``recipe`` (the CLI's ``--recipe``) replaces the file's own ``recipe:`` key; either applies before the
        file's other options.
        """
        values = read_yaml_mapping(path)
        if recipe is not None:
            values["recipe"] = recipe
        try:
            return cls().update(values)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def to_yaml(self) -> str:
        """The nested YAML that ``from_yaml`` reads back (``config.yaml`` of a run folder)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def recipe_options(recipe: str) -> dict[str, Any]:
    """The flat options a named recipe sets: ``"paper"`` the paper's (:data:`PAPER_RECIPE`), ``"default"``
    the same options at their defaults (the recipe measured best on short runs, docs/recipes.md)."""
    if recipe == "paper":
        return dict(PAPER_RECIPE)
    if recipe == "default":
        fields = {f.name: f for cls in (TrainConfig, ModelConfig) for f in dataclasses.fields(cls)}
        return {key: fields[key].default for key in PAPER_RECIPE}
    raise ValueError(f"option recipe: expected one of {', '.join(RECIPES)}, got {recipe!r}")


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """The mapping in a YAML file; ``ValueError`` naming the file if it is not one."""
    with open(path) as file:
        try:
            values = yaml.safe_load(file)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from None
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{path}: a training config must be a mapping of option: value")
    return dict(values)


# Counts that must be at least 1: a batch of 0 divides by zero, 0 epochs would write an untrained model marked
# finished (issue 26). None (steps_per_epoch: one pass) stays allowed.
AT_LEAST_ONE = ("batch_size", "epochs", "steps_per_epoch", "eval_every")


def check_counts(config: TrainConfig) -> None:
    """Raises ``ValueError`` naming the option and its flag when one of :data:`AT_LEAST_ONE` is below 1."""
    for name in AT_LEAST_ONE:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"option {name} (--{name.replace('_', '-')}): must be at least 1, got {value}")


# ----------------------------------------------------------------------------------------------------------
# Types and values


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a config dataclass's fields (``Literal``, ``X | None``, ``tuple[float, ...]``)."""
    hints = typing.get_type_hints(cls)
    return {field.name: hints[field.name] for field in dataclasses.fields(cls)}


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(field.name for field in dataclasses.fields(cls))


def _check_keys(cls: type, values: Mapping[str, Any], what: str) -> None:
    if not isinstance(values, Mapping):
        raise ValueError(f"expected a mapping of {what}s, got {values!r}")
    names = _field_names(cls)
    if cls is TrainConfig:
        names = names | _field_names(ModelConfig) | {f"model.{n}" for n in _field_names(ModelConfig)}
        names = names | {"recipe"}
    unknown = sorted(str(k) for k in values if str(k).replace("-", "_") not in names)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key.replace("-", "_"), sorted(names), n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise ValueError(f"unknown {what}(s): {', '.join(hints)}")


def _merge(into: dict, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if key in into and into[key] != value:
            raise ValueError(f"model option {key} given twice, as {into[key]!r} and {value!r}")
        into[key] = value


def optional_inner(hint: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, ``(hint, False)`` otherwise."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return hint, False


def is_none_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in _NONE


def split_list(text: str) -> list[str]:
    """``"1,2,3"``, ``"1 2 3"`` and ``"1, 2, 3"`` -> ``["1", "2", "3"]``."""
    return [part for part in text.replace(",", " ").split() if part]


def describe(hint: Any) -> str:
    """A reader's name for a type hint, for error messages and help."""
    inner, optional = optional_inner(hint)
    if optional:
        return f"none or {describe(inner)}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple:
        plural = _PLURALS.get(args[0], str(args[0]))
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {plural}"
        return f"{len(args)} {plural}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    return names.get(hint, names.get(origin, str(hint)))


_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the type ``hint`` describes, or a ``ValueError`` that names the option ``name``."""
    inner, optional = optional_inner(hint)
    if optional:
        if value is None or is_none_text(value):
            return None
        try:
            return coerce(value, inner, name)
        except ValueError:
            raise ValueError(f"option {name}: expected {describe(hint)}, got {value!r}") from None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        for alternative in args:
            try:
                return coerce(value, alternative, name)
            except ValueError:
                continue
        raise ValueError(f"option {name}: expected {describe(hint)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ValueError(f"option {name}: expected {describe(hint)}, got {value!r}")
    if origin is tuple:
        items = split_list(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"option {name}: expected {describe(hint)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            kinds = [args[0]] * len(items)
        elif len(items) != len(args):
            raise ValueError(f"option {name}: expected {describe(hint)}, got {len(items)}: {value!r}")
        else:
            kinds = list(args)
        return tuple(coerce(item, kind, f"{name}[{i}]") for i, (item, kind) in enumerate(zip(items, kinds)))
    if hint is dict or origin is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                raise ValueError(f"option {name}: expected a JSON/YAML mapping, got {value!r}") from None
        if isinstance(value, Mapping):
            return dict(value)
        raise ValueError(f"option {name}: expected a mapping, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"option {name}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"option {name}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ValueError(f"option {name}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"option {name}: expected a string, got {value!r}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return hint.from_dict(value)
        raise ValueError(f"option {name}: expected a mapping of options, got {value!r}")
    raise TypeError(f"option {name}: unsupported type {hint!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, _Options):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
