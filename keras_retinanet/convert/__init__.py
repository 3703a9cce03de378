"""Converters from other frameworks' checkpoints (today: torchvision) to this project's Keras models.

``keras_retinanet.convert.checkpoints`` reads state dicts without TensorFlow; ``keras_retinanet.convert.torchvision``
maps torchvision's RetinaNets and ResNets onto Keras models (it imports Keras).
"""

from keras_retinanet.convert.checkpoints import CheckpointError, load_state_dict, save_state_dict

__all__ = ["CheckpointError", "load_state_dict", "save_state_dict"]
