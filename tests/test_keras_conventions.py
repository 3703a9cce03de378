"""Keras conventions: importing the package makes saved models loadable; predict / detect take what Keras users
pass (one image, a batch, a list of any sizes) and refuse the rest in one line; they run the folded graph."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from retinanet_testing import REPO, make_detector_like, tiny_retinanet

import keras_retinanet
from keras_retinanet import WarmupSchedule, detectors
from keras_retinanet._registration import KERAS_OBJECT_MODULES
from keras_retinanet.backbones.batchnorm import batchnorm_layers
from keras_retinanet.imaging import stretch

PACKAGE = Path(keras_retinanet.__file__).parent


def _registered_classes() -> dict[str, str]:
    """{class name: module} of every class the package's source decorates with register_keras_serializable."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                "register_keras_serializable" in ast.unparse(decorator) for decorator in node.decorator_list
            ):
                found[node.name] = module
    return found


def test_the_registration_list_names_every_module_with_registered_classes():
    classes = _registered_classes()
    assert {"RetinaNet", "FocalLoss", "WarmupSchedule", "FeaturePyramid", "FusedBatchNormalization"} <= set(
        classes
    )
    for name, module in classes.items():
        assert module in KERAS_OBJECT_MODULES or module.rsplit(".", 1)[0] in KERAS_OBJECT_MODULES, (
            name,
            module,
        )


LOAD = """
import sys
{imports}
assert "tensorflow" not in sys.modules or "keras" in sys.modules
import keras
import numpy as np
names = {names!r}
missing = [n for n in names if keras.saving.get_registered_object("keras_retinanet>" + n) is None]
assert not missing, missing
model = keras.saving.load_model({path!r})
assert type(model).__name__ == "RetinaNet", type(model)
schedule = model.optimizer.get_config()["learning_rate"]
assert schedule["registered_name"] == "keras_retinanet>WarmupSchedule", schedule
out = model.predict(np.load({images!r}), verbose=0)
np.savez({result!r}, **out)
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny trained-looking model saved with its optimiser (a WarmupSchedule) and its predictions."""
    folder = tmp_path_factory.mktemp("saved")
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = tiny_retinanet(image_size=64)
    make_detector_like(model, images)
    model.compile(optimizer=keras.optimizers.SGD(WarmupSchedule(0.01, total_steps=100, warmup_steps=10)))
    model.save(folder / "model.keras")
    np.save(folder / "images.npy", images)
    expected = model.predict(images, verbose=0)
    assert int(expected["num_detections"].min()) >= 5  # detections to compare, not padding
    return folder, expected


@pytest.mark.parametrize(
    "imports",
    [
        # the bare package import: no TensorFlow until keras is imported; the line after checks it
        "import keras_retinanet\nassert 'tensorflow' not in sys.modules and 'keras' not in sys.modules",
        pytest.param("import keras\nimport keras_retinanet", marks=pytest.mark.slow),
        # a submodule that imports Keras itself, before the modules that need its names are imported
        pytest.param("import keras_retinanet.boxes", marks=pytest.mark.slow),
    ],
    ids=["package-then-keras", "keras-then-package", "submodule"],
)
def test_load_model_after_importing_the_package_in_a_fresh_process(saved, imports, tmp_path):
    folder, expected = saved
    result_path = tmp_path / "result.npz"
    code = LOAD.format(
        imports=imports,
        names=sorted(_registered_classes()),
        path=str(folder / "model.keras"),
        images=str(folder / "images.npy"),
        result=str(result_path),
    )
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = np.load(result_path)
    np.testing.assert_array_equal(loaded["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(loaded["classes"], expected["classes"])
    np.testing.assert_allclose(loaded["boxes"], expected["boxes"], atol=1e-3)
    np.testing.assert_allclose(loaded["scores"], expected["scores"], atol=1e-6)


@pytest.mark.slow
def test_without_the_package_keras_cannot_load_it(saved, tmp_path):
    """The control: the subprocess above passes because of the import, not because Keras finds the classes."""
    folder, _ = saved
    code = f"import keras\nkeras.saving.load_model({str(folder / 'model.keras')!r})"
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode != 0 and "Could not locate class 'RetinaNet'" in run.stderr


# ----------------------------------------------------------------------------------------------------------
# predict / detect inputs

SIZES = [(96, 96), (64, 128)]


@pytest.fixture(scope="module")
def detector_model():
    """A tiny model whose scores spread widely (no ties for NMS to break differently from batch to batch)."""
    keras.utils.set_random_seed(4)
    model = tiny_retinanet(3)
    rng = np.random.default_rng(1)
    make_detector_like(model, rng.uniform(0, 255, (2, 96, 96, 3)).astype(np.float32))
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in SIZES]
    return model, images


def _assert_same(actual: dict, expected: dict) -> None:
    actual = {k: np.asarray(v) for k, v in actual.items()}
    expected = {k: np.asarray(v) for k, v in expected.items()}
    assert actual["boxes"].shape == expected["boxes"].shape
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(actual["classes"], expected["classes"])
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], atol=1e-3)
    np.testing.assert_allclose(actual["scores"], expected["scores"], atol=1e-5)


