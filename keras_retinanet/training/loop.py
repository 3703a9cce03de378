"""``train(config)``: a whole training run and its folder (layout in :mod:`keras_retinanet.training.run_folder`),
from a :class:`~keras_retinanet.training.config.TrainConfig`."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_retinanet import atomic
from keras_retinanet.backbones.batchnorm import recompute_batchnorm_statistics
from keras_retinanet.backbones.registry import describe_weights
from keras_retinanet.data.dataset import Dataset
from keras_retinanet.imaging import parse_image_size
from keras_retinanet.training import anchors, image_shape, run_folder
from keras_retinanet.training.callbacks import (
    BestCheckpoint,
    EvaluationCallback,
    LastCheckpoint,
    LearningRateLogger,
    MetricsCSVLogger,
    PredictionImages,
    StopOnNaN,
    TrainingBackup,
    UnfreezeBackbone,
    freeze_batchnorm,
)
from keras_retinanet.training.config import TrainConfig
from keras_retinanet.training.schedules import WarmupSchedule, default_warmup_steps

# Variables that never get weight decay (BatchNorm / GroupNorm scales and offsets, all biases).
NO_DECAY_NAMES = ("bias", "gamma", "beta")


def build_schedule(config: TrainConfig, total_steps: int) -> WarmupSchedule:
    """The run's learning-rate schedule; ``warmup_steps=None`` is :func:`default_warmup_steps`."""
    warmup = config.warmup_steps
    if warmup is None:
        warmup = default_warmup_steps(total_steps, pretrained=config.new_heads_on_pretrained_backbone)
    return WarmupSchedule(
        config.learning_rate,
        total_steps,
        decay=config.schedule,
        warmup_steps=warmup,
        warmup_factor=config.warmup_factor,
        milestones=config.lr_milestones,
    )


