"""Images for int8 calibration and for the parity figures, read from any data set spec."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_retinanet.export.config import ExportError
from keras_retinanet.imaging import RESIZE_RULES, median_aspect_ratio, read_image


def calibration_paths(spec: str, limit: int, seed: int = 0) -> list[str]:
    """Image paths of up to ``limit`` examples of dataset ``spec`` (``keras_retinanet.data.load_dataset``).

    Raises ExportError when the spec cannot be read or holds no images.
    """
    try:
        from keras_retinanet.data import load_dataset

        # Calibration needs only the images: records with bad boxes are still good images.
        dataset = load_dataset(spec, skip_bad=True)
        paths = [str(example["image_path"]) for example in dataset.examples]
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - readers raise many types; all mean "cannot read the data"
        raise ExportError(f"cannot read calibration data {spec!r} ({type(err).__name__}: {err})") from err
    if not paths:
        raise ExportError(f"calibration data {spec!r} holds no images")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))[:limit]
    return [paths[i] for i in order]


def load_canvases(
    paths: Sequence[str], image_size: Sequence[int], resize: str = "letterbox"
) -> list[np.ndarray]:
    """Read images and resize them to uint8 (H, W, 3) canvases by ``resize`` (``imaging.RESIZE_RULES``:
    "letterbox" as the Keras model and the SavedModel see images, "stretch" as MediaPipe feeds a .tflite).

    Raises ``imaging.ImageReadError`` naming a file that cannot be read.
    """
    rule = RESIZE_RULES[resize]
    return [rule(read_image(p), image_size)[0] for p in paths]


def data_aspect_ratio(spec: str) -> float:
    """The median width / height of the images of dataset ``spec``; ExportError if it cannot be read."""
    from keras_retinanet.data import load_dataset

    try:
        examples = load_dataset(spec, skip_bad=True).examples
    except Exception as err:  # noqa: BLE001 - readers raise many types; all mean "cannot read the data"
        raise ExportError(f"cannot read {spec!r} for the input size ({type(err).__name__}: {err})") from err
    ratio = median_aspect_ratio(examples)
    if ratio is None:
        raise ExportError(f"{spec!r} has no image sizes to take the input size from")
    return ratio
