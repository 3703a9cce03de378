"""Keras callbacks of a RetinaNet training, each usable on its own in ``model.fit(..., callbacks=[...])``."""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_retinanet import atomic
from keras_retinanet.backbones.batchnorm import batchnorm_layers
from keras_retinanet.conventions import DISPLAY_SCORE_THRESHOLD
from keras_retinanet.training import run_folder


def freeze_batchnorm(model: keras.Model) -> int:
    """Puts every BatchNorm layer of ``model`` in inference mode with fixed statistics and parameters (for
    small batches, whose statistics are too noisy); returns the number of layers frozen."""
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.trainable = False
    return len(layers)


class EvaluationCallback(keras.callbacks.Callback):
    """COCO metrics (pycocotools) of the model being trained on a validation set, written into ``logs`` as
    ``val_AP``, ``val_AP50``, ... (pycocotools' undefined -1 as NaN) after every ``every_n_epochs``-th
    epoch and the last. Place it before the callbacks that read them (``EarlyStopping(monitor="val_AP")``).

    Args:
        data: a data set with ``.examples`` and ``.class_names``, a dataset spec, or a list of example dicts.
        class_names: class names of a plain example list (default: the model's).
        image_size: letterbox size (int or (H, W)); default the size the model was trained at.
        score_threshold, max_detections: None keeps the model's decoder settings.
        max_images: evaluate only the first N images.
        pr_curve_dir: write per-class precision-recall PNGs there at each evaluation.

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
        self.metric_keys = tuple(METRIC_KEYS)
        self.logged_keys = [f"val_{key}" for key in self.metric_keys]
        self.pr_curve_dir = pr_curve_dir
        self.verbose = verbose
        self.history: list[tuple[int, dict]] = []
        self._detector = None

    def evaluate(self) -> dict:
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

    def _due(self, epoch: int) -> bool:
        last = (self.params or {}).get("epochs")
        return (epoch + 1) % self.every_n_epochs == 0 or (last is not None and epoch + 1 >= last)

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        metrics = self.evaluate()
        self.history.append((epoch, metrics))
        if logs is not None:
            for key in self.metric_keys:
                value = float(metrics[key])
                logs[f"val_{key}"] = value if value >= 0 else math.nan
        if self.verbose:
            text = " - ".join(
                f"val_{key}: {metrics[key]:.4f}" for key in self.metric_keys if metrics[key] >= 0
            )
            print(f"\nEpoch {epoch + 1}: {text}")


class UnfreezeBackbone(keras.callbacks.Callback):
    """Trains only the pyramid and heads for the first ``epochs`` epochs, then the whole model (with
    ``keep_batchnorm_frozen``, the backbone's BatchNorm stays frozen)."""

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


# The focal and box losses are normalised by the number of positive anchors: about 1 at the start, and far
# below 1e3 on any data seen; a loss above this is a run that has diverged while staying finite.
DIVERGED_LOSS = 1e6


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss or one above ``DIVERGED_LOSS``, or at the end of an epoch whose
    weights are no longer finite. The saving callbacks take it as ``guard`` and save nothing after it, so the last
    saved state stays the last finite one. Place it first.

    Attributes:
        message: None, or why training was stopped.
        epoch, step: 1-based epoch and step where the non-finite value was seen (None before).
    """

    def __init__(self, verbose: bool = True):
        super().__init__()
        self.verbose = verbose
        self.message: str | None = None
        self.epoch: int | None = None
        self.step: int | None = None
        self._epoch = 0

    @property
    def stopped(self) -> bool:
        return self.message is not None

    def on_train_begin(self, logs=None):
        self.message, self.epoch, self.step = None, None, None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _stop(self, what: str, step: int | None) -> None:
        self.epoch, self.step = self._epoch + 1, step
        where = f"epoch {self.epoch}, step {step}" if step is not None else f"the end of epoch {self.epoch}"
        self.message = (
            f"training stopped: {what} at {where}. Lower the learning rate, keep gradient clipping on "
            "(clip_norm), lengthen the warm-up, or check the data (`retinanet data check`)."
        )
        if self.verbose:
            print(self.message)
        self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.message is None and loss is not None:
            value = float(np.asarray(loss).reshape(-1)[0])
            if not math.isfinite(value):
                self._stop(f"the loss became {value}", batch + 1)
            elif value > DIVERGED_LOSS:
                self._stop(f"the loss diverged to {value:.3g} (above {DIVERGED_LOSS:.0e})", batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        # A step can leave non-finite weights behind a finite loss (the loss is computed before the update).
        if self.message is None and not all_finite(self.model):
            self._stop("the weights became non-finite", None)


def all_finite(model: keras.Model) -> bool:
    """True when every variable of ``model`` and of its optimiser is finite (NaN and infinities are not)."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        variables += list(optimizer.variables)
    values = (keras.ops.convert_to_numpy(variable) for variable in variables)
    return all(np.isfinite(value).all() for value in values if np.issubdtype(value.dtype, np.floating))


def _guarded(guard: StopOnNaN | None) -> bool:
    return guard is not None and guard.stopped


class LastCheckpoint(keras.callbacks.Callback):
    """Saves the model (with the optimiser state) after every epoch, atomically, unless ``guard`` has stopped."""

    def __init__(self, filepath: str | os.PathLike, guard: StopOnNaN | None = None):
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if not _guarded(self.guard):
            atomic.save_model(self.model, self.filepath)


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model atomically when ``monitor`` improves (epochs without it, and non-finite values, are
    passed over), unless ``guard`` has stopped; ``best`` is the best value so far (None before the first)."""

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_AP",
        mode: str = "max",
        guard: StopOnNaN | None = None,
        verbose: int = 0,
    ):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.filepath = os.fspath(filepath)
        self.monitor, self.mode, self.guard, self.verbose = monitor, mode, guard, verbose
        self.best: float | None = None

    def on_epoch_end(self, epoch, logs=None):
        if not logs or self.monitor not in logs or _guarded(self.guard):
            return
        value = float(np.asarray(logs[self.monitor]).reshape(-1)[0])
        if not math.isfinite(value):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved to {value:.4f}, saving {self.filepath}")
            atomic.save_model(self.model, self.filepath)
            self.best = value

    def resume_state(self) -> dict:
        return {"best": self.best}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        self.best = state.get("best")


class MetricsCSVLogger(keras.callbacks.Callback):
    """The epoch logs in a CSV file, rewritten atomically after every epoch.

    Columns are ``epoch`` (0-based) then every key logged so far and ``extra_keys``, sorted (empty where
    missing). With ``append`` the rows of an earlier run are kept, except those of the epoch training starts
    with and later.
    """

    def __init__(self, filename: str | os.PathLike, extra_keys: Sequence[str] = (), append: bool = False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.extra_keys = list(extra_keys)
        self.append = append
        self.rows: list[dict[str, str]] = []
        self._first_epoch: int | None = None

    def on_train_begin(self, logs=None):
        self.rows, self._first_epoch = [], None
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="", encoding="utf-8") as file:
                self.rows = [dict(row) for row in csv.DictReader(file)]

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
            # Rows of this epoch and later come from an attempt that was killed or diverged: replaced now.
            self.rows = [row for row in self.rows if _epoch_before(row, epoch)]

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": str(epoch)}
        row.update({key: _csv_value(value) for key, value in (logs or {}).items()})
        self.rows.append(row)
        keys = {key for existing in self.rows for key in existing} | set(self.extra_keys)
        columns = ["epoch", *sorted(keys - {"epoch"})]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.filename, text.getvalue())


def _epoch_before(row: Mapping[str, str], start: int) -> bool:
    try:
        return int(row.get("epoch", "")) < start
    except ValueError:
        return False


def _csv_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.size == 1:
        return repr(float(array.reshape(-1)[0])) if array.dtype.kind == "f" else str(array.reshape(-1)[0])
    return "[" + ", ".join(str(v) for v in array.reshape(-1)) + "]"


def _plain_logs(logs: Mapping[str, Any] | None) -> dict[str, Any]:
    plain = {}
    for key, value in (logs or {}).items():
        if isinstance(value, str):
            plain[key] = value
        else:
            array = np.asarray(value)
            plain[key] = float(array.reshape(-1)[0]) if array.size == 1 else array.tolist()
    return plain


def _callback_state(callback: keras.callbacks.Callback) -> dict:
    if hasattr(callback, "resume_state"):
        return callback.resume_state()
    if isinstance(callback, keras.callbacks.EarlyStopping):
        best = callback.best
        return {
            "wait": int(callback.wait),
            "best": None if best is None else float(best),
            "best_epoch": int(callback.best_epoch),
        }
    raise TypeError(f"{type(callback).__name__} has no state TrainingBackup knows how to save")


def _restore_callback_state(callback: keras.callbacks.Callback, state: Mapping[str, Any]) -> None:
    if hasattr(callback, "restore_state"):
        callback.restore_state(state)
    elif isinstance(callback, keras.callbacks.EarlyStopping):
        callback.wait = int(state.get("wait", 0))
        callback.best = state.get("best")
        callback.best_epoch = int(state.get("best_epoch", 0))


def weights_max_abs(model: keras.Model) -> float:
    """The largest absolute floating-point weight of ``model``, BatchNorm's moving statistics left out."""
    weights = [v for v in model.weights if "moving_" not in v.path and "float" in str(v.dtype)]
    values = (np.abs(keras.ops.convert_to_numpy(v.value)).max(initial=0.0) for v in weights)
    return float(max(values, default=0.0))


class TrainingBackup(keras.callbacks.Callback):
    """Saves the training state after every epoch (format in :mod:`~keras_retinanet.training.run_folder`) and
    resumes from the newest intact one when ``fit`` starts again: ``BackupAndRestore`` made safe against kills
    and divergence. A damaged state is skipped with a warning; states none of which is intact raise
    ``RunFolderError``. Put it last, so that it restores the callbacks' state after their ``on_train_begin``.

    Args:
        stateful: callbacks whose state is saved, by name: :class:`BestCheckpoint`, ``EarlyStopping``, or any
            callback with ``resume_state() -> dict`` and ``restore_state(dict)``.
        save: False only restores (the workers of a multi-worker run other than the chief).
        resume_from_epoch: resume from the kept state of this epoch instead of the newest (0: from the start).

    Attributes:
        restored: the :class:`~keras_retinanet.training.run_folder.TrainingState` resumed from, or None.
        saved: the newest state this callback saved or restored, or None.
        history: the logs of every finished epoch (restored ones included), dicts with ``epoch`` (0-based).
        unsaved: the logs of the epoch not saved because ``guard`` had stopped training, or None.
    """

    def __init__(
        self,
        backup_dir: str | os.PathLike,
        guard: StopOnNaN | None = None,
        stateful: Mapping[str, keras.callbacks.Callback] | None = None,
        verbose: int = 1,
        save: bool = True,
        resume_from_epoch: int | None = None,
    ):
        super().__init__()
        if resume_from_epoch is not None and resume_from_epoch < 0:
            raise ValueError(f"--resume-from-epoch must be 0 or more, got {resume_from_epoch}")
        self.backup_dir = Path(backup_dir)
        self.guard = guard
        self.stateful = dict(stateful or {})
        self.verbose = verbose
        self.save = save
        self.resume_from_epoch = resume_from_epoch
        self.initial_weights_max_abs: float | None = None
        self.restored: run_folder.TrainingState | None = None
        self.saved: run_folder.TrainingState | None = None
        self.history: list[dict] = []
        self.unsaved: dict | None = None

    def on_train_begin(self, logs=None):
        self.unsaved = None
        self.restored = self.restore()
        self.saved = self.restored
        self.history = list(self.restored.history) if self.restored else []
        self.initial_weights_max_abs = (
            self.restored.initial_weights_max_abs if self.restored else weights_max_abs(self.model)
        )
        if self.restored is not None:
            # What Keras' own BackupAndRestore sets: fit() starts from this epoch.
            self.model._initial_epoch = self.restored.epoch
            for name, callback in self.stateful.items():
                if name in self.restored.callbacks:
                    _restore_callback_state(callback, self.restored.callbacks[name])

    def restore(self) -> run_folder.TrainingState | None:
        """Loads the newest intact state into the model; returns it (None when there is none at all)."""
        states, problems = run_folder.list_states(self.backup_dir)
        for problem in problems:
            print(f"warning: {problem}; ignored", file=sys.stderr)
        if self.resume_from_epoch is not None:
            states = self._chosen_state(states)
        damaged = []
        for state in states:
            problem = state.damage()
            if problem is None:
                try:
                    optimizer = getattr(self.model, "optimizer", None)
                    if optimizer is not None and not optimizer.built:
                        optimizer.build(self.model.trainable_variables)
                    self.model.load_weights(state.weights)
                except Exception as error:  # h5py's OSError, Keras' ValueError on a mismatch, ...
                    problem = f"its weights do not load ({type(error).__name__}: {error})"
            if problem is None:
                if self.verbose:
                    total = (self.params or {}).get("epochs", state.epochs)
                    print(
                        f"resuming from epoch {state.epoch} of {total}, checkpoint of {state.time_text()} "
                        f"({state.weights})"
                    )
                return state
            damaged.append(f"{state.weights.name} (epoch {state.epoch}): {problem}")
            print(f"warning: skipping the training state {state.weights}: {problem}", file=sys.stderr)
        if damaged:
            raise run_folder.RunFolderError(
                f"no intact training state in {self.backup_dir} ({'; '.join(damaged)}): nothing to resume "
                "from. Use a new --output to start over (or remove that folder's backup/ to restart there)."
            )
        return None

    def _chosen_state(self, states: list) -> list:
        """``[the state of --resume-from-epoch]``, or [] for epoch 0 (start from the beginning)."""
        if self.resume_from_epoch == 0:
            if self.verbose:
                print(
                    "starting from the beginning (--resume-from-epoch 0); the kept states are replaced as "
                    "epochs finish"
                )
            return []
        chosen = [state for state in states if state.epoch == self.resume_from_epoch]
        if not chosen:
            kept = "; ".join(state.describe() for state in states) or "none"
            raise run_folder.RunFolderError(
                f"--resume-from-epoch {self.resume_from_epoch}: {self.backup_dir} keeps no state of that epoch "
                f"(kept: {kept}; 0 starts from the beginning)"
            )
        return chosen[:1]

    def on_epoch_end(self, epoch, logs=None):
        if _guarded(self.guard):
            self.unsaved = {"epoch": epoch, **_plain_logs(logs)}
            return
        self.history.append({"epoch": epoch, **_plain_logs(logs)})
        if not self.save:
            return
        weights, _ = run_folder.state_paths(self.backup_dir, epoch + 1)
        atomic.save_weights(self.model, weights)
        self.saved = run_folder.commit_state(
            self.backup_dir,
            epoch + 1,
            (self.params or {}).get("epochs"),
            self.history,
            {name: _callback_state(callback) for name, callback in self.stateful.items()},
            weights_max_abs=weights_max_abs(self.model),
            initial_weights_max_abs=self.initial_weights_max_abs,
        )


class PredictionImages(keras.callbacks.Callback):
    """After every epoch, the image summary ``predictions`` in ``log_dir/predictions`` (step: the 0-based epoch):
    ``images``, (B, H, W, 3) RGB in [0, 255] as the model takes them, with the detections at or above
    ``score_threshold`` drawn."""

    def __init__(
        self,
        images: np.ndarray,
        log_dir: str | os.PathLike,
        class_names: Sequence[str],
        score_threshold: float = DISPLAY_SCORE_THRESHOLD,
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
