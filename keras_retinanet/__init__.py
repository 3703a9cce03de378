"""keras_retinanet: RetinaNet object detection for Keras 3 on TensorFlow."""

from keras_retinanet.anchors import AnchorGenerator
from keras_retinanet.backbones import available_backbones, build_backbone
from keras_retinanet.box_coder import BoxCoder
from keras_retinanet.decode import DetectionDecoder
from keras_retinanet.layers import BoxHead, ClassificationHead, FeaturePyramid
from keras_retinanet.losses import BoxRegressionLoss, FocalLoss
from keras_retinanet.matching import Matcher
from keras_retinanet.model import RetinaNet
from keras_retinanet.presets import retinanet_from_preset
from keras_retinanet.schedules import WarmupSchedule
from keras_retinanet.targets import LabelEncoder

__version__ = "0.1.0"

__all__ = [
    "AnchorGenerator",
    "BoxCoder",
    "BoxHead",
    "BoxRegressionLoss",
    "ClassificationHead",
    "DetectionDecoder",
    "FeaturePyramid",
    "FocalLoss",
    "LabelEncoder",
    "Matcher",
    "RetinaNet",
    "WarmupSchedule",
    "available_backbones",
    "build_backbone",
    "retinanet_from_preset",
]
