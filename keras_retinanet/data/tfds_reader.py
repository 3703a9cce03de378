"""TensorFlow Datasets reader for any detection dataset with ``objects/bbox`` and ``objects/label`` (``voc/2007``,
``coco/2017``, ...): normalised ``(ymin, xmin, ymax, xmax)`` become xyxy pixels by each image header's size;
``is_difficult`` / ``is_crowd`` become ``ignore``. Images stay in TFDS's files (:attr:`Dataset.encoded_images`
streams them again in example order). Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from keras_retinanet.data.dataset import ExampleBuilder
from keras_retinanet.data.images import ImageError, inspect_image
from keras_retinanet.data.validation import DataError, SkipReport


def _decode_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_tfds(
    name: str,
    split: str,
    report: SkipReport,
    class_names: Sequence[str] | None = None,
    data_dir: str | None = None,
    verify: str = "header",
    download: bool = False,
) -> tuple[list[dict], list[str], Callable]:
    """Reads a TFDS detection dataset.

    Returns:
        (common examples, class names, ``encoded_images()`` -> ``tf.data.Dataset`` of encoded image bytes
        aligned with the examples).
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if download:
            builder.download_and_prepare()
    except Exception as e:  # DatasetNotFoundError, registry errors: turn into a readable message
        raise DataError(f"TFDS dataset {name!r} cannot be loaded (data_dir={data_dir}): {e}") from None
    features = builder.info.features
    objects = features["objects"] if "objects" in features else None  # noqa: SIM401 (FeaturesDict has no .get)
    if objects is None or "bbox" not in objects or "label" not in objects or "image" not in features:
        raise DataError(
            f"TFDS dataset {name!r} has no image + objects/bbox + objects/label features: "
            f"not a detection dataset"
        )
    label_names = list(objects["label"].names)
    class_names = list(class_names) if class_names is not None else label_names
    ignore_key = next((k for k in ("is_difficult", "is_crowd") if k in objects), None)

    def load():
        try:
            return builder.as_dataset(
                split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
            )
        except Exception as e:  # not prepared, unknown split
            raise DataError(
                f"TFDS dataset {name!r} split {split!r} cannot be read (data_dir={data_dir}; "
                f"prepare it with `tfds build {name} --data_dir DIR`): {e}"
            ) from None

    builder_ = ExampleBuilder(class_names, report, verify)
    kept, total = [], 0
    for index, ex in enumerate(load().as_numpy_iterator()):
        image_bytes = ex["image"]
        path = f"tfds:{name}/{split}[{index}]"
        if "image/filename" in ex:
            path += f" ({_decode_str(ex['image/filename'])})"
        image_id = int(ex["image/id"]) if "image/id" in ex else index
        bboxes = np.asarray(ex["objects"]["bbox"], np.float64).reshape(-1, 4)
        labels = np.asarray(ex["objects"]["label"]).reshape(-1)
        flags = (
            np.asarray(ex["objects"][ignore_key]).reshape(-1) if ignore_key else np.zeros(len(labels), bool)
        )
        total = index + 1
        try:
            info = inspect_image(image_bytes, verify=verify)
        except ImageError:
            info = None  # reported by builder.build below
        width, height = (info.width, info.height) if info else (1, 1)
        objs = []
        for k, ((ymin, xmin, ymax, xmax), label, flag) in enumerate(zip(bboxes, labels, flags, strict=True)):
            label_name = label_names[label] if 0 <= label < len(label_names) else str(label)
            objs.append(
                (
                    f"object {k} ({label_name})",
                    label_name,
                    (xmin * width, ymin * height, xmax * width, ymax * height),
                    bool(flag),
                )
            )
        if (
            builder_.build(path, image_id, objs, path, f"example {index}", image_bytes=image_bytes)
            is not None
        ):
            kept.append(index)

    mask = np.zeros(total, bool)
    mask[kept] = True

    def encoded_images() -> tf.data.Dataset:
        keep = tf.constant(mask)
        ds = load().enumerate().filter(lambda i, ex: keep[i])
        return ds.map(lambda i, ex: ex["image"])

    return builder_.examples, class_names, encoded_images
