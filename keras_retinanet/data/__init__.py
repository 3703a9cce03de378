"""Datasets for RetinaNet: readers (VOC, COCO, CSV, YOLO, TFDS) -> common examples -> ``tf.data`` pipelines::

train = data.load_dataset("voc:/data/bccd/BCCD:trainval", skip_bad=True)
ds = data.make_training_dataset(train, model.label_encoder(), image_size=512, batch_size=8, seed=0)
"""

from keras_retinanet.data.dataset import Dataset
from keras_retinanet.data.loading import load_dataset
from keras_retinanet.data.spec import DatasetSpec, parse_spec
from keras_retinanet.data.validation import DataError, SkipReport

__all__ = [
    "DataError",
    "Dataset",
    "DatasetSpec",
    "SkipReport",
    "load_dataset",
    "make_inference_dataset",
    "make_training_dataset",
    "parse_spec",
    "restore_boxes",
]

_PIPELINE = ("make_training_dataset", "make_inference_dataset", "restore_boxes")


def __getattr__(name: str):
    # The pipeline imports TensorFlow; loading it lazily keeps `retinanet --help` and the readers light.
    if name in _PIPELINE:
        from keras_retinanet.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'keras_retinanet.data' has no attribute {name!r}")
