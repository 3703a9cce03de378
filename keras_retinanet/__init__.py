"""keras_retinanet: RetinaNet object detection for Keras 3 on TensorFlow.

The public names are imported on first use (PEP 562, :func:`keras_retinanet.lazy.lazy_namespace`):
``import keras_retinanet`` is instant and imports neither TensorFlow nor Keras; ``keras_retinanet.RetinaNet``
(or ``from keras_retinanet import RetinaNet``) imports what that name needs. Subpackages: ``data``,
``detectors``, ``evaluation``, ``export``, ``training``, ``benchmark`` (``from keras_retinanet import data``).
Importing the package is enough for ``keras.saving.load_model`` to load the models it saves.
"""

from keras_retinanet.lazy import lazy_namespace
from keras_retinanet.registration import register_when_keras_is_imported

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
        "ModelConfig": "model_config",
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

# `keras.saving.load_model` finds every class a saved model holds once this package is imported, as with
# KerasHub, yet `import keras_retinanet` stays free of TensorFlow until Keras itself is imported
# (keras_retinanet/registration.py says how).
register_when_keras_is_imported()
