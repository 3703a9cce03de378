"""``--image-shape data|square``: the network input a training run uses, decided before anchors are fitted.

A phone app feeds the model whole photos stretched to its input (MediaPipe Tasks does, with no letterbox), so a
model should learn on inputs of its photos' shape: a square letterbox of 4:3 photos is a quarter padding, and
heads that normalise over the feature map (GroupNorm) learn statistics that include it. With ``data`` (the
default recipe), a square ``--image-size N`` becomes N on the longer side and the training images' median aspect
ratio on the other (:func:`keras_retinanet.imaging.shape_for_aspect_ratio`): 288x384 for BCCD's 640x480 photos.
The shape chosen goes into ``config.yaml`` and the model, so evaluation and export use it by default.
"""

from __future__ import annotations

from keras_retinanet.imaging import median_aspect_ratio, parse_image_size, shape_for_aspect_ratio
from keras_retinanet.training.config import TrainConfig


def resolve_image_shape(
    config: TrainConfig, dataset, previous: TrainConfig | None = None
) -> tuple[TrainConfig, str]:
    """``config`` with the input size it trains at, and a few words on where that size comes from.

    Args:
        config: the run's configuration; ``config.model.image_size`` is N, (N, N) or (H, W).
        dataset: the loaded training set (its examples' ``"width"`` and ``"height"``).
        previous: the configuration of the run folder being resumed: its size is kept (the model was built
            for it), as :func:`same_requested_size` lets ``plan_run`` accept.
    """
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
    """Whether ``config`` asks for the size ``previous`` resolved: both ``image_shape=data``, and the square
    ``--image-size N`` given now is the longer side recorded then (``config.yaml`` holds the resolved H, W)."""
    if previous.image_shape != "data" or config.image_shape != "data":
        return False
    before, now = parse_image_size(previous.model.image_size), parse_image_size(config.model.image_size)
    return now[0] == now[1] and max(before) == now[0]
