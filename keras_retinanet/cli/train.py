"""``retinanet train``: every option of ``TrainConfig`` and of its ``ModelConfig`` is a flag and a YAML key.

Flags are made from the fields' types: ``--mixed-precision`` / ``--no-mixed-precision``, ``--clip-norm none``,
``--anchor-sizes 16 32 64`` or ``16,32,64``. Precedence: defaults < ``--recipe`` < ``--config FILE.yaml`` < flags
< ``--set KEY=VALUE`` (VALUE in YAML).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union

import yaml

from keras_retinanet.model.config import ModelConfig
from keras_retinanet.model.options import coerce, describe, field_types, optional_inner, split_list
from keras_retinanet.training.config import RECIPES, TrainConfig

_GROUPS = {
    "data": "data and augmentation",
    "model": "model (ModelConfig: config.yaml's model: section)",
    "optimisation": "optimisation",
    "hardware": "hardware",
    "logging": "evaluation, checkpoints and logs",
}


def _flag_fields() -> list[tuple[str, dataclasses.Field, Any]]:
    """(help group, field, type) of every option: TrainConfig's, then ModelConfig's."""
    return [
        (field.metadata.get("group") or "model", field, field_types(cls)[field.name])
        for cls in (TrainConfig, ModelConfig)
        for field in dataclasses.fields(cls)
        if field.name != "model"
    ]


def _is_list(hint: Any) -> bool:
    """A tuple type, or a union with one (``image_size: int | tuple[int, int]``)."""
    inner, _ = optional_inner(hint)
    union = typing.get_origin(inner) in (Union, types.UnionType)
    return any(typing.get_origin(a) is tuple for a in (typing.get_args(inner) if union else (inner,)))


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return " ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


class _Converter:
    """argparse ``type=`` for one option: the text checked and converted by ``coerce``."""

    def __init__(self, hint: Any, name: str):
        self.hint, self.name = hint, name
        self.__name__ = describe(hint)  # argparse names it in "invalid ... value"

    def __call__(self, text: str) -> Any:
        try:
            return coerce(text, self.hint, self.name)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None


class _ListAction(argparse.Action):
    """``--flag 1 2 3``, ``--flag 1,2,3`` (or a mix) -> a checked tuple; ``--flag none`` for optional lists;
    a single value where the type also allows a scalar (``--image-size 512``)."""

    def __init__(self, option_strings, dest, hint: Any = None, **kwargs):
        self.hint = hint
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = [item for value in values for item in split_list(value)]
        inner, _ = optional_inner(self.hint)
        scalar_allowed = typing.get_origin(inner) is not tuple
        value: Any = items[0] if len(items) == 1 and scalar_allowed else items
        if len(items) == 1 and items[0].lower() == "none":
            value = items[0]
        try:
            setattr(namespace, self.dest, coerce(value, self.hint, self.dest))
        except ValueError as error:
            raise argparse.ArgumentError(self, str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # argparse's own usage line would list all ~70 options before every error message.
    parser.usage = "%(prog)s [--config FILE.yaml] [--set KEY=VALUE ...] [--OPTION VALUE ...]"
    parser.add_argument(
        "--config", help="YAML file of options, flat (keys are the flag names with underscores) or nested"
    )
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        help="default: the recipe measured best on runs of a few hundred to a few thousand steps (fitted "
        "anchors, ATSS, GroupNorm heads, the data's input shape, warm-up a tenth of the run (at least 100 steps "
        "on a pretrained backbone), cosine); paper: Lin "
        "et al.'s anchors, IoU matcher, plain heads, square input, 500-step warm-up and x0.1 steps. Applied "
        "before --config and the flags",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one option (VALUE in YAML; KEY e.g. clip_norm or model.fpn_channels), repeatable",
    )
    parser.add_argument(
        "--allow-changes",
        action="append",
        default=[],
        metavar="KEYS",
        help="continue an existing run folder (--output) although these options differ from its config.yaml, "
        "e.g. epochs,learning_rate, or all; the model's options can never change there",
    )
    parser.add_argument(
        "--resume-from-epoch",
        type=int,
        default=None,
        metavar="N",
        help="continue the run folder from its kept state of epoch N instead of the newest (0: from the "
        "beginning), e.g. after a NaN stop whose last finite state has already diverged; the NaN message lists "
        "the kept states",
    )
    groups = {name: parser.add_argument_group(title) for name, title in _GROUPS.items()}
    for group, field, hint in _flag_fields():
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = field.metadata.get("help", "")
        help_text = f"{help_text} (default: {_show(default)})" if help_text else f"default: {_show(default)}"
        # SUPPRESS: only the flags given reach the Namespace, so they override --config and nothing else.
        common: dict[str, Any] = dict(dest=field.name, default=argparse.SUPPRESS, help=help_text)
        inner, _ = optional_inner(hint)
        if inner is bool:
            groups[group].add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif _is_list(hint):
            groups[group].add_argument(flag, nargs="+", action=_ListAction, hint=hint, metavar="V", **common)
        else:
            metavar = None
            if typing.get_origin(inner) is Literal:
                metavar = "{" + ",".join(map(str, typing.get_args(inner))) + "}"
            groups[group].add_argument(flag, type=_Converter(hint, field.name), metavar=metavar, **common)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The configuration the arguments give; ``ValueError`` naming a bad option or file."""
    recipe = getattr(args, "recipe", None)
    if getattr(args, "config", None):
        config = TrainConfig.from_yaml(args.config, recipe=recipe)
    else:
        config = TrainConfig.from_recipe(recipe or "default")
    flags = {
        field.name: getattr(args, field.name) for _, field, _ in _flag_fields() if hasattr(args, field.name)
    }
    config = config.update(flags)
    overrides = {}
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {item}: the value is not valid YAML") from None
    return config.update(overrides)


def run(args: argparse.Namespace) -> int:
    """Trains; returns 0, or 3 after a NaN / inf stop."""
    config = resolve_config(args)
    allow_changes = getattr(args, "allow_changes", [])
    args.resume_from_epoch = getattr(args, "resume_from_epoch", None)
    if args.resume_from_epoch is not None and args.resume_from_epoch < 0:
        raise ValueError(f"--resume-from-epoch must be 0 or more, got {args.resume_from_epoch}")
    from keras_retinanet.training.run_folder import plan_run

    # Before TensorFlow loads: a run folder made by another configuration is refused, a finished one is done.
    plan = plan_run(config, allow_changes)
    if plan.finished:
        print(plan.finished_message())
        return 0
    from keras_retinanet.training import train

    summary = train(config, allow_changes=allow_changes, resume_from_epoch=args.resume_from_epoch)
    if summary.get("stopped_on_nan"):
        return 3
    if not summary.get("already_finished"):
        print(f"model written to {config.output}/model.keras")
    if final := summary.get("final_metrics"):
        print(f"validation AP {final['AP']:.4f}  AP50 {final['AP50']:.4f}")
    return 0
