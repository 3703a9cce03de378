"""Configuration of a training run: :class:`TrainConfig` (data, augmentation, optimisation, hardware, logs),
containing the :class:`ModelConfig` of the model it trains as ``config.model``.

Options come flat, as the CLI flags (``{"fpn_channels": 64, "epochs": 3}``, also ``"model.fpn_channels"``), or
nested, as ``config.yaml`` (``{"model": {"fpn_channels": 64}, "epochs": 3}``); values are checked against the
fields' types. Imports neither TensorFlow nor Keras, so ``retinanet train --help`` answers at once.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from keras_retinanet.model.config import ModelConfig
from keras_retinanet.model.options import Options, check_keys, field_names, option
from keras_retinanet.model.presets import PAPER

# The anchor options that ``--anchors auto`` or ``--anchors FILE`` set (keras_retinanet.training.anchors).
FITTED_ANCHOR_FIELDS = ("anchor_sizes", "anchor_scales", "anchor_aspect_ratios")

# The options a recipe sets, at the paper's values (Lin et al. 2017, Detectron's retinanet_R-50-FPN_1x); the
# default recipe's are the fields' defaults.
PAPER_RECIPE = {
    "anchors": "given",
    "image_shape": "square",
    "schedule": "step",
    "warmup_steps": 500,
    **PAPER.non_defaults(),
}
RECIPES = ("default", "paper")


@dataclasses.dataclass
class TrainConfig(Options):
    """Every option of a training run; the defaults are the default recipe (docs/recipes.md), and
    ``TrainConfig.from_recipe("paper")`` the paper's schedule, anchors, matcher and square input."""

    # data
    data: str = option("", "training data spec, e.g. voc:DIR:trainval (see `retinanet --help`)", group="data")
    val_data: str | None = option(
        None, "validation data spec; enables val_AP, best.keras and early stopping", group="data"
    )
    output: str = option(
        "runs/train",
        "run folder: config.yaml, labels.txt, model.keras, checkpoints/, backup/, log.csv",
        group="data",
    )
    skip_bad: bool = option(False, "skip bad records (always reported) instead of stopping", group="data")
    allow_outside_paths: bool = option(
        False,
        "read COCO images whose file_name leads outside the image folder (../x.jpg, /abs)",
        group="data",
    )
    allow_empty_classes: bool = option(
        False,
        "train even if a class, or the whole training set, has no boxes (negatives-only training)",
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
        "positive IoU with an anchor (default: the paper's anchors miss objects under 32 px); given: the anchor "
        "options as given (the paper's unless set; 'paper' before 0.4); FILE: the anchors of a `retinanet data "
        "check --json` file or a run's anchors.json",
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
        "few-hundred-step run), and at least 100 (at most half the run) when the backbone starts pretrained "
        "(ImageNet, a weights file)",
        group="optimisation",
    )
    warmup_factor: float = option(0.001, "starting fraction of the learning rate", group="optimisation")
    lr_milestones: tuple[float, ...] = option(
        (2.0 / 3.0, 8.0 / 9.0),
        "fractions of training where the step schedule multiplies by 0.1",
        group="optimisation",
    )
    clip_norm: float | None = option(10.0, "global gradient-norm clipping (none: off)", group="optimisation")
    freeze_batchnorm: bool | None = option(
        None,
        "BatchNorm in inference mode with its statistics fixed; none: frozen when the backbone starts "
        "pretrained (ImageNet, a weights file, --init), trained from scratch (measured in docs/recipes.md)",
        group="optimisation",
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
        if self.anchors == "paper":  # its name before 0.4, in earlier run folders' config.yaml
            self.anchors = "given"
        check_counts(self)

    @property
    def pretrained_start(self) -> bool:
        """Whether the backbone starts from trained weights (ImageNet, a weights file, ``--init``)."""
        return bool(self.init) or self.model.weights is not None

    @property
    def new_heads_on_pretrained_backbone(self) -> bool:
        """A pretrained backbone (ImageNet, a weights file) under a pyramid and heads that start random; not
        ``--init``, whose whole detector is trained (its fine-tuning recipe sets its own warm-up)."""
        return self.pretrained_start and not self.init

    @property
    def batchnorm_frozen(self) -> bool:
        """``freeze_batchnorm``, or when it is None, whether the backbone starts pretrained."""
        if self.freeze_batchnorm is not None:
            return self.freeze_batchnorm
        return self.pretrained_start

    def update(self, values: Mapping[str, Any]) -> TrainConfig:
        """A copy with ``values`` (flat or nested; dashes count as underscores) applied and checked; a
        ``"recipe"`` key sets that recipe's options first. Unknown keys, and a model option given twice with
        different values, are errors."""
        own, model = {}, {}
        values = _drop_removed(values)
        check_keys(values, _train_keys(), "training option")
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
                check_keys(nested, field_names(ModelConfig), "model option")
                _merge(model, nested)
            elif key.startswith("model."):
                _merge(model, {key[len("model.") :]: value})
            elif key in field_names(ModelConfig):
                _merge(model, {key: value})
            else:
                own[key] = value
        return dataclasses.replace(self, model=self.model.update(model), **own)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        return cls().update(values)

    @classmethod
    def from_recipe(cls, recipe: str = "default", **values: Any) -> TrainConfig:
        """The options of ``recipe`` (``"default"`` or ``"paper"``), then ``values``."""
        return cls().update({"recipe": recipe, **values})

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, recipe: str | None = None) -> TrainConfig:
        """Reads a flat or nested YAML mapping; ``recipe`` (``--recipe``) replaces the file's ``recipe:`` key."""
        values = read_yaml_mapping(path)
        if recipe is not None:
            values["recipe"] = recipe
        try:
            return cls().update(values)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def to_yaml(self) -> str:
        """The nested YAML that ``from_yaml`` reads back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def recipe_options(recipe: str) -> dict[str, Any]:
    """The flat options a named recipe sets (:data:`PAPER_RECIPE`'s keys)."""
    if recipe == "paper":
        return dict(PAPER_RECIPE)
    if recipe == "default":
        fields = {f.name: f for cls in (TrainConfig, ModelConfig) for f in dataclasses.fields(cls)}
        return {key: fields[key].default for key in PAPER_RECIPE}
    raise ValueError(f"option recipe: expected one of {', '.join(RECIPES)}, got {recipe!r}")


def read_yaml_mapping(path: str | os.PathLike) -> dict:
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


# Counts that must be at least 1 (None, for steps_per_epoch one pass, stays allowed).
AT_LEAST_ONE = ("batch_size", "epochs", "steps_per_epoch", "eval_every")


def check_counts(config: TrainConfig) -> None:
    for name in AT_LEAST_ONE:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"option {name} (--{name.replace('_', '-')}): must be at least 1, got {value}")


# Removed options, and the version they went in: a config.yaml that leaves one off (false) still loads.
REMOVED = {"subpixel_shift": "0.4"}


def _drop_removed(values: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in [k for k in values if k.replace("-", "_") in REMOVED]:
        name = key.replace("-", "_")
        if values[key]:
            raise ValueError(
                f"option {name} was removed in {REMOVED[name]} (docs/recipes.md): retrain without it, or use "
                "keras-retinanet 0.3 for this configuration"
            )
        values = {k: v for k, v in values.items() if k != key}
    return values


@functools.cache
def _train_keys() -> frozenset[str]:
    model = field_names(ModelConfig)
    return field_names(TrainConfig) | model | {f"model.{n}" for n in model} | {"recipe"}


def _merge(into: dict, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if key in into and into[key] != value:
            raise ValueError(f"model option {key} given twice, as {into[key]!r} and {value!r}")
        into[key] = value
