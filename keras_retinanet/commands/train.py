"""``retinanet train``: every ``TrainConfig`` field is a flag (``--image-size 384``) and a YAML key.

Precedence: defaults < ``--config FILE.yaml`` < flags < ``--set key=value``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import yaml

from keras_retinanet.training import TrainConfig

_SHORT_HELP = {
    "data": "training data spec, e.g. voc:DIR:trainval (see `retinanet --help`)",
    "val_data": "validation data spec; enables val_AP, best.keras and early stopping",
    "output": "run folder: config.yaml, class_names.txt, model.keras, checkpoints/, backup/, log.csv",
    "weights": "backbone weights: none, imagenet or a local file",
    "backbone_kwargs": "JSON of extra backbone arguments, e.g. '{\"alpha\": 0.35}'",
    "steps_per_epoch": "default: one pass over the training images",
    "schedule": "step (the paper's 1x: x0.1 at lr_milestones) or cosine, after a linear warm-up",
    "strategy": "auto | one_device | mirrored | multi_worker | tpu",
    "mixed_precision": "mixed_float16 on GPU, mixed_bfloat16 on TPU/CPU; losses and box decoding stay float32",
    "precise_bn_batches": "recompute BatchNorm statistics over this many batches after training (0: off)",
}


def _value_type(field: dataclasses.Field):
    annotation = str(field.type)
    if "bool" in annotation:
        return bool
    for name, kind in (("tuple", tuple), ("dict", dict), ("int", int), ("float", float)):
        if annotation.startswith(name) or f" {name}" in annotation or annotation.startswith(f"{name} "):
            return kind
    return str


def _number(text: str):
    return float(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of options (keys are the flag names with underscores)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one option (YAML value), repeatable",
    )
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = _value_type(field)
        help_text = _SHORT_HELP.get(field.name, "")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = f"{help_text} (default: {default})".strip()
        common = dict(dest=field.name, default=argparse.SUPPRESS, help=help_text)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif kind is tuple:
            parser.add_argument(flag, nargs="+", type=_number, **common)
        elif kind is dict:
            parser.add_argument(flag, type=json.loads, **common)
        else:
            parser.add_argument(flag, type=kind, **common)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    config = config.update(flags)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return config.update(overrides)


def run(args: argparse.Namespace) -> int:
    from keras_retinanet.data import DataError
    from keras_retinanet.training import train

    try:
        config = resolve_config(args)
        summary = train(config)
    except (DataError, ValueError, FileNotFoundError) as error:
        print(f"retinanet train: error: {error}")
        return 2
    if summary["stopped_on_nan"]:
        return 3
    print(f"model written to {config.output}/model.keras")
    final = summary.get("final_metrics")
    if final:
        print(f"validation AP {final['AP']:.4f}  AP50 {final['AP50']:.4f}")
    return 0
