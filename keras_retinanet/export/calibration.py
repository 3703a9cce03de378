"""Images for int8 calibration and for the parity figures, read from any data set spec."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_retinanet.export.config import ExportError
from keras_retinanet.imaging import letterbox, read_image


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


def load_canvases(paths: Sequence[str], image_size: Sequence[int]) -> list[np.ndarray]:
    """Read and letterbox images to uint8 (H, W, 3) canvases (``imaging.ImageReadError`` names a bad file)."""
    return [letterbox(read_image(p), image_size)[0] for p in paths]
