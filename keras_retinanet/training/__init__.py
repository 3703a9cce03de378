"""Training a RetinaNet: configuration, the training loop and its Keras callbacks.

- ``config.py``: :class:`TrainConfig` (data, augmentation, optimisation, hardware, logging; contains a
  :class:`~keras_retinanet.model.config.ModelConfig` as ``config.model``, also importable from here). Imports
  neither TensorFlow nor Keras.
- ``loop.py``: :func:`train` (a whole run and its folder), :func:`build_optimizer`, :func:`build_callbacks`,
  :func:`write_run_files`.
- ``callbacks.py``: :class:`EvaluationCallback`, :class:`UnfreezeBackbone`, :class:`StopOnNaN`,
  :class:`LearningRateLogger`, :class:`LastCheckpoint`, :class:`BestCheckpoint`, :class:`MetricsCSVLogger`,
  :class:`TrainingBackup`, :class:`PredictionImages`, :func:`freeze_batchnorm`.
- ``run_folder.py``: the run folder's layout and training states, :func:`plan_run` (may a configuration use
  this folder?), :class:`RunFolderError`. No TensorFlow.

Names are imported on first use (PEP 562), so ``from keras_retinanet.training import TrainConfig`` does not
import TensorFlow; ``train`` and the callbacks do.
"""

from keras_retinanet._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(
    __name__,
    {
        "BestCheckpoint": "callbacks",
        "EvaluationCallback": "callbacks",
        "LastCheckpoint": "callbacks",
        "LearningRateLogger": "callbacks",
        "MetricsCSVLogger": "callbacks",
        "ModelConfig": ".model.config",
        "NO_DECAY_NAMES": "loop",
        "PredictionImages": "callbacks",
        "StopOnNaN": "callbacks",
        "RunFolderError": "run_folder",
        "TrainConfig": "config",
        "TrainingBackup": "callbacks",
        "UnfreezeBackbone": "callbacks",
        "build_callbacks": "loop",
        "build_optimizer": "loop",
        "freeze_batchnorm": "callbacks",
        "train": "loop",
        "write_run_files": "loop",
    },
)
__all__ = sorted(__dir__())
