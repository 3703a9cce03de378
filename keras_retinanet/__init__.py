"""keras_retinanet: RetinaNet object detection for Keras 3 on TensorFlow.

The public names are imported on first use (PEP 562, :func:`keras_retinanet.lazy.lazy_namespace`):
``import keras_retinanet`` is instant and imports neither TensorFlow nor Keras; ``keras_retinanet.RetinaNet``
(or ``from keras_retinanet import RetinaNet``) imports what that name needs. Subpackages: ``data``,
``detectors``, ``evaluation``, ``export``, ``training``, ``benchmark`` (``from keras_retinanet import data``).
"""

from keras_retinanet.lazy import lazy_namespace

__version__ = "0.2.0"

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "AnchorGenerator": "anchors",
        "BoxCoder": "box_coder",
        "BoxHead": "layers",
        "BoxRegressionLoss": "losses",
        "ClassificationHead": "layers",
        "DetectionDecoder": "decode",
        "FeaturePyramid": "layers",
        "FocalLoss": "losses",
        "LabelEncoder": "targets",
        "Matcher": "matching",
        "RetinaNet": "model",
        "WarmupSchedule": "schedules",
        "available_backbones": "backbones",
        "build_backbone": "backbones",
        "convert_torchvision_retinanet": "convert.torchvision",
        "finetune_model": "finetune",
        "retinanet_from_preset": "presets",
    },
)
__all__ = sorted(__dir__())
