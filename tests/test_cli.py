"""The `retinanet` command starts without TensorFlow, and hides TensorFlow's start-up lines unless --verbose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import keras_retinanet
from keras_retinanet import training
from keras_retinanet.cli.retinanet import STARTUP_NOISE, filtered_stderr

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


def test_filtered_stderr_drops_only_tensorflow_startup_lines(capfd):
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1.0 5328 port.cc:153] oneDNN custom operations are on. You may see slightly different\n",
        "I0000 00:00:1.0 5328 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n",
        "I0000 00:00:1.0 5328 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU\n",
        "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with\n",
        "E0000 00:00:1.0 1 cuda_dnn.cc:8579] Unable to register cuDNN factory: Attempting to register factory\n",
        "a real error: something else went wrong\n",
    ]
    with filtered_stderr():
        for line in lines:
            os.write(2, line.encode())  # the C++ libraries write to file descriptor 2, not sys.stderr
    assert capfd.readouterr().err == "a real error: something else went wrong\n"


def _startup_lines(*arguments: str) -> tuple[list[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    result = subprocess.run(
        [sys.executable, "-m", "keras_retinanet", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    # `train` without data imports TensorFlow (the training loop), then stops: "no training data".
    assert result.returncode == 2, result.stderr
    assert "retinanet train: error: no training data" in result.stderr
    return [line for line in result.stderr.splitlines() if STARTUP_NOISE.search(line)], result.stderr


def test_tensorflow_startup_lines_hidden_unless_verbose():
    hidden, stderr = _startup_lines("train", "--epochs", "1")
    assert hidden == [], stderr
    assert "oneDNN" not in stderr and "cpu_feature_guard" not in stderr and "cuInit" not in stderr
    # The same command with --verbose shows them: the quiet run above did import TensorFlow.
    shown, _ = _startup_lines("--verbose", "train", "--epochs", "1")
    assert shown


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
