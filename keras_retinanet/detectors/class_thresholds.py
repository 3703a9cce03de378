"""Per-class score thresholds: the file ``retinanet evaluate --report`` writes and ``--class-thresholds`` reads.

The file is JSON (YAML is read too, so a hand-written one may be either)::

    {
      "format": "keras_retinanet class thresholds",
      "version": 1,
      "thresholds": {"RBC": 0.41, "WBC": 0.52, "Platelets": 0.33},
      ...                      # anything else (how the values were chosen) is informative only
    }

A bare mapping ``{"RBC": 0.41, ...}`` is accepted too. Keys are class names (class ids when the model has no
names); values are scores in [0, 1]. A detection of class k is kept when its score is at least
``thresholds[k]`` (and the global ``--score-threshold``); a class not named has no extra filter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FORMAT_NAME = "keras_retinanet class thresholds"
FORMAT_VERSION = 1


class ClassThresholdsError(ValueError):
    """A class thresholds file that cannot be read or does not fit the model's classes."""


def read_class_thresholds(path: str | os.PathLike) -> dict[str, float]:
    """``{class name: threshold}`` from a thresholds file (format in the module docstring).

    Raises:
        ClassThresholdsError: missing or unparsable file, or a value that is not a number in [0, 1].
    """
    import yaml

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except OSError as err:
        raise ClassThresholdsError(f"class thresholds file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ClassThresholdsError(f"class thresholds file {path} is not JSON or YAML: {err}") from None
    # A written file may hold no class at all (`evaluate --report` on a model without a true positive): that
    # is "no extra filtering"; a bare empty mapping is more likely a mistake.
    written = isinstance(content, Mapping) and "thresholds" in content
    if written:
        content = content["thresholds"]
    if not isinstance(content, Mapping) or not (content or written):
        raise ClassThresholdsError(
            f"class thresholds file {path}: expected a mapping of class name to score under 'thresholds'"
        )
    thresholds = {}
    for name, value in content.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ClassThresholdsError(
                f"class thresholds file {path}: class {name!r}: threshold {value!r} is not a number in [0, 1]"
            )
        thresholds[str(name)] = float(value)
    return thresholds


def write_class_thresholds(path: str | os.PathLike, thresholds: Mapping[str, float], **info: Any) -> None:
    """Write ``{class name: threshold}`` (and informative ``info`` fields) in the format of the module docstring."""
    document = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **info}
    document["thresholds"] = {str(name): round(float(value), 6) for name, value in thresholds.items()}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


def class_threshold_array(
    thresholds: Mapping[str, float] | str | os.PathLike,
    class_names: Sequence[str],
    num_classes: int | None = None,
) -> np.ndarray:
    """(K,) float32 thresholds indexed by class id (0.0 for classes not named) from ``{name: threshold}`` or a
    thresholds file. Without ``class_names`` the keys are class ids and ``num_classes`` (if given) is K.

    Raises:
        ClassThresholdsError: a name the model does not have (the model's names are listed).
    """
    source = "class thresholds"
    if isinstance(thresholds, (str, os.PathLike)):
        source = f"class thresholds file {os.fspath(thresholds)}"
        thresholds = read_class_thresholds(thresholds)
    names = [str(n) for n in class_names]
    if names:
        size = len(names)
    elif num_classes is not None:
        size = int(num_classes)
    else:  # a model without names: the keys are the class ids
        size = 1 + max((int(n) for n in thresholds if str(n).isdigit()), default=-1)
    index = {name: i for i, name in enumerate(names)}
    array = np.zeros(size, np.float32)
    for name, value in thresholds.items():
        k = index.get(str(name))
        if k is None and not names and str(name).isdigit() and int(name) < size:
            k = int(name)
        if k is None:
            known = ", ".join(names) if names else f"ids 0..{size - 1}"
            raise ClassThresholdsError(
                f"{source}: class {name!r} is not one of the model's classes ({known})"
            )
        array[k] = value
    return array
