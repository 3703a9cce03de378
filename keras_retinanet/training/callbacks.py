"""Keras callbacks of a RetinaNet training, each usable on its own in ``model.fit(..., callbacks=[...])``.

- :class:`EvaluationCallback`: COCO metrics (pycocotools) of the model being trained on a validation set,
  written into the epoch logs as ``val_AP``, ``val_AP50``, ... for checkpoints and early stopping.
- :class:`UnfreezeBackbone`: trains only the pyramid and heads for the first epochs, then everything.
- :class:`StopOnNaN`: stops at the first non-finite loss with a message that says what to try.
- :class:`LearningRateLogger`: the optimiser's learning rate in the epoch logs (CSV, TensorBoard).
- :class:`BestCheckpoint`: ``ModelCheckpoint(save_best_only=True)`` that skips the epochs not evaluated.
- :class:`MetricsCSVLogger`: ``CSVLogger`` whose columns include metrics first logged after epoch 1.
- :class:`PredictionImages`: a few validation images with their predicted boxes, in TensorBoard.

:func:`freeze_batchnorm` puts a model's BatchNorm layers in inference mode (used by ``UnfreezeBackbone`` and
by ``train`` with ``freeze_batchnorm``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_retinanet.batchnorm import batchnorm_layers


def freeze_batchnorm(model: keras.Model) -> int:
    """Puts every BatchNorm layer of ``model`` in inference mode with fixed statistics and parameters
    (``trainable = False``: Keras then normalises with the moving averages and never updates them).

    For small-batch fine-tuning, where batch statistics are too noisy. Returns the number of layers frozen.
    """
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.trainable = False
    return len(layers)


class EvaluationCallback(keras.callbacks.Callback):
    """Runs the COCO evaluation (``keras_retinanet.evaluation``) on a validation set during ``fit``.

    Every ``every_n_epochs`` epochs (and after the last epoch), the model being trained detects objects in the
    validation images through a :class:`keras_retinanet.detectors.KerasDetector` (letterboxed to
    ``image_size``, the model's own decoder settings unless ``score_threshold`` / ``max_detections`` are
    given) and the metrics go into ``logs`` as ``{prefix}AP``, ``{prefix}AP50``, ``{prefix}AP75``,
    ``{prefix}APs``, ``{prefix}APm``, ``{prefix}APl``, ``{prefix}AR100`` (default prefix ``val_``), so
    ``ModelCheckpoint`` and ``EarlyStopping`` can monitor them (``monitor="val_AP", mode="max"``). Place this
    callback **before** those in the callback list: Keras calls callbacks in order and they read the same
    ``logs`` dict.

    Undefined metrics (pycocotools' -1, e.g. ``APs`` without small objects) are logged as NaN. On epochs that
    are skipped nothing is logged (:class:`BestCheckpoint` waits for the evaluated epochs).

    Args:
        data: a data set with ``.examples`` and ``.class_names`` (``keras_retinanet.data.load_dataset``), a
            dataset spec string, or a list of common example dicts.
        every_n_epochs: evaluate after epochs ``n - 1, 2n - 1, ...`` (0-based) and after the last epoch.
        class_names: class names of a plain example list (default: the model's).
        batch_size: images per detection call.
        image_size: letterbox size (int or (H, W)); default the model's ``input_size`` (its training size).
        score_threshold, max_detections: None keeps the model's decoder settings (its ``score_threshold``,
            0.05 by default, and ``max_detections``, 100, as COCO); a value overrides them for the evaluation.
        prefix: prepended to the metric names in ``logs``.
        max_images: evaluate only the first N images (quick checks on big validation sets).
        pr_curve_dir: write per-class precision-recall PNGs there at each evaluation.
        verbose: 1 prints one line of metrics per evaluation.

    Attributes:
        history: list of ``(epoch, metrics)`` with the full metric dicts (including ``per_class``).
        logged_keys: the names this callback writes into ``logs``.
    """

    def __init__(
        self,
        data: Any,
        every_n_epochs: int = 1,
        class_names: Sequence[str] | None = None,
        batch_size: int = 8,
        image_size: int | Sequence[int] | None = None,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        prefix: str = "val_",
        max_images: int | None = None,
        pr_curve_dir: str | os.PathLike | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        from keras_retinanet.evaluation import METRIC_KEYS, resolve_examples

        examples, names = resolve_examples(data, class_names)
        if max_images is not None:
            examples = examples[:max_images]
        if not examples:
            raise ValueError("EvaluationCallback needs at least one validation example")
        self.examples = examples
        self.class_names = names
        self.every_n_epochs = int(every_n_epochs)
        self.batch_size = int(batch_size)
        self.image_size = image_size
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.prefix = prefix
        self.metric_keys = tuple(METRIC_KEYS)
        self.logged_keys = [f"{prefix}{key}" for key in self.metric_keys]
        self.pr_curve_dir = pr_curve_dir
        self.verbose = verbose
        self.history: list[tuple[int, dict]] = []
        self._last_epoch: int | None = None
        self._detector = None

    def on_train_begin(self, logs=None):
        self._last_epoch = (self.params or {}).get("epochs")

    def _due(self, epoch: int) -> bool:
        last = self._last_epoch is not None and epoch + 1 >= self._last_epoch
        return (epoch + 1) % self.every_n_epochs == 0 or last

    def evaluate(self) -> dict:
        """Evaluates the current model now; returns the full metrics dict."""
        from keras_retinanet.detectors import KerasDetector
        from keras_retinanet.evaluation import evaluate_model

        # One detector per model: its traced detection function is reused from one evaluation to the next.
        if self._detector is None or self._detector.model is not self.model:
            self._detector = KerasDetector(
                self.model, self.image_size, self.score_threshold, self.max_detections
            )
        names = self.class_names or list(getattr(self.model, "class_names", []) or [])
        return evaluate_model(
            self._detector,
            self.examples,
            class_names=names,
            batch_size=self.batch_size,
            pr_curve_dir=self.pr_curve_dir,
            progress=False,
        )

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        metrics = self.evaluate()
        self.history.append((epoch, metrics))
        if logs is not None:
            for key in self.metric_keys:
                value = float(metrics[key])
                logs[f"{self.prefix}{key}"] = value if value >= 0 else math.nan
        if self.verbose:
            text = " - ".join(
                f"{self.prefix}{key}: {metrics[key]:.4f}" for key in self.metric_keys if metrics[key] >= 0
            )
            print(f"\nEpoch {epoch + 1}: {text}")


class UnfreezeBackbone(keras.callbacks.Callback):
    """Trains only the pyramid and heads for the first ``epochs`` epochs, then the whole model.

    The backbone (``model.backbone``) is frozen (``trainable = False``: no gradient, BatchNorm in inference
    mode) at the beginning of epoch 0 and made trainable at the beginning of epoch ``epochs``; with
    ``keep_batchnorm_frozen`` its BatchNorm layers stay frozen after that (small batches). An optimiser not
    yet built is built at the start of training for every variable that can train, the backbone's included,
    so that it can update them after the unfreezing.
    """

    def __init__(self, epochs: int, keep_batchnorm_frozen: bool = False):
        super().__init__()
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.epochs = int(epochs)
        self.keep_batchnorm_frozen = keep_batchnorm_frozen

    def on_train_begin(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # Keras builds the optimiser at the first step, for the variables trainable then: without the
            # frozen backbone's, and unfreezing would fail ("Unknown variable"). Every variable that can train:
            optimizer.build([variable for variable in self.model.weights if variable.trainable])

    def on_epoch_begin(self, epoch, logs=None):
        trainable = epoch >= self.epochs
        if self.model.backbone.trainable == trainable:
            return
        self.model.backbone.trainable = trainable
        if trainable and self.keep_batchnorm_frozen:
            freeze_batchnorm(self.model.backbone)
        # The compiled step captured the old list of trainable variables.
        self.model.make_train_function(force=True)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimiser's current learning rate to the epoch logs as ``learning_rate`` (CSV, TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss with a message that says where and what to try.

    Attributes:
        message: None, or the message printed when training was stopped.
    """

    def __init__(self):
        super().__init__()
        self.message: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(np.asarray(loss).reshape(-1)[0])):
            self.message = (
                f"training stopped: the loss became {float(np.asarray(loss).reshape(-1)[0])} at epoch "
                f"{self._epoch + 1}, step {batch + 1}. Lower the learning rate, keep gradient clipping on "
                "(clip_norm), lengthen the warm-up, or check the data (`retinanet data check`)."
            )
            print(self.message)
            self.model.stop_training = True


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint(save_best_only=True)`` that waits quietly for the epochs that were evaluated.

    With ``eval_every > 1`` most epochs have no ``val_AP``; Keras' own callback warns on each of them.
    """

    def __init__(self, filepath: str, monitor: str = "val_AP", mode: str = "max", **kwargs):
        super().__init__(filepath, monitor=monitor, mode=mode, save_best_only=True, **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        if logs and self.monitor in logs:
            super().on_epoch_end(epoch, logs)


class MetricsCSVLogger(keras.callbacks.CSVLogger):
    """``CSVLogger`` whose columns always include ``extra_keys`` (empty on the epochs that lack them).

    Keras fixes the columns at the first epoch, so metrics first logged later (validation AP every N epochs)
    would never reach the file.
    """

    def __init__(self, filename: str, extra_keys: Sequence[str] = (), **kwargs):
        super().__init__(filename, **kwargs)
        self.extra_keys = list(extra_keys)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        for key in self.extra_keys:
            logs.setdefault(key, "")
        super().on_epoch_end(epoch, logs)


class PredictionImages(keras.callbacks.Callback):
    """Writes a few images with their predicted boxes to TensorBoard after every epoch.

    The summary is an image summary named ``predictions`` in ``log_dir/predictions``, step = epoch (0-based):
    ``len(images)`` (H, W, 3) uint8 images with the detections of ``model.detect`` at or above
    ``score_threshold`` drawn by :func:`keras_retinanet.visualize.draw_detections`.

    Args:
        images: (B, H, W, 3) RGB in [0, 255] (uint8 or float), as the model takes them (letterboxed).
        log_dir: the TensorBoard folder (the ``TensorBoard`` callback's ``log_dir``).
        class_names: names drawn with the scores.
        score_threshold: detections below it are not drawn.
    """

    def __init__(
        self,
        images: np.ndarray,
        log_dir: str | os.PathLike,
        class_names: Sequence[str],
        score_threshold: float = 0.3,
    ):
        super().__init__()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"PredictionImages needs (B, H, W, 3) images, got shape {images.shape}")
        self.images = images
        self.class_names = list(class_names)
        self.log_dir = os.fspath(log_dir)
        self.score_threshold = float(score_threshold)
        self._writer = None

    def drawn_images(self) -> np.ndarray:
        """(B, H, W, 3) uint8: the images with the current model's detections drawn."""
        from keras_retinanet.visualize import draw_detections

        detections = {key: np.asarray(value) for key, value in self.model.detect(self.images).items()}
        drawn = []
        for index, image in enumerate(self.images):
            num = int(detections["num_detections"][index])
            drawn.append(
                draw_detections(
                    np.clip(image, 0, 255).astype(np.uint8),
                    detections["boxes"][index, :num],
                    detections["scores"][index, :num],
                    detections["classes"][index, :num],
                    self.class_names,
                    score_threshold=self.score_threshold,
                )
            )
        return np.stack(drawn)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "predictions"))
        drawn = self.drawn_images()
        with self._writer.as_default():
            tf.summary.image("predictions", drawn, step=epoch, max_outputs=len(drawn))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
