"""The README's main job in its tiny configuration (`make demo ARGS=--tiny`): every stage runs and leaves its
files, and TensorFlow's C++ start-up and converter lines stay hidden (keras_retinanet/_quiet.py)."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
from retinanet_testing import LOUD, REPO

from keras_retinanet._quiet import STARTUP_NOISE
from keras_retinanet.export import flex_ops, tflite_ops


def test_main_job_tiny_end_to_end(tmp_path):
    output = tmp_path / "job"
    # As a newcomer runs it: a fresh process, TensorFlow's own log level unset.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    command = [sys.executable, "tools/main_job.py", "--tiny", "--output", str(output)]
    job = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert job.returncode == 0, job.stderr
    printed = job.stdout + job.stderr
    assert not [line for line in printed.splitlines() if STARTUP_NOISE.search(line)], job.stderr
    assert not [word for word in (*LOUD, "W0000", "E0000") if word in printed], job.stderr
    result = json.loads((output / "metrics.json").read_text())
    keras_metrics, int8_metrics = result["metrics"]["keras"], result["metrics"]["tflite_int8"]
    # The tiny run learns a little (measured in two runs: AR100 0.125 / 0.11, AP50 0.014 / 0.021, AP 0.004 /
    # 0.005): enough for the int8 file to have something to keep. It must keep it: AP50 and AR100 within half of
    # the Keras model's, AP (a few thousandths) within 0.003; an int8 file calibrated on black images scored
    # AP 0.0008, AP50 0.004 here.
    assert keras_metrics["AR100"] >= 0.05 and keras_metrics["AP50"] >= 0.005, keras_metrics
    for key in ("AP50", "AR100"):
        assert int8_metrics[key] == pytest.approx(keras_metrics[key], rel=0.5), (
            key,
            keras_metrics,
            int8_metrics,
        )
    assert int8_metrics["AP"] == pytest.approx(keras_metrics["AP"], abs=0.003), (keras_metrics, int8_metrics)
    assert result["data"]["train_images"] == 48 and result["data"]["val_images"] == 16
    # The job trains as `retinanet data check` advises for small objects, and the saved model keeps it.
    assert (result["config"]["model"]["matching"], result["config"]["model"]["use_group_norm"]) == (
        "atss",
        True,
    )
    model_config = json.loads(zipfile.ZipFile(output / "train" / "model.keras").read("config.json"))["config"]
    assert model_config["use_group_norm"] is True
    assert model_config["matcher"]["config"]["matching"] == "atss"
    for name in ("model_float32.tflite", "model_float16.tflite", "model_int8.tflite", "export_report.json"):
        assert (output / "export" / name).stat().st_size > 0, name
        if name.endswith(".tflite"):
            ops = tflite_ops(output / "export" / name)
            assert "TFLite_Detection_PostProcess" in ops and not flex_ops(ops)
    assert (output / "export" / "saved_model" / "saved_model.pb").exists()
    assert (output / "gallery.png").stat().st_size > 1000
    detections = json.loads((output / "predictions" / "detections.json").read_text())
    assert len(detections) == 6 and all("boxes" in d for d in detections)
