"""Converters from other frameworks' checkpoints (today: torchvision) to this project's Keras models.

``keras_retinanet.convert.torchvision`` maps torchvision's RetinaNets onto Keras models (it imports Keras); the
state dicts are read by :mod:`keras_retinanet.backbones.torchvision.state_dict` (no TensorFlow) and ResNet
bodies loaded by :mod:`keras_retinanet.backbones.torchvision.weights`.
"""

from keras_retinanet.backbones.torchvision.state_dict import CheckpointError, load_state_dict, save_state_dict

__all__ = ["CheckpointError", "load_state_dict", "save_state_dict"]