def build_optimizer(config: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """SGD with momentum or AdamW, the warm-up schedule, decoupled weight decay off :data:`NO_DECAY_NAMES`, and
    global-norm clipping."""
    schedule = build_schedule(config, total_steps)
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
    """Creates the run folder with ``config.yaml`` and ``labels.txt``, written atomically; returns it."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    atomic.write_text(output / run_folder.CONFIG, config.to_yaml())
    atomic.write_text(output / run_folder.CLASS_NAMES, "\n".join(class_names) + "\n")
    return output


def train(
    config: TrainConfig, allow_changes: str | Sequence[str] | None = (), resume_from_epoch: int | None = None
) -> dict:
    """Runs a whole training; returns its summary (also DIR/train_summary.json): ``finished``, ``epochs_run``
    (in this call), ``epochs_done``, ``resumed_from_epoch``, ``changed``, ``history`` (per-epoch logs),
    ``stopped_on_nan`` (None or the message), ``steps_per_epoch`` and, with ``val_data``, ``final_metrics``.

    Rerunning the same configuration resumes from the newest intact state in DIR/backup; a finished run is not
    trained again (``already_finished``). Another configuration raises ``RunFolderError`` before anything is
    loaded or written, unless the options that differ are in ``allow_changes`` (``"epochs,learning_rate"``, a
    list, or ``"all"``). ``resume_from_epoch``: continue from that kept state instead (0: from the start).
    """
    plan = run_folder.plan_run(config, allow_changes)
    if plan.finished:
        return _already_finished(plan)
    run = _resolve(config, plan)
    run.model = _build(run)
    run.dataset = _data(run)
    # Nothing is written before this point: a bad data set or model option leaves no run folder behind.
    folder = (
        run_folder.locked(run.config.output) if run.writer else contextlib.nullcontext(Path(config.output))
    )
    with folder as output:
        # Again, under the lock: another training may have used the folder since the first look.
        plan = run_folder.plan_run(run.config, allow_changes)
        if plan.finished:
            return _already_finished(plan)
        _prepare_folder(run, plan, output)
        summary = _fit(run, plan, output, resume_from_epoch)
        return _finish(run, output, summary)


@dataclasses.dataclass
class _Run:
    config: TrainConfig
    strategy: Any  # tf.distribute.Strategy
    train_data: Dataset
    val_data: Dataset | None
    anchor_report: dict | None
    steps_per_epoch: int
    model: keras.Model | None = None
    dataset: Any = None  # tf.data.Dataset of training batches

    @property
    def class_names(self) -> list[str]:
        return self.train_data.class_names

    @property
    def writer(self) -> bool:
        """In a multi-worker run only the chief writes the (shared) run folder."""
        return bool(getattr(self.strategy.extended, "should_checkpoint", True))


def _resolve(config: TrainConfig, plan: run_folder.RunPlan) -> _Run:
    """Seed, strategy, precision, the data checked, the image shape and anchors resolved, the plan printed."""
    if not config.data:
        raise ValueError("no training data: pass --data SPEC (e.g. voc:DIR:trainval)")

    from keras_retinanet import data as data_lib
    from keras_retinanet.training.distribute import get_strategy, mixed_precision_policy

    keras.utils.set_random_seed(config.seed)
    strategy = get_strategy(config.strategy, config.tpu_address)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision_policy(strategy))

    outside = {"allow_outside_paths": config.allow_outside_paths}
    train_data = data_lib.load_dataset(config.data, skip_bad=config.skip_bad, **outside)
    _report_skipped(train_data)
    if len(train_data) == 0:
        raise ValueError(f"{config.data}: no training images (nothing to train on)")
    if not config.allow_empty_classes:
        check_every_class_has_boxes(config.data, train_data)
    plan.check_class_names(train_data.class_names)
    config, shape_note = image_shape.resolve_image_shape(config, train_data, previous=plan.previous)
    config, anchor_report = anchors.resolve_anchors(config, train_data, previous=plan.previous)
    if anchor_report:
        print(anchors.describe(anchor_report))
    val_data = None
    if config.val_data:
        val_data = data_lib.load_dataset(
            config.val_data, skip_bad=config.skip_bad, class_names=train_data.class_names, **outside
        )
        _report_skipped(val_data)

    steps_per_epoch = config.steps_per_epoch or math.ceil(len(train_data) / config.batch_size)
    print("\n".join(describe_plan(config, steps_per_epoch, shape_note, anchor_report)))
    return _Run(config, strategy, train_data, val_data, anchor_report, steps_per_epoch)


def _build(run: _Run) -> keras.Model:
    """The compiled model (``config.model.build`` or the ``--init`` model) under the run's strategy."""
    config = run.config
    with run.strategy.scope():
        model = (
            _initial_model(config, run.class_names) if config.init else config.model.build(run.class_names)
        )
        optimizer = build_optimizer(config, run.steps_per_epoch * config.epochs)
        if config.batchnorm_frozen:
            freeze_batchnorm(model)
        # Known to the optimiser before any freezing, so that unfreezing later needs no new slots.
        optimizer.build(model.trainable_variables)
        if config.freeze_backbone_epochs > 0:
            model.backbone.trainable = False
        model.compile(optimizer=optimizer, loss=config.model.losses(), jit_compile=config.jit_compile)
    return model


def _data(run: _Run):
    import tensorflow as tf

    from keras_retinanet.data.pipeline import make_training_dataset

    config = run.config
    dataset = make_training_dataset(
        run.train_data,
        run.model.label_encoder(),
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
    return dataset.with_options(options)


def _prepare_folder(run: _Run, plan: run_folder.RunPlan, output: Path) -> None:
    """Clears half-written files, moves an earlier final model aside, writes the run files."""
    plan.check_class_names(run.class_names)
    if not run.writer:
        return
    atomic.remove_partial_files(output, output / run_folder.CHECKPOINTS, output / run_folder.BACKUP)
    _announce(plan)
    _retire_final_model(plan)
    write_run_files(run.config, run.class_names)
    if run.anchor_report and not run.anchor_report.get("resumed"):
        anchors.write_report(run.anchor_report, output)


def _fit(run: _Run, plan: run_folder.RunPlan, output: Path, resume_from_epoch: int | None) -> dict:
    config = run.config
    stop_on_nan = StopOnNaN(verbose=False)
    callbacks = build_callbacks(
        config, output, run.model, run.val_data, run.class_names, stop_on_nan, run.writer, resume_from_epoch
    )
    backup = next(callback for callback in callbacks if isinstance(callback, TrainingBackup))
    history = run.model.fit(
        run.dataset,
        epochs=config.epochs,
        steps_per_epoch=run.steps_per_epoch,
        callbacks=callbacks,
        verbose=config.verbose,
        shuffle=False,  # the tf.data pipeline shuffles; Keras would only warn that it cannot
    )
    records = backup.history + ([backup.unsaved] if backup.unsaved else [])
    summary = {
        "finished": False,
        "epochs_run": len(history.epoch),
        "epochs_done": backup.saved.epoch if backup.saved else 0,
        "epochs": config.epochs,
        "resumed_from_epoch": backup.restored.epoch if backup.restored else None,
        "changed": {key: list(values) for key, values in plan.changes.items()} if not plan.fresh else {},
        "history": _history(records),
        "stopped_on_nan": None,
        "steps_per_epoch": run.steps_per_epoch,
    }
    if stop_on_nan.stopped:
        summary["stopped_on_nan"] = _nan_message(config, stop_on_nan, backup)
        print(summary["stopped_on_nan"], file=sys.stderr)
    return summary


def _finish(run: _Run, output: Path, summary: dict) -> dict:
    """Unless the run stopped on NaN: BatchNorm statistics recomputed, the final model saved and evaluated."""
    config, model = run.config, run.model
    if summary["stopped_on_nan"] is None:
        # Every worker recomputes the statistics (the same computation on each, as the training steps).
        if config.precise_bn_batches and not config.batchnorm_frozen:
            summary["precise_bn_batches"] = recompute_batchnorm_statistics(
                model, run.dataset.take(config.precise_bn_batches), config.precise_bn_batches
            )
        if run.writer:
            atomic.save_model(model, output / run_folder.MODEL)
            if run.val_data is not None:
                from keras_retinanet.detectors import KerasDetector
                from keras_retinanet.evaluation import evaluate_model

                summary["final_metrics"] = evaluate_model(
                    KerasDetector(model), run.val_data.examples, class_names=run.class_names, progress=False
                )
        summary["finished"] = True
    if run.writer:
        atomic.write_json(output / run_folder.SUMMARY, summary)
    return summary


# A rule of thumb, not a measured limit: under 100 steps a detector has barely left its warm-up.
MIN_LEARNING_STEPS = 100


def check_every_class_has_boxes(spec: str, dataset) -> None:
    """Raises DataError when the training set has no box at all, or a class has none (ignore boxes do not count)."""
    from keras_retinanet.data.validation import DataError

    counts = dataset.boxes_per_class(include_ignored=False)
    if not any(counts.values()):
        raise DataError(
            f"{spec}: none of its {len(dataset)} training images has a box (a missing or empty labels folder? an "
            'empty "annotations" list?): nothing to learn; pass --allow-empty-classes to train on negatives only'
        )
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise DataError(
            f"{spec}: class(es) {', '.join(map(repr, empty))} have no boxes in the training set, so the model "
            "cannot learn them: add boxes or drop them from the class list (--allow-empty-classes trains anyway)"
        )


def describe_plan(
    config: TrainConfig, steps_per_epoch: int, shape_note: str, anchor_report: dict | None
) -> list[str]:
    """The run's plan in one line, and a warning for a run too short to reach its learning rate or to learn."""
    total = steps_per_epoch * config.epochs
    schedule = build_schedule(config, total)
    model = config.model
    batchnorm = "BatchNorm frozen" if config.batchnorm_frozen else "BatchNorm trained"
    if config.init:
        parts = f"weights, anchors, matcher and heads of the --init model ({config.init}); {batchnorm}"
    else:
        anchors = "as given" if anchor_report is None else anchor_report["reason"]
        if anchor_report is not None and anchor_report.get("fitted"):
            anchors = "fitted to the data"
        heads = "GroupNorm" if model.use_group_norm else "without normalisation"
        weights = describe_weights(model.backbone, model.weights)
        parts = (
            f"backbone {model.backbone}, weights {weights}, {batchnorm}; anchors {anchors}; matcher "
            f"{model.matching}; heads {heads}"
        )
    lines = [
        f"plan: {total} steps ({config.epochs} epochs x {steps_per_epoch}), lr {config.learning_rate:g} with "
        f"{schedule.describe()}, weight decay {config.weight_decay:g}; input "
        f"{'x'.join(map(str, parse_image_size(model.image_size)))} ({shape_note}); {parts}"
    ]
    if not schedule.reaches_base_rate():
        lines.append(
            f"warning: the warm-up ({schedule.warmup_steps} steps) is not shorter than the run ({total} steps), "
            f"so the learning rate never reaches {config.learning_rate:g}: leave --warmup-steps unset "
            "(a tenth of the run) or train for more epochs"
        )
    if total < MIN_LEARNING_STEPS and not config.init:
        lines.append(
            f"warning: {total} optimizer steps is very short for a detector trained from scratch (under "
            f"{MIN_LEARNING_STEPS}; the shortest run measured, 260 steps, reached AP 0.16 on chess640); train for "
            "more epochs, or fine-tune with --init"
        )
    return lines


def _history(records: Sequence[dict]) -> dict[str, list]:
    """Per-epoch records -> ``{key: [values]}``, as ``keras.callbacks.History``."""
    history: dict[str, list] = {}
    for record in records:
        for key, value in record.items():
            if key != "epoch":
                history.setdefault(key, []).append(value)
    return history


def _announce(plan: run_folder.RunPlan) -> None:
    if plan.fresh and plan.class_names is not None:
        print(f"{plan.path} has no finished epoch to continue from: training starts from the beginning")
    elif plan.changes and not plan.fresh:
        print(f"continuing {plan.path} with changed settings: {run_folder.describe_changes(plan.changes)}")


def _already_finished(plan: run_folder.RunPlan) -> dict:
    print(plan.finished_message())
    return {**(plan.summary or {}), "already_finished": True}


def _retire_final_model(plan: run_folder.RunPlan) -> None:
    """Moves a finished earlier run's model.keras aside: the folder never holds a final model not this run's."""
    model = plan.path / run_folder.MODEL
    if plan.fresh or not model.exists():
        return
    epochs = (plan.summary or {}).get("epochs_done") or (plan.state.epoch if plan.state else 0)
    kept = plan.path / run_folder.CHECKPOINTS / f"final-epoch-{int(epochs):04d}.keras"
    kept.parent.mkdir(exist_ok=True)
    model.replace(kept)
    print(
        f"{model} (the earlier run's final model, epoch {epochs}) moved to {kept}; this run writes a new one"
    )


def _nan_message(config: TrainConfig, stop: StopOnNaN, backup: TrainingBackup) -> str:
    """The stop's message and what a rerun continues from: the last finite state, or when it has diverged, the
    newest kept state that has not, or the beginning."""
    default = TrainConfig().learning_rate
    lower = f"--learning-rate {min(config.learning_rate / 10, default):g} --allow-changes learning_rate"
    state = backup.saved
    if state is None:
        return (
            f"{stop.message} No epoch finished with finite weights, so there is nothing to continue from: rerun "
            f"with a lower learning rate ({lower}) and the same --output to start again from the beginning."
        )
    states = [s for s in run_folder.list_states(Path(config.output) / run_folder.BACKUP)[0] if not s.legacy]
    kept = "; ".join(
        s.describe() + (f": looks diverged, {s.divergence()}" if s.divergence() else "") for s in states
    )
    diverged = state.divergence()
    if diverged is None:
        return (
            f"{stop.message} {config.output} keeps the last finite state, epoch {state.epoch} of {config.epochs} "
            f"(checkpoint of {state.time_text()}): rerun with a lower learning rate and the same --output to "
            f"continue from it ({lower}), or with a new --output to start over. Kept states: {kept}; "
            "--resume-from-epoch N continues from another (0: from the beginning)."
        )
    sane = next((s for s in states if s.divergence() is None), None)
    resume = sane.epoch if sane is not None else 0
    where = f"the newest sane state, epoch {resume}" if sane is not None else "the beginning"
    return (
        f"{stop.message} The last finite state, epoch {state.epoch} of {config.epochs}, has already diverged "
        f"({diverged}), so a rerun from it would diverge again. Kept states: {kept}. Rerun with the same "
        f"--output from {where}: {lower} --resume-from-epoch {resume}; or use a new --output to start over."
    )


def _report_skipped(dataset) -> None:
    if len(dataset.skipped) or dataset.skipped.clipped:
        print(f"{dataset.name}: {dataset.skipped.summary()}")


def build_callbacks(
    config: TrainConfig,
    output: Path,
    model: keras.Model,
    val_data,
    class_names: Sequence[str],
    stop_on_nan: StopOnNaN,
    write: bool = True,
    resume_from: int | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a run, in the order they must run: ``stop_on_nan`` first, the evaluation before what
    reads ``val_AP``, the log before the backup, :class:`TrainingBackup` last. ``write=False``: nothing that
    writes files. ``resume_from``: the epoch whose kept state the backup restores (0: none)."""
    callbacks: list[keras.callbacks.Callback] = [stop_on_nan, LearningRateLogger()]
    if config.freeze_backbone_epochs > 0:
        callbacks.append(UnfreezeBackbone(config.freeze_backbone_epochs, config.batchnorm_frozen))
    checkpoints = output / run_folder.CHECKPOINTS
    if write:
        checkpoints.mkdir(exist_ok=True)
    logged_later: list[str] = []
    stateful: dict[str, keras.callbacks.Callback] = {}
    if val_data is not None:
        evaluation = EvaluationCallback(val_data, every_n_epochs=config.eval_every, verbose=config.verbose)
        logged_later = evaluation.logged_keys
        callbacks.append(evaluation)
        if write:
            stateful["best_checkpoint"] = BestCheckpoint(checkpoints / "best.keras", guard=stop_on_nan)
            callbacks.append(stateful["best_checkpoint"])
        if config.early_stopping_patience:
            stateful["early_stopping"] = keras.callbacks.EarlyStopping(
                monitor="val_AP", mode="max", patience=config.early_stopping_patience
            )
            callbacks.append(stateful["early_stopping"])
    if config.tensorboard and write:
        log_dir = str(output / "tensorboard")
        callbacks.append(keras.callbacks.TensorBoard(log_dir))
        if val_data is not None and config.tensorboard_images:
            from keras_retinanet.data.pipeline import make_inference_dataset

            count = config.tensorboard_images
            sample = dataclasses.replace(val_data, examples=val_data.examples[:count])
            images, _ = next(iter(make_inference_dataset(sample, config.model.image_size, batch_size=count)))
            callbacks.append(PredictionImages(np.asarray(images), log_dir, class_names))
    if write:
        callbacks.append(MetricsCSVLogger(output / run_folder.LOG, extra_keys=logged_later, append=True))
        callbacks.append(LastCheckpoint(checkpoints / "last.keras", guard=stop_on_nan))
    backup = TrainingBackup(
        output / run_folder.BACKUP, stop_on_nan, stateful=stateful, save=write, resume_from_epoch=resume_from
    )
    return [*callbacks, backup]


# ModelConfig fields that still act with --init: the size trained at, and the losses (built from config.model).
INIT_HONOURS = {"image_size", "focal_alpha", "focal_gamma", "box_loss", "box_loss_beta"}


def _initial_model(config, class_names):
    """``config.init``'s architecture and weights for ``class_names``; a model option it would ignore raises."""
    from keras_retinanet.model.config import ModelConfig
    from keras_retinanet.training.finetune import finetune_model, format_report

    # Either recipe's model options are defaults here: the init model decides them.
    defaults = [ModelConfig(), TrainConfig.from_recipe("paper").model]
    ignored = [
        f"{field.name}={getattr(config.model, field.name)!r}"
        for field in dataclasses.fields(ModelConfig)
        if field.name not in INIT_HONOURS
        and all(getattr(config.model, field.name) != getattr(d, field.name) for d in defaults)
    ]
    if ignored:
        raise ValueError(
            f"--init {config.init} keeps that model's architecture, anchors, matcher and decoder; these model "
            f"options would be ignored: {', '.join(ignored)}. Remove them (with --init only --image-size and the "
            "loss options apply)"
        )
    model, report = finetune_model(config.init, class_names, image_size=config.model.image_size)
    print(format_report(report))
    return model
