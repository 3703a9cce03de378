"""The `retinanet` command starts without TensorFlow; its help pages format (quiet start: tests/test_quiet.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import keras_retinanet
from keras_retinanet import training

NOT_LOADED = """
import sys
from keras_retinanet.cli.retinanet import build_parser
from keras_retinanet.cli.train import resolve_config
import keras_retinanet, keras_retinanet.training
from keras_retinanet.training.config import ModelConfig, TrainConfig

parser = build_parser()
config = resolve_config(parser.parse_args(["train", "--epochs", "1", "--anchor-sizes", "16,32,64,128,256"]))
assert config.model.anchor_sizes[0] == 16.0
assert {"train", "evaluate", "predict", "export", "data"} <= set(parser._subparsers._group_actions[0].choices)
print(sorted(name for name in ("tensorflow", "keras", "tf_keras", "torch") if name in sys.modules))
"""


def test_building_the_parser_imports_no_tensorflow_or_keras():
    result = subprocess.run([sys.executable, "-c", NOT_LOADED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_lazy_public_names_resolve():
    for name in keras_retinanet.__all__:
        value = getattr(keras_retinanet, name)
        assert value.__module__.startswith("keras_retinanet."), name
    assert keras_retinanet.RetinaNet.__name__ == "RetinaNet"
    for name in training.__all__:
        assert getattr(training, name) is not None, name
    assert training.TrainConfig is training.config.TrainConfig
    assert "RetinaNet" in dir(keras_retinanet) and "train" in dir(training)


def _subparser_choices(parser) -> dict:
    actions = [action for action in parser._actions if hasattr(action, "choices") and action.nargs == "A..."]
    return actions[0].choices if actions else {}


def test_every_help_page_formats(capsys):
    """argparse formats help lazily: a stray % in one option's help only fails when --help is asked for."""
    from keras_retinanet.cli.retinanet import SUBCOMMANDS, build_parser

    pages = [[name] for name in SUBCOMMANDS]
    pages += [["data", name] for name in _subparser_choices(_subparser_choices(build_parser())["data"])]
    assert ["data", "check"] in pages
    for words in [[]] + pages:
        with pytest.raises(SystemExit) as stopped:
            build_parser().parse_args([*words, "--help"])
        assert stopped.value.code == 0, words
        assert "--help" in capsys.readouterr().out, words


def test_export_help_names_every_format_of_the_table():
    """`retinanet export --help` lists the formats; a new row of the table must appear there too."""
    from keras_retinanet.cli.retinanet import build_parser
    from keras_retinanet.export.formats import FORMATS

    subcommands = build_parser()._subparsers._group_actions[0].choices
    help_text = " ".join(subcommands["export"].format_help().split())
    missing = [name for name in FORMATS if name not in help_text]
    assert missing == []
