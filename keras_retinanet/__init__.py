"""keras_retinanet: RetinaNet object detection for Keras 3 on TensorFlow.

The public names are imported on first use (PEP 562): ``import keras_retinanet`` imports neither TensorFlow
nor Keras. Importing it is enough for ``keras.saving.load_model`` to load the models it saves.

The rooms, from the bottom up (tests/test_import_graph.py keeps every import pointing down):

- ``model/``: the RetinaNet, its config and presets, anchors, matching, box coding, targets, decoding, losses,
  the inference graph, and its layers (pyramid and heads);
- ``backbones/``: the backbone registry, input normalisation, BatchNorm folding, MobileNet-MultiAVG and
  ``torchvision/`` (ResNet, its weights, state-dict reading);
- ``data/``: dataset formats, augmentation, the ``tf.data`` pipeline;
- ``detectors/``: one interface over every runtime (Keras, SavedModel, LiteRT, MediaPipe), latency timing;
- ``evaluation/``, ``export/``, ``convert/``: COCO metrics and reports, SavedModel and TFLite files,
  checkpoints of other libraries;
- ``training/``: configs, the loop, callbacks, schedules, fine-tuning, ``tf.distribute``;
- ``cli/``: the ``retinanet`` command, one module per subcommand.

Beside them: ``boxes``, ``imaging``, ``visualize``, ``conventions``, ``atomic``; ``_`` modules are plumbing.
"""

from keras_retinanet._lazy import lazy_namespace
from keras_retinanet._registration import register_when_keras_is_imported

__version__ = "0.4.0"

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "AnchorGenerator": "model.anchors",
        "BoxCoder": "model.box_coder",
        "BoxHead": "model.layers",
        "BoxRegressionLoss": "model.losses",
        "ClassificationHead": "model.layers",
        "DetectionDecoder": "model.decode",
        "FeaturePyramid": "model.layers",
        "FocalLoss": "model.losses",
        "LabelEncoder": "model.targets",
        "Matcher": "model.matching",
        "ModelConfig": "model.config",
        "RetinaNet": "model.retinanet",
        "WarmupSchedule": "training.schedules",
        "available_backbones": "backbones.registry",
        "build_backbone": "backbones.registry",
        "convert_torchvision_retinanet": "convert.torchvision",
        "finetune_model": "training.finetune",
        "register_backbone": "backbones.registry",
        "retinanet_from_preset": "model.presets",
    },
)
__all__ = sorted(__dir__())
register_when_keras_is_imported()
