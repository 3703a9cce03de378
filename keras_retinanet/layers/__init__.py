"""RetinaNet's Keras layers: the feature pyramid and the two subnets."""

from keras_retinanet.layers.feature_pyramid import FeaturePyramid
from keras_retinanet.layers.heads import BoxHead, ClassificationHead

__all__ = ["BoxHead", "ClassificationHead", "FeaturePyramid"]
