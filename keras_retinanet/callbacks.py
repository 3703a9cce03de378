"""Keras callbacks: COCO evaluation during ``model.fit``."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import keras

logger = logging.getLogger(__name__)


class EvaluationCallback(keras.callbacks.Callback):
    """Runs the pycocotools evaluation of ``keras_retinanet.evaluate`` on a validation set during ``fit``.

    Every ``every_n_epochs`` epochs (and after the last epoch), the model being trained predicts the
    validation images (letterboxed to ``image_size``, decoded with ``score_threshold`` / ``max_detections``)
    and the metrics go into ``logs`` as ``{prefix}AP``, ``{prefix}AP50``, ``{prefix}AP75``, ``{prefix}APs``,
    ``{prefix}APm``, ``{prefix}APl``, ``{prefix}AR100`` (default prefix ``val_``), so ``ModelCheckpoint`` and
    ``EarlyStopping`` can monitor them (``monitor="val_AP", mode="max"``). Place this callback **before**
    those in the callback list: Keras calls callbacks in order and they read the same ``logs`` dict.

    Undefined metrics (pycocotools' -1, e.g. ``APs`` without small objects) are logged as NaN. On epochs that
    are skipped nothing is logged, so monitor with ``every_n_epochs=1`` or expect Keras' "metric not
    available" warnings on the other epochs.

    Args:
        data: a data set with ``.examples`` and ``.class_names`` (``keras_retinanet.data.load_dataset``), a
            dataset spec string, or a list of common example dicts.
        every_n_epochs: evaluate after epochs ``n - 1, 2n - 1, ...`` (0-based) and after the last epoch.
        class_names: class names of a plain example list (default: the model's).
        batch_size: images per prediction call.
        image_size: letterbox size (int or (H, W)); default the model's ``image_size`` attribute, else 512.
        score_threshold, max_detections: decoder settings for the evaluation (0.05 and 100, as COCO).
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
        score_threshold: float = 0.05,
        max_detections: int = 100,
        prefix: str = "val_",
        max_images: int | None = None,
        pr_curve_dir: str | os.PathLike | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        from keras_retinanet.evaluate import METRIC_KEYS, resolve_examples

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
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.prefix = prefix
        self.logged_keys = [f"{prefix}{key}" for key in METRIC_KEYS]
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
        """Evaluate the current model now; returns the full metrics dict."""
        from keras_retinanet.evaluate import evaluate_model
        from keras_retinanet.inference import KerasDetector

        # One detector per model: its traced inference function is reused from one evaluation to the next.
        if getattr(self, "_detector", None) is None or self._detector.model is not self.model:
            self._detector = KerasDetector(
                self.model, self.image_size, self.score_threshold, self.max_detections
            )
        detector = self._detector
        names = self.class_names or list(getattr(self.model, "class_names", []) or [])
        return evaluate_model(
            detector,
            self.examples,
            class_names=names,
            batch_size=self.batch_size,
            pr_curve_dir=self.pr_curve_dir,
            progress=False,
        )

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        from keras_retinanet.evaluate import METRIC_KEYS

        metrics = self.evaluate()
        self.history.append((epoch, metrics))
        if logs is not None:
            for key in METRIC_KEYS:
                value = float(metrics[key])
                logs[f"{self.prefix}{key}"] = value if value >= 0 else math.nan
        if self.verbose:
            text = " - ".join(
                f"{self.prefix}{key}: {metrics[key]:.4f}" for key in METRIC_KEYS if metrics[key] >= 0
            )
            print(f"\nEpoch {epoch + 1}: {text}")
