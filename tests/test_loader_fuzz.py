"""Property test (issue 26, item 6): random truncations and byte flips of real JPEG, PNG, ``.keras``, ``.tflite``
and SavedModel files, fed to the checked loaders. Each ends in a correct load or in one of this package's
errors, which ``retinanet`` prints as one line (exit code 2) naming the file; never in an unexpected exception
(exit code 70). Derandomised: the same examples every run."""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from retinanet_testing import bccd_source

from keras_retinanet.cli.retinanet import error_message, is_known_error
from keras_retinanet.data.images import ImageError, inspect_image
from keras_retinanet.imaging import ImageReadError, decode_image

FRACTION = st.floats(0.0, 1.0, exclude_max=True)
# ("truncate", keep fraction) or ("flip", [(position fraction, bit), ...])
MUTATION = st.one_of(
    st.tuples(st.just("truncate"), FRACTION),
    st.tuples(st.just("flip"), st.lists(st.tuples(FRACTION, st.integers(0, 7)), min_size=1, max_size=8)),
)
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def mutate(data: bytes, mutation) -> bytes:
    kind, value = mutation
    if kind == "truncate":
        return data[: int(len(data) * value)]
    out = bytearray(data)
    for where, bit in value:
        out[int(len(out) * where)] ^= 1 << bit
    return bytes(out)


def assert_one_line_error(error: BaseException, path) -> None:
    """What ``retinanet`` prints for it: a known error on one line that names the file."""
    assert is_known_error(error), f"unexpected {type(error).__name__}: {error}"
    message = error_message(error)
    assert "\n" not in message and str(path) in message, message


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> dict[str, bytes]:
    import cv2

    jpeg = (bccd_source(["BloodImage_00000"]) / "JPEGImages" / "BloodImage_00000.jpg").read_bytes()
    image = decode_image(jpeg)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image[:120, :160], cv2.COLOR_RGB2BGR))
    assert ok
    return {"jpeg": jpeg, "png": png.tobytes()}


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_damaged_images_are_a_named_error_or_the_right_size(kind, image_files, tmp_path):
    original = image_files[kind]
    path = tmp_path / f"image.{'jpg' if kind == 'jpeg' else 'png'}"
    outcomes: collections.Counter = collections.Counter()

    @FUZZ
    @given(MUTATION)
    def check(mutation):
        path.write_bytes(mutate(original, mutation))
        try:
            info = inspect_image(path, verify="header")
        except ImageError as error:  # the data set reports it with the file and the record
            assert error.reason in ("unsupported_format", "truncated_image", "corrupt_image"), error.reason
            outcomes["refused"] += 1
            return
        try:
            image = decode_image(path.read_bytes(), name=str(path))
        except ImageReadError as error:
            assert_one_line_error(error, path)
            outcomes["undecodable"] += 1
            return
        assert image.dtype == np.uint8 and image.shape == (info.height, info.width, 3)
        outcomes["decoded"] += 1

    check()
    # JPEG: every truncation loses the end marker, every flip in the scans makes libjpeg warn. PNG: only the
    # header and the end are checked at load time; a flip in the pixel data fails at decoding (its CRC).
    assert outcomes["refused"] >= 5, outcomes
    if kind == "png":
        assert outcomes["undecodable"] >= 3, outcomes


def _load_and_expect(path: Path, load, outcomes: collections.Counter) -> None:
    try:
        load(path)
    except Exception as error:  # noqa: BLE001 - the property: only known errors
        assert_one_line_error(error, path)
        outcomes["error"] += 1
    else:
        outcomes["loaded"] += 1


def test_damaged_keras_files_are_a_named_error_or_a_retinanet(detector_like, tmp_path):
    from keras_retinanet.detectors import load_retinanet
    from keras_retinanet.model.retinanet import RetinaNet

    original = Path(detector_like["keras"]).read_bytes()
    path = tmp_path / "model.keras"

    def load(p):
        assert isinstance(load_retinanet(p), RetinaNet)

    outcomes: collections.Counter = collections.Counter()

    @settings(FUZZ, max_examples=20)  # ~0.8 s a load here
    @given(MUTATION)
    def check(mutation):
        path.write_bytes(mutate(original, mutation))
        _load_and_expect(path, load, outcomes)

    check()
    assert outcomes["error"] >= 5, outcomes  # the damage reached the loader's error paths


def test_damaged_tflite_files_are_a_named_error_or_a_detector(detector_like, tmp_path):
    from keras_retinanet.detectors import load_detector

    original = Path(detector_like["tflite"]).read_bytes()
    path = tmp_path / "model.tflite"

    def load(p):
        assert load_detector(p).image_size == (128, 128)

    outcomes: collections.Counter = collections.Counter()

    @FUZZ
    @given(MUTATION)
    def check(mutation):
        path.write_bytes(mutate(original, mutation))
        _load_and_expect(path, load, outcomes)

    check()
    assert outcomes["error"] >= 5, outcomes


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory, detector_like) -> Path:
    from keras_retinanet.detectors import load_retinanet
    from keras_retinanet.export.saved_model import build_saved_model

    folder = tmp_path_factory.mktemp("fuzz_export") / "saved_model"
    model = load_retinanet(detector_like["keras"])
    build_saved_model(model, folder, model.image_size)
    return folder


@pytest.mark.slow  # the export (~30 s) and 15 SavedModel loads (~2 s each here)
def test_damaged_saved_models_are_a_named_error_or_a_detector(saved_model_dir, tmp_path):
    from keras_retinanet.detectors import load_detector

    members = sorted(str(p.relative_to(saved_model_dir)) for p in saved_model_dir.rglob("*") if p.is_file())
    assert {"saved_model.pb", "variables/variables.index"} <= set(members)
    folder = tmp_path / "saved_model"

    def load(p):
        assert load_detector(p).class_names == ["circle", "square", "triangle"]

    @settings(FUZZ, max_examples=15)
    @given(st.sampled_from(members), MUTATION)
    def check(member, mutation):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(saved_model_dir, folder)
        target = folder / member
        target.write_bytes(mutate(target.read_bytes(), mutation))
        _load_and_expect(folder, load, outcomes)

    outcomes: collections.Counter = collections.Counter()
    check()
    assert outcomes["error"] >= 3, outcomes
