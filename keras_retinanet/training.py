"""Training a RetinaNet from a configuration: model, optimiser, schedule, callbacks, ``tf.distribute``.

``TrainConfig`` holds every option of a run (the CLI's flags and YAML keys are its field names);
``train(config)`` builds everything under the chosen strategy, runs ``model.fit`` and writes the run folder:

    DIR/config.yaml          the resolved configuration
    DIR/class_names.txt      one class name per line
    DIR/model.keras          the final model
    DIR/checkpoints/         last.keras every epoch, best.keras by validation AP
    DIR/backup/              BackupAndRestore state: rerunning the same command resumes here
    DIR/log.csv, DIR/tensorboard/
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import yaml

from keras_retinanet.anchors import AnchorGenerator
from keras_retinanet.batchnorm import batchnorm_layers, recompute_batchnorm_statistics
from keras_retinanet.box_coder import BoxCoder
from keras_retinanet.decode import DetectionDecoder
from keras_retinanet.losses import BoxRegressionLoss, FocalLoss
from keras_retinanet.matching import Matcher
from keras_retinanet.model import RetinaNet
from keras_retinanet.schedules import WarmupSchedule

# Variables that never get weight decay (BatchNorm / GroupNorm scales and offsets, all biases).
NO_DECAY_NAMES = ("bias", "gamma", "beta")


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run, with the paper's defaults where it gives one (DESIGN section 3)."""

    # data
    data: str = ""
    val_data: str | None = None
    output: str = "runs/train"
    skip_bad: bool = False
    image_size: int = 512
    batch_size: int = 8
    flip_probability: float = 0.5
    scale_range: tuple[float, float] = (1.0, 1.0)
    photometric: bool = False
    cache: bool = True
    seed: int = 0
    # model
    backbone: str = "resnet50"
    weights: str = "none"
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)
    batchnorm_momentum: float | None = 0.9
    fpn_channels: int = 256
    p6_source: str = "c5"
    head_depth: int = 4
    head_channels: int | None = None
    use_group_norm: bool = False
    prior_probability: float = 0.01
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
    anchor_scales: tuple[float, ...] = (1.0, 2.0 ** (1 / 3), 2.0 ** (2 / 3))
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_offset: float = 0.5
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    positive_threshold: float = 0.5
    negative_threshold: float = 0.4
    allow_low_quality_matches: bool = False
    score_threshold: float = 0.05
    topk_per_level: int = 1000
    nms_iou_threshold: float = 0.5
    max_detections: int = 100
    class_agnostic_nms: bool = False
    # losses
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: str = "smooth_l1"
    box_loss_beta: float = 0.11
    # optimisation
    epochs: int = 12
    steps_per_epoch: int | None = None
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    warmup_steps: int = 500
    warmup_factor: float = 0.001
    lr_milestones: tuple[float, ...] = (2 / 3, 8 / 9)
    clip_norm: float | None = 10.0
    freeze_batchnorm: bool = False
    freeze_backbone_epochs: int = 0
    precise_bn_batches: int = 20
    # hardware
    strategy: str = "auto"
    tpu_address: str | None = None
    mixed_precision: bool = False
    jit_compile: bool = False
    # callbacks
    eval_every: int = 1
    early_stopping_patience: int | None = None
    tensorboard: bool = True
    tensorboard_images: int = 4
    verbose: int = 1

    @classmethod
    def field_types(cls) -> dict[str, type]:
        return {f.name: f.type for f in dataclasses.fields(cls)}

    def update(self, values: dict) -> TrainConfig:
        """A copy with ``values`` applied; unknown keys are an error (a typo must not be ignored)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **{k: _coerce(getattr(self, k), v) for k, v in values.items()})

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        with open(path) as file:
            values = yaml.safe_load(file) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a training config must be a mapping of option: value")
        return cls().update(values)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _coerce(default, value):
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def build_model(config: TrainConfig, class_names: Sequence[str]) -> RetinaNet:
    """The RetinaNet a configuration describes (call under the strategy's scope)."""
    weights = None if config.weights in (None, "none", "") else config.weights
    return RetinaNet(
        num_classes=len(class_names),
        class_names=list(class_names),
        backbone=config.backbone,
        backbone_weights=weights,
        backbone_kwargs=config.backbone_kwargs,
        backbone_batchnorm_momentum=config.batchnorm_momentum,
        fpn_channels=config.fpn_channels,
        p6_source=config.p6_source,
        head_depth=config.head_depth,
        head_channels=config.head_channels,
        use_group_norm=config.use_group_norm,
        prior_probability=config.prior_probability,
        anchor_generator=AnchorGenerator(
            sizes=config.anchor_sizes,
            scales=config.anchor_scales,
            aspect_ratios=config.anchor_aspect_ratios,
            offset=config.anchor_offset,
            name="anchor_generator",
        ),
        box_coder=BoxCoder(weights=config.box_weights),
        matcher=Matcher(
            config.positive_threshold, config.negative_threshold, config.allow_low_quality_matches
        ),
        decoder=DetectionDecoder(
            score_threshold=config.score_threshold,
            topk_per_level=config.topk_per_level,
            nms_iou_threshold=config.nms_iou_threshold,
            max_detections=config.max_detections,
            class_agnostic=config.class_agnostic_nms,
        ),
        image_size=config.image_size,
    )


def build_optimizer(config: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """SGD with momentum (default) or AdamW, the warm-up schedule, decoupled weight decay that skips
    normalisation parameters and biases, and global-norm clipping."""
    schedule = WarmupSchedule(
        config.learning_rate,
        total_steps,
        decay=config.schedule,
        warmup_steps=config.warmup_steps,
        warmup_factor=config.warmup_factor,
        milestones=config.lr_milestones,
    )
    common = dict(
        learning_rate=schedule, weight_decay=config.weight_decay or None, global_clipnorm=config.clip_norm
    )
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(momentum=config.momentum, **common)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(**common)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer


def freeze_batchnorm(model: keras.Model) -> int:
    """Puts every BatchNorm in inference mode with fixed statistics (small-batch fine-tuning)."""
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.trainable = False
    return len(layers)


class UnfreezeBackbone(keras.callbacks.Callback):
    """Trains only the pyramid and heads for the first ``epochs`` epochs, then the whole model."""

    def __init__(self, epochs: int, keep_batchnorm_frozen: bool = False):
        super().__init__()
        self.epochs = int(epochs)
        self.keep_batchnorm_frozen = keep_batchnorm_frozen

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
    """Adds the optimiser's current learning rate to the epoch logs (CSV, TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss with a message that says where and what to try."""

    def __init__(self):
        super().__init__()
        self.message: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.message = (
                f"training stopped: the loss became {loss} at epoch {self._epoch + 1}, step {batch + 1}. "
                "Lower the learning rate, keep gradient clipping on (clip_norm), lengthen the warm-up, or check the "
                "data (`retinanet data check`)."
            )
            print(self.message)
            self.model.stop_training = True


class _BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint(save_best_only=True)`` that waits quietly for the epochs that were evaluated.

    With ``eval_every > 1`` most epochs have no ``val_AP``; Keras' own callback warns on each of them.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs and self.monitor in logs:
            super().on_epoch_end(epoch, logs)


class _CSVLogger(keras.callbacks.CSVLogger):
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
    """Writes a few validation images with their predicted boxes to TensorBoard after every epoch."""

    def __init__(self, images: np.ndarray, log_dir: str, class_names: Sequence[str]):
        super().__init__()
        self.images = images
        self.class_names = list(class_names)
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        from keras_retinanet.visualize import draw_detections

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "predictions"))
        detections = self.model.detect(self.images)
        drawn = []
        for index, image in enumerate(self.images):
            num = int(detections["num_detections"][index])
            drawn.append(
                draw_detections(
                    image.astype("uint8"),
                    np.asarray(detections["boxes"][index, :num]),
                    np.asarray(detections["scores"][index, :num]),
                    np.asarray(detections["classes"][index, :num]),
                    self.class_names,
                    score_threshold=0.3,
                )
            )
        with self._writer.as_default():
            tf.summary.image("predictions", np.stack(drawn), step=epoch, max_outputs=len(drawn))