def test_a_list_of_different_sizes_gives_one_row_per_image_as_single_calls_do(detector_model):
    model, (first, second) = detector_model
    singles = [model.predict(image, verbose=0) for image in (first, second)]
    assert all(int(single["num_detections"]) >= 5 for single in singles)
    # Each image keeps its own size: boxes inside it, not in the other image's frame.
    assert singles[1]["boxes"][..., 0::2].max() <= 128 and singles[1]["boxes"][..., 1::2].max() <= 64
    assert singles[1]["boxes"][..., 1::2].max() > 40

    listed = model.predict([first, second, first], verbose=0)
    assert listed["boxes"].shape == (3, 100, 4) and listed["num_detections"].shape == (3,)
    for row, single in zip([0, 1, 2], [singles[0], singles[1], singles[0]], strict=True):
        _assert_same({k: v[row] for k, v in listed.items()}, single)

    detected = model.detect([second, first, second])  # rows 0 and 2 run as one batch, row 1 as another
    for row, single in enumerate([singles[1], singles[0], singles[1]]):
        _assert_same({k: v[row] for k, v in detected.items()}, single)

    one = model.predict([second], verbose=0)
    assert one["boxes"].shape == (1, 100, 4)
    _assert_same({k: v[0] for k, v in one.items()}, singles[1])
    # A batch array and a single image keep their shapes.
    batch = model.predict(np.stack([second, second]), verbose=0)
    assert batch["boxes"].shape == (2, 100, 4)
    _assert_same({k: v[1] for k, v in batch.items()}, singles[1])
    _assert_same(model.detect(second), singles[1])


ACCEPTS = r"it takes one \(H, W, 3\) RGB image, a \(B, H, W, 3\) batch or a list of \(H, W, 3\) images"


@pytest.mark.parametrize(
    "bad, got",
    [
        (np.zeros((0, 10, 3), np.float32), r"an array of shape \(0, 10, 3\), which holds no pixels"),
        (np.zeros((0, 32, 32, 3), np.float32), r"an array of shape \(0, 32, 32, 3\), which holds no pixels"),
        ([], r"an empty list"),
        (np.zeros((32, 32), np.float32), r"an array of shape \(32, 32\)"),
        (np.zeros((1, 32, 32, 4), np.uint8), r"an array of shape \(1, 32, 32, 4\)"),
        (np.zeros((1, 1, 32, 32, 3), np.uint8), r"an array of shape \(1, 1, 32, 32, 3\)"),
        ([np.zeros((32, 32, 3)), np.zeros((32, 32, 1))], r"a list whose item 1 is of shape \(32, 32, 1\)"),
        ([np.zeros((32, 32, 3)), "b.jpg"], r"a list whose item 1 is an object of type str"),
        (np.full((8, 8, 3), "x"), r"an array of dtype <U1"),
        (np.zeros((8, 8, 3), bool), r"an array of dtype bool"),
        ("image.jpg", r"an object of type str"),
        (None, r"an object of type NoneType"),
    ],
)
def test_other_inputs_are_refused_in_one_line(detector_model, bad, got):
    model, _ = detector_model
    for method in ("predict", "detect"):
        with pytest.raises(ValueError, match=rf"^{method}\(\) got {got}; {ACCEPTS}") as error:
            getattr(model, method)(bad)
        assert "\n" not in str(error.value)


