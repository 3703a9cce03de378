"""Training a RetinaNet: :class:`TrainConfig`, :func:`train` and its Keras callbacks.

Names are imported on first use (PEP 562): ``TrainConfig`` does not import TensorFlow; ``train`` does.
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
