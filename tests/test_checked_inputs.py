"""Inputs that used to bypass the checked loaders (issue 26, item 1): each ended in exit 70 with a traceback.
Now each is one line on stderr naming the file (or the option) and what is wrong, with exit code 2 (the
README's exit-code table: bad input or usage)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from keras_retinanet.cli.retinanet import EXIT_BAD_INPUT, main


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"retinanet {command}: error: "), lines[0]
    return lines[0]


def _lambda_model(path) -> str:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2.0)])
    model.save(path)
    return str(path)


def _flipped_keras(source, path) -> str:
    """The archive with its model.weights.h5 member's bytes inverted in the middle (zip CRC then fails)."""
    data = bytearray(Path(source).read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[start : start + 64] = bytes(255 - b for b in data[start : start + 64])
    path.write_bytes(bytes(data))
    return str(path)


@pytest.mark.parametrize("case", ["truncated", "flipped", "lambda"])
def test_train_init_goes_through_the_checked_loader(case, detector_like, tmp_path, capsys):
    source = detector_like["keras"]
    if case == "truncated":
        init = tmp_path / "cut.keras"
        init.write_bytes(Path(source).read_bytes()[:3000])
        expected = f"{init} has a .keras name but is not a Keras archive (zip): truncated or not a model"
    elif case == "flipped":
        init = _flipped_keras(source, tmp_path / "flipped.keras")
        expected = f"{init}: cannot load this Keras model ("
    else:
        init = _lambda_model(tmp_path / "lambda.keras")
        expected = f"{init}: cannot load this Keras model (ValueError: "
    output = tmp_path / "run"
    code = main(["train", "--data", detector_like["spec"], "--init", str(init), "--output", str(output)])
    line = _one_error_line(capsys.readouterr().err, "train")
    assert code == EXIT_BAD_INPUT == 2
    assert expected in line
    if case == "lambda":
        assert "Lambda" in line
    assert not output.exists()  # nothing written before the model is built


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory, detector_like):
    from keras_retinanet.detectors import load_retinanet
    from keras_retinanet.export.saved_model import build_saved_model

    folder = tmp_path_factory.mktemp("export") / "saved_model"
    model = load_retinanet(detector_like["keras"])
    build_saved_model(model, folder, model.image_size)
    return folder


@pytest.mark.slow  # the SavedModel export takes ~30 s here
@pytest.mark.parametrize("damage", ["truncated_data", "no_variables"])
def test_evaluate_a_damaged_saved_model_names_it(damage, saved_model_dir, detector_like, tmp_path, capsys):
    folder = tmp_path / "saved_model"
    shutil.copytree(saved_model_dir, folder)
    variables = folder / "variables"
    if damage == "truncated_data":
        (data_file,) = variables.glob("variables.data-*")
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 3])
        expected = (
            f"{folder}: TensorFlow cannot load this SavedModel (IndexError: Read less bytes than requested): "
            "truncated or corrupt; copy or export it again"
        )
    else:
        shutil.rmtree(variables)
        expected = (
            f"{folder}: the SavedModel is incomplete: {variables / 'variables.index'} is missing (copy the "
            "whole export folder, or export again)"
        )
    code = main(["evaluate", str(folder), "--data", detector_like["spec"], "--no-progress"])
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert code == 2 and line == f"retinanet evaluate: error: {expected}"


def test_predict_a_truncated_tflite_names_it(detector_like, tmp_path, capsys):
    cut = tmp_path / "cut.tflite"
    data = Path(detector_like["tflite"]).read_bytes()
    cut.write_bytes(data[:30000])  # keeps the TFL3 identifier, loses the buffers the offsets point to
    code = main(["predict", str(cut), detector_like["images"][0], "--out", str(tmp_path / "out")])
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert code == 2
    assert line.startswith(
        f"retinanet predict: error: {cut}: not a complete TFLite model (truncated or corrupt: "
    )
    assert "struct.error" in line and line.endswith("copy or export it again")


@pytest.mark.parametrize(
    ("flag", "value"), [("--max-detections", "-5"), ("--max-detections", "0"), ("--threads", "0")]
)
def test_predict_counts_below_one_are_refused(flag, value, detector_like, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        ["predict", detector_like["keras"], detector_like["images"][0], "--out", str(out), flag, value]
    )
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert code == 2 and line == f"retinanet predict: error: {flag} must be at least 1, got {value}"
    assert not out.exists()


def test_predict_batch_size_zero_is_refused(detector_like, tmp_path, capsys):
    code = main(["predict", detector_like["keras"], detector_like["images"][0], "--out", str(tmp_path / "o")])
    assert code == 0 and capsys.readouterr()  # the same command with a sane batch runs
    out = ["--out", str(tmp_path / "o2")]
    code = main(["predict", detector_like["keras"], detector_like["images"][0], *out, "--batch-size", "0"])
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert code == 2 and line == "retinanet predict: error: --batch-size must be at least 1, got 0"


@pytest.mark.parametrize(("flag", "name"), [("--batch-size", "batch_size"), ("--epochs", "epochs")])
def test_train_counts_below_one_name_the_option(flag, name, detector_like, tmp_path, capsys):
    output = tmp_path / "run"
    code = main(["train", "--data", detector_like["spec"], "--output", str(output), flag, "0"])
    line = _one_error_line(capsys.readouterr().err, "train")
    assert code == 2
    assert line == f"retinanet train: error: option {name} ({flag}): must be at least 1, got 0"
    assert not output.exists()  # before: --epochs 0 wrote an untrained model.keras marked finished


def test_config_counts_are_checked_in_python_too():
    from keras_retinanet.training.config import TrainConfig

    assert TrainConfig(epochs=1, batch_size=1, steps_per_epoch=None).epochs == 1
    for name in ("batch_size", "epochs", "steps_per_epoch", "eval_every"):
        with pytest.raises(
            ValueError, match=rf"^option {name} \(--{name.replace('_', '-')}\): must be at least 1"
        ):
            TrainConfig().update({name: 0})
