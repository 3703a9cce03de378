"""Images for int8 calibration and for the parity figures, read from any data set spec."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_retinanet.export.config import ExportError
from keras_retinanet.imaging import RESIZE_RULES, median_aspect_ratio, read_image


def _examples(spec: str, what: str) -> list[dict]:
    """The examples of dataset ``spec``, records with bad boxes kept (their images are good); ExportError
    naming ``what`` the data was for when it cannot be read."""
    from keras_retinanet.data import load_dataset

    try:
        return load_dataset(spec, skip_bad=True).examples
    except Exception as err:  # noqa: BLE001 - readers raise many types; all mean "cannot read the data"
        raise ExportError(f"cannot read {what} ({type(err).__name__}: {err})") from err


def calibration_paths(spec: str, limit: int, seed: int = 0) -> list[str]:
    """Image paths of up to ``limit`` random examples of dataset ``spec``; ExportError when there are none."""
    paths = [str(example["image_path"]) for example in _examples(spec, f"calibration data {spec!r}")]
    if not paths:
        raise ExportError(f"calibration data {spec!r} holds no images")
    order = np.random.default_rng(seed).permutation(len(paths))[:limit]
    return [paths[i] for i in order]


def load_canvases(
    paths: Sequence[str], image_size: Sequence[int], resize: str = "letterbox"
) -> list[np.ndarray]:
    """uint8 (H, W, 3) canvases of images resized by ``resize`` (``imaging.RESIZE_RULES``); raises
    ``imaging.ImageReadError`` naming a file that cannot be read."""
    rule = RESIZE_RULES[resize]
    return [rule(read_image(p), image_size)[0] for p in paths]


def data_aspect_ratio(spec: str) -> float:
    """The median width / height of the images of dataset ``spec``; ExportError if it cannot be read."""
    ratio = median_aspect_ratio(_examples(spec, f"{spec!r} for the input size"))
    if ratio is None:
        raise ExportError(f"{spec!r} has no image sizes to take the input size from")
    return ratio
