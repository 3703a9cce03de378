"""keras_retinanet/_quiet.py: TensorFlow's C++ start-up lines are hidden, by `retinanet` and by the tools in
tools/, unless --verbose."""

from __future__ import annotations

import os
import subprocess
import sys

from retinanet_testing import LOUD, REPO

from keras_retinanet._quiet import STARTUP_NOISE, filtered_stderr


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


def _stderr(*command: str) -> str:
    """stderr of ``command`` run with TensorFlow's own log level unset (as on a fresh shell)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode != 0, (
        result.stderr
    )  # each command below imports TensorFlow, then fails on its data
    return result.stderr


# `retinanet train` without data imports TensorFlow (the training loop), then stops: "no training data";
# tools/main_job.py imports the package's heavy parts, then stops on the missing annotation file.
RETINANET = ("-m", "keras_retinanet", "train", "--epochs", "1")
MAIN_JOB = ("tools/main_job.py", "--data", "coco:/nonexistent/a.json", "--output")


def test_tensorflow_startup_lines_hidden_by_retinanet():
    """tests/test_main_job.py checks the same of the whole main job (tools/main_job.py --tiny)."""
    stderr = _stderr(sys.executable, *RETINANET)
    assert "no training data" in stderr, stderr
    assert not [line for line in stderr.splitlines() if STARTUP_NOISE.search(line)], stderr
    assert not any(word in stderr for word in LOUD), stderr


def test_verbose_shows_them(tmp_path):
    """A tool with --verbose shows the lines the quiet runs hide (so those did import TensorFlow)."""
    stderr = _stderr(sys.executable, *MAIN_JOB, str(tmp_path), "--verbose")
    assert "I0000" in stderr and "oneDNN custom operations" in stderr, stderr


def test_converter_info_lines_hidden_but_the_projects_own_kept():
    """TensorFlow's Python INFO lines ("Assets written to ...", twice per SavedModel and TFLite file) are hidden
    after ``quiet_tensorflow``; the export's own INFO lines, logged through the same root handler, are not."""
    script = (
        "import logging; from keras_retinanet._quiet import quiet_tensorflow; quiet_tensorflow(); "
        "logging.basicConfig(level=logging.INFO, format='%(message)s'); import tensorflow as tf; "
        "tf.get_logger().info('Assets written to X'); logging.getLogger('tf2onnx').info('Optimizing ONNX model'); "
        "logging.getLogger('keras_retinanet.export').info('writing format onnx')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert "writing format onnx" in result.stderr
    assert "Assets written" not in result.stderr and "Optimizing ONNX" not in result.stderr