def test_detectors_refuse_a_zero_sized_array(detector_model):
    model, _ = detector_model
    with pytest.raises(ValueError, match=r"at least 1 x 1 pixel; got an empty array of shape \(0, 10, 3\)"):
        detectors.predict(model, np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ValueError, match=r"cannot letterbox an empty image of 0 x 10 pixels"):
        detectors.KerasDetector(model).detect([np.zeros((0, 10, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"cannot stretch an empty image of 10 x 0 pixels"):
        stretch(np.zeros((10, 0, 3), np.uint8), 64)  # how TFLite and MediaPipe inputs are made


# ----------------------------------------------------------------------------------------------------------
# the folded graph


def _randomise_batchnorm(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in batchnorm_layers(model):
        n = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0.0, 0.5, n))
        layer.moving_variance.assign(rng.uniform(0.3, 3.0, n))
        layer.gamma.assign(rng.uniform(0.5, 1.5, n))


def _training_graph_detections(model, images: np.ndarray) -> dict:
    """The unfolded graph in inference mode, decoded: what predict ran before."""
    return model.decode(model(images, training=False), images.shape[1:3])


def test_predict_and_detect_run_the_folded_graph_and_follow_weight_changes():
    keras.utils.set_random_seed(5)
    model = tiny_retinanet(3)
    _randomise_batchnorm(model, seed=0)
    images = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    make_detector_like(model, images)

    graph = model.inference_graph()
    assert graph is not model and graph is model.inference_graph()  # built once, then kept
    assert batchnorm_layers(graph) == [] and len(batchnorm_layers(model)) > 30
    reference = _training_graph_detections(model, images)
    assert int(np.asarray(reference["num_detections"]).min()) >= 5
    _assert_same(model.predict(images, verbose=0), reference)
    _assert_same(model.detect(images), reference)

    # New BatchNorm statistics (as fit or PreciseBN leave them) reach the copy: no stale detections.
    _randomise_batchnorm(model, seed=1)
    changed = _training_graph_detections(model, images)
    assert not np.allclose(np.asarray(changed["scores"]), np.asarray(reference["scores"]), atol=1e-3)
    _assert_same(model.predict(images, verbose=0), changed)
    assert model.inference_graph() is graph  # updated in place
    # So do the model's decoder settings.
    model.decoder = type(model.decoder).from_config({**model.decoder.get_config(), "max_detections": 7})
    assert model.predict(images, verbose=0)["boxes"].shape == (2, 7, 4)
    assert np.asarray(model.detect(images)["boxes"]).shape == (2, 7, 4)


def test_the_saved_config_records_the_registered_names(saved):
    """What Keras looks up on load: the registered name (package>class) and the module (not imported by Keras)."""
    import zipfile

    folder, _ = saved
    config = json.loads(zipfile.ZipFile(folder / "model.keras").read("config.json"))
    assert (config["registered_name"], config["module"]) == (
        "keras_retinanet>RetinaNet",
        "keras_retinanet.model.retinanet",
    )


def test_a_mixed_bfloat16_model_keeps_computing_in_bfloat16():
    """predict ran such a model in bfloat16 before it ran the folded copy; the copy keeps that precision."""
    from keras_retinanet.model.inference_graph import global_dtype_policy

    with global_dtype_policy("mixed_bfloat16"):
        model = tiny_retinanet(3)
    assert model.compute_dtype == "bfloat16"
    graph = model.inference_graph()
    assert graph.compute_dtype == "bfloat16" and batchnorm_layers(graph) == []
    assert graph.get_layer("box_head").final.compute_dtype == "bfloat16"
    out = model.predict(np.full((64, 64, 3), 100, np.uint8), verbose=0)
    assert out["boxes"].dtype == np.float32 and out["boxes"].shape == (100, 4)  # decoded in float32
    assert tiny_retinanet(3).inference_graph().compute_dtype == "float32"
