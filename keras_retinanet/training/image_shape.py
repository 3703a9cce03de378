"""``--image-shape data|square``: the network input a training run uses, decided before anchors are fitted.

With ``data``, a square ``--image-size N`` becomes N on the longer side and the training images' median aspect
ratio on the other (288x384 for 640x480 photos): a phone app stretches whole photos to the model's input.
"""

from __future__ import annotations

from keras_retinanet.imaging import median_aspect_ratio, parse_image_size, shape_for_aspect_ratio
from keras_retinanet.training.config import TrainConfig


def resolve_image_shape(
    config: TrainConfig, dataset, previous: TrainConfig | None = None
) -> tuple[TrainConfig, str]:
    """``config`` with the input size it trains at, and a few words on where that size comes from.
    ``previous``: the configuration of the run folder being resumed, whose size is kept."""
    height, width = parse_image_size(config.model.image_size)
    if config.image_shape == "square" or height != width:
        return config, "as given" if height != width else "square letterbox (--image-shape square)"
    if previous is not None and same_requested_size(previous, config):
        return config.update({"image_size": tuple(previous.model.image_size)}), "the run folder's"
    ratio = median_aspect_ratio(dataset.examples)
    if ratio is None:
        return config, "square: the training images have no recorded sizes"
    shape = shape_for_aspect_ratio(ratio, height)
    note = f"the training images' median aspect ratio, {ratio:.2f}, with the longer side {height}"
    return config.update({"image_size": shape}), note


def same_requested_size(previous: TrainConfig, config: TrainConfig) -> bool:
    """Whether ``config`` asks for the size ``previous`` resolved (both ``data``, N now the longer side then)."""
    if previous.image_shape != "data" or config.image_shape != "data":
        return False
    before, now = parse_image_size(previous.model.image_size), parse_image_size(config.model.image_size)
    return now[0] == now[1] and max(before) == now[0]
