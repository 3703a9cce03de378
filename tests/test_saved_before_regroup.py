"""A ``.keras`` file saved by version 0.3, before the package was regrouped into rooms, still loads.

Keras finds our classes by their registered names (``keras_retinanet>RetinaNet``), not by the module paths the
file also records, so moving a module must not break old files. tests/fixtures/saved_v0_3 holds a tiny model saved
by the 0.3 layout (config modules such as ``keras_retinanet.model``) and its outputs on a fixed 64 x 64 image.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
from retinanet_testing import FIXTURES

SAVED = FIXTURES / "saved_v0_3"


def test_the_file_was_written_by_the_old_layout():
    with zipfile.ZipFile(SAVED / "tiny_retinanet.keras") as archive:
        config = json.loads(archive.read("config.json"))
    assert config["module"] == "keras_retinanet.model"
    assert config["registered_name"] == "keras_retinanet>RetinaNet"


def test_a_model_saved_before_the_regroup_loads_and_computes_the_same_outputs():
    import keras

    import keras_retinanet  # noqa: F401 - registers the package's classes

    model = keras.saving.load_model(SAVED / "tiny_retinanet.keras")
    expected = np.load(SAVED / "tiny_retinanet_outputs.npz")
    outputs = model(expected["image"], training=False)
    assert model.class_names == ["RBC", "WBC", "Platelets"]
    for name in ("classification", "box_regression"):
        np.testing.assert_allclose(np.asarray(outputs[name]), expected[name], rtol=1e-5, atol=1e-5)
