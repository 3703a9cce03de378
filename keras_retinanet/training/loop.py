"""``train(config)``: a whole training run from a :class:`~keras_retinanet.training.config.TrainConfig`.

It builds the model (``config.model.build``), the optimiser and schedule, the input pipeline and the callbacks
under the chosen ``tf.distribute`` strategy, runs ``model.fit`` and writes the run folder:

    DIR/config.yaml          the resolved configuration (nested: the model's options under ``model:``)
    DIR/class_names.txt      one class name per line
    DIR/model.keras          the final model
    DIR/checkpoints/         last.keras every epoch, best.keras by validation AP
    DIR/backup/              BackupAndRestore state: rerunning the same command resumes here
    DIR/log.csv, DIR/tensorboard/, DIR/train_summary.json
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from keras_retinanet.batchnorm import recompute_batchnorm_statistics
from keras_retinanet.schedules import WarmupSchedule
from keras_retinanet.training.callbacks import (
    BestCheckpoint,
    EvaluationCallback,
    LearningRateLogger,
    MetricsCSVLogger,
    PredictionImages,
    StopOnNaN,
    UnfreezeBackbone,
    freeze_batchnorm,
)
from keras_retinanet.training.config import TrainConfig

# Variables that never get weight decay (BatchNorm / GroupNorm scales and offsets, all biases).
NO_DECAY_NAMES = ("bias", "gamma", "beta")


def build_optimizer(config: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """SGD with momentum (default) or AdamW, the warm-up schedule, decoupled weight decay that skips
    normalisation parameters and biases, and global-norm clipping (``clip_norm``; None: off)."""
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


def write_run_files(config: TrainConfig, class_names: Sequence[str]) -> Path:
    """Creates the run folder with ``config.yaml`` (``TrainConfig.from_yaml`` reads it back) and
    ``class_names.txt``; returns its path."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(config.to_yaml())
    (output / "class_names.txt").write_text("\n".join(class_names) + "\n")
    return output


def train(config: TrainConfig) -> dict:
    """Runs a whole training from a configuration; returns a summary dict (also in DIR/train_summary.json):
    ``epochs_run``, ``history`` (per-epoch logs), ``stopped_on_nan`` (None or the message),
    ``steps_per_epoch``, and ``final_metrics`` (COCO metrics of the final model) with ``val_data``.

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
        if config.init:
            model = _initial_model(config, class_names)
        else:
            model = config.model.build(class_names)
        optimizer = build_optimizer(config, total_steps)
        if config.freeze_batchnorm:
            freeze_batchnorm(model)
        # Known to the optimiser before any freezing, so that unfreezing later needs no new slots.
        optimizer.build(model.trainable_variables)
        if config.freeze_backbone_epochs > 0:
            model.backbone.trainable = False
        model.compile(optimizer=optimizer, loss=config.model.losses(), jit_compile=config.jit_compile)

    dataset = make_training_dataset(
        train_data,
        model.label_encoder(),
        image_size=config.model.image_size,
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
    callbacks = build_callbacks(config, output, model, val_data, class_names, stop_on_nan)
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
        "history": {k: [float(np.asarray(x).reshape(-1)[0]) for x in v] for k, v in history.history.items()},
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
            from keras_retinanet.detectors import KerasDetector
            from keras_retinanet.evaluation import evaluate_model

            summary["final_metrics"] = evaluate_model(
                KerasDetector(model), val_data.examples, class_names=class_names, progress=False
            )
    (output / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _report_skipped(dataset) -> None:
    """Skipped records are always reported, whatever the verbosity."""
    if len(dataset.skipped) or dataset.skipped.clipped:
        print(f"{dataset.name}: {dataset.skipped.summary()}")


def build_callbacks(
    config: TrainConfig,
    output: Path,
    model: keras.Model,
    val_data,
    class_names: Sequence[str],
    stop_on_nan: StopOnNaN,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a run, in the order they must run (evaluation before what reads ``val_AP``)."""
    callbacks: list[keras.callbacks.Callback] = [stop_on_nan, LearningRateLogger()]
    if config.freeze_backbone_epochs > 0:
        callbacks.append(UnfreezeBackbone(config.freeze_backbone_epochs, config.freeze_batchnorm))
    checkpoints = output / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    logged_later: list[str] = []
    if val_data is not None:
        evaluation = EvaluationCallback(val_data, every_n_epochs=config.eval_every, verbose=config.verbose)
        logged_later = evaluation.logged_keys
        callbacks.append(evaluation)
        callbacks.append(BestCheckpoint(str(checkpoints / "best.keras"), monitor="val_AP", mode="max"))
        if config.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_AP", mode="max", patience=config.early_stopping_patience
                )
            )
    callbacks.append(keras.callbacks.ModelCheckpoint(str(checkpoints / "last.keras")))
    callbacks.append(keras.callbacks.BackupAndRestore(str(output / "backup"), delete_checkpoint=False))
    callbacks.append(MetricsCSVLogger(str(output / "log.csv"), extra_keys=logged_later, append=True))
    if config.tensorboard:
        log_dir = str(output / "tensorboard")
        callbacks.append(keras.callbacks.TensorBoard(log_dir))
        if val_data is not None and config.tensorboard_images:
            from keras_retinanet.data.pipeline import make_inference_dataset

            sample = dataclasses.replace(val_data, examples=val_data.examples[: config.tensorboard_images])
            images, _ = next(
                iter(
                    make_inference_dataset(
                        sample, config.model.image_size, batch_size=config.tensorboard_images
                    )
                )
            )
            callbacks.append(PredictionImages(np.asarray(images), log_dir, class_names))
    return callbacks


def _initial_model(config, class_names):
    """``config.init``'s architecture and weights for ``class_names`` (the class head rebuilt)."""
    from keras_retinanet.finetune import finetune_model, format_report

    model, report = finetune_model(config.init, class_names, image_size=config.model.image_size)
    print(format_report(report))
    return model