def write_run_files(config: TrainConfig, class_names: Sequence[str]) -> Path:
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (output / "class_names.txt").write_text("\n".join(class_names) + "\n")
    return output


def train(config: TrainConfig) -> dict:
    """Runs a whole training from a configuration; returns a summary dict (also in DIR/train_summary.json).

    Rerunning the same command after a crash or a kill resumes from the last finished epoch (BackupAndRestore
    keeps the weights, the optimiser state and the epoch counter in DIR/backup).
    """
    import tensorflow as tf

    from keras_retinanet import data as data_lib
    from keras_retinanet.data.pipeline import make_training_dataset
    from keras_retinanet.distribute import get_strategy, mixed_precision_policy

    if not config.data:
        raise ValueError("no training data: pass --data SPEC (e.g. voc:DIR:trainval)")
    keras.utils.set_random_seed(config.seed)
    strategy = get_strategy(config.strategy, config.tpu_address)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision_policy(strategy))

    train_data = data_lib.load_dataset(config.data, skip_bad=config.skip_bad)
    _report_skipped(train_data)
    class_names = train_data.class_names
    val_data = None
    if config.val_data:
        val_data = data_lib.load_dataset(config.val_data, skip_bad=config.skip_bad, class_names=class_names)
        _report_skipped(val_data)
    output = write_run_files(config, class_names)

    steps_per_epoch = config.steps_per_epoch or math.ceil(len(train_data) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    with strategy.scope():
        model = build_model(config, class_names)
        optimizer = build_optimizer(config, total_steps)
        if config.freeze_batchnorm:
            freeze_batchnorm(model)
        # Known to the optimiser before any freezing, so that unfreezing later needs no new slots.
        optimizer.build(model.trainable_variables)
        if config.freeze_backbone_epochs > 0:
            model.backbone.trainable = False
        model.compile(
            optimizer=optimizer,
            loss={
                "classification": FocalLoss(config.focal_alpha, config.focal_gamma),
                "box_regression": BoxRegressionLoss(config.box_loss, config.box_loss_beta),
            },
            jit_compile=config.jit_compile,
        )

    dataset = make_training_dataset(
        train_data,
        model.label_encoder(),
        image_size=config.image_size,
        batch_size=config.batch_size,
        seed=config.seed,
        flip_probability=config.flip_probability,
        scale_range=config.scale_range,
        photometric=config.photometric,
        cache=config.cache,
        repeat=True,
    )
    options = tf.data.Options()
    # Examples come from an in-memory list, not files: shard by element across workers.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)

    stop_on_nan = StopOnNaN()
    callbacks = _callbacks(config, output, model, val_data, class_names, stop_on_nan)
    history = model.fit(
        dataset,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=config.verbose,
        shuffle=False,  # the tf.data pipeline shuffles; Keras would only warn that it cannot
    )
    summary = {
        "epochs_run": len(history.epoch),
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
        "stopped_on_nan": stop_on_nan.message,
        "steps_per_epoch": steps_per_epoch,
    }
    if stop_on_nan.message is None:
        if config.precise_bn_batches and not config.freeze_batchnorm:
            summary["precise_bn_batches"] = recompute_batchnorm_statistics(
                model, dataset.take(config.precise_bn_batches), config.precise_bn_batches
            )
        model.save(output / "model.keras")
        if val_data is not None:
            from keras_retinanet.evaluate import evaluate_model
            from keras_retinanet.inference import KerasDetector

            metrics = evaluate_model(
                KerasDetector(model, config.image_size), val_data, class_names=class_names, progress=False
            )
            summary["final_metrics"] = metrics
    (output / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _report_skipped(dataset) -> None:
    """Skipped records are always reported, whatever the verbosity."""
    if len(dataset.skipped) or dataset.skipped.clipped:
        print(f"{dataset.name}: {dataset.skipped.summary()}")


def _callbacks(config, output: Path, model, val_data, class_names, stop_on_nan) -> list:
    callbacks: list[keras.callbacks.Callback] = [stop_on_nan, LearningRateLogger()]
    if config.freeze_backbone_epochs > 0:
        callbacks.append(UnfreezeBackbone(config.freeze_backbone_epochs, config.freeze_batchnorm))
    checkpoints = output / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    if val_data is not None:
        from keras_retinanet.callbacks import EvaluationCallback

        # Before the checkpoint / early-stopping callbacks, which read val_AP from the same logs.
        evaluation = EvaluationCallback(
            val_data,
            every_n_epochs=config.eval_every,
            image_size=config.image_size,
            verbose=config.verbose,
        )
        callbacks.append(evaluation)
        callbacks.append(
            _BestCheckpoint(
                str(checkpoints / "best.keras"), monitor="val_AP", mode="max", save_best_only=True
            )
        )
        if config.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_AP", mode="max", patience=config.early_stopping_patience
                )
            )
    callbacks.append(keras.callbacks.ModelCheckpoint(str(checkpoints / "last.keras")))
    callbacks.append(keras.callbacks.BackupAndRestore(str(output / "backup"), delete_checkpoint=False))
    logged_later = evaluation.logged_keys if val_data is not None else []
    callbacks.append(_CSVLogger(str(output / "log.csv"), extra_keys=logged_later, append=True))
    if config.tensorboard:
        log_dir = str(output / "tensorboard")
        callbacks.append(keras.callbacks.TensorBoard(log_dir))
        if val_data is not None and config.tensorboard_images:
            from keras_retinanet.data.pipeline import make_inference_dataset

            sample = dataclasses.replace(val_data, examples=val_data.examples[: config.tensorboard_images])
            images, _ = next(
                iter(make_inference_dataset(sample, config.image_size, batch_size=config.tensorboard_images))
            )
            callbacks.append(PredictionImages(np.asarray(images), log_dir, class_names))
    return callbacks
