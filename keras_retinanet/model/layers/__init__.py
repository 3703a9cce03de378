"""RetinaNet's Keras layers: the input normalisation, the feature pyramid and the two subnets."""

from keras_retinanet.backbones.normalization import ImageNormalization
from keras_retinanet.model.layers.feature_pyramid import FeaturePyramid
from keras_retinanet.model.layers.heads import BoxHead, ClassificationHead

__all__ = ["BoxHead", "ClassificationHead", "FeaturePyramid", "ImageNormalization"]
