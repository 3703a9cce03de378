"""RetinaNet's Keras layers: the input normalisation, the feature pyramid and the two subnets."""

from keras_retinanet.layers.feature_pyramid import FeaturePyramid
from keras_retinanet.layers.heads import BoxHead, ClassificationHead
from keras_retinanet.layers.normalization import ImageNormalization

__all__ = ["BoxHead", "ClassificationHead", "FeaturePyramid", "ImageNormalization"]
