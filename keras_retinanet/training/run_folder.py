"""A training run folder: what it holds, whether a new command may use it, and the states a rerun resumes from.

Layout (every file written atomically, so a kill leaves the previous good version):

    DIR/config.yaml              the configuration that made the run (the latest one allowed to continue it)
    DIR/labels.txt               one class name per line (as beside exported files; earlier versions: class_names.txt)
    DIR/anchors.json             with --anchors auto: anchor coverage per class before / after the fit
    DIR/backup/epoch-NNNN.weights.h5, epoch-NNNN.json
                                 the training state after epoch NNNN (weights and optimiser state) and its
                                 marker (size and SHA-256 of the weights, time, epoch logs, callback states),
                                 written after the weights: a marker always names complete weights; two kept
    DIR/checkpoints/last.keras   the model after the last finished epoch; best.keras, by validation AP
    DIR/model.keras              the final model
    DIR/log.csv, DIR/train_summary.json, DIR/tensorboard/
    DIR/.lock                    held (``flock``) by the training that uses the folder

Needs only the standard library and PyYAML.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from keras_retinanet import atomic
from keras_retinanet.conventions import LABELS_FILE
from keras_retinanet.model.config import ModelConfig
from keras_retinanet.training.config import FITTED_ANCHOR_FIELDS, TrainConfig
from keras_retinanet.training.image_shape import same_requested_size

CONFIG = "config.yaml"
CLASS_NAMES = LABELS_FILE
LEGACY_CLASS_NAMES = "class_names.txt"  # what earlier versions wrote; still read
MODEL = "model.keras"
SUMMARY = "train_summary.json"
LOG = "log.csv"
CHECKPOINTS = "checkpoints"
BACKUP = "backup"
LOCK = ".lock"
# What Keras' BackupAndRestore wrote (earlier versions of this package): read, never written.
LEGACY_WEIGHTS = "latest.weights.h5"
LEGACY_METADATA = "training_metadata.json"

# Options that only change what is shown or where it is stored: a rerun may change them without asking.
# image_shape acts only through the image_size it resolves to, which is compared as a model option.
FREE_KEYS = frozenset({"output", "verbose", "tensorboard", "tensorboard_images", "cache", "image_shape"})
# TrainConfig options that decide the model's variables or the optimiser's state (slots, loss scaling): the
# saved state cannot be loaded into a run with other values. Every ModelConfig option is fixed as well.
FIXED_TRAIN_KEYS = frozenset({"optimizer", "freeze_batchnorm", "mixed_precision", "init", "anchors"})

_STATE_NAME = re.compile(r"^epoch-(\d+)\.json$")
# A kept state looks diverged when its largest weight is this many times the largest at the start, or its loss
# this many times the highest epoch loss before it (or than 1).
WEIGHT_GROWTH_LIMIT = 100.0
LOSS_JUMP_LIMIT = 100.0
# States kept in backup/: the previous good state survives damage to the newest.
KEPT_STATES = 2


class RunFolderError(ValueError):
    """A run folder that the command must not use as it is; the message says why and what to do."""


def fixed_keys() -> frozenset[str]:
    """Options that can never change in an existing run folder."""
    return FIXED_TRAIN_KEYS | {field.name for field in dataclasses.fields(ModelConfig)}


def flat_config(config: TrainConfig) -> dict[str, Any]:
    """``config`` as one flat mapping of plain values (the model's options under their flag names)."""
    values = config.to_dict()
    model = values.pop("model")
    # Compared by effect: an unset freeze_batchnorm is the choice it resolves to.
    values["freeze_batchnorm"] = config.batchnorm_frozen
    return {**values, **model}


@dataclasses.dataclass(frozen=True)
class TrainingState:
    """One saved training state in ``DIR/backup``; ``epoch``: epochs finished. The legacy format (Keras'
    ``BackupAndRestore``) has no ``epochs``, ``marker``, ``size`` or ``sha256``.

    Attributes:
        history: the logs of every epoch up to this one (dicts with ``epoch``, 0-based).
        callbacks: saved state of the callbacks that have one, by name.
        weights_max_abs: the largest absolute weight of the model then (None in older formats).
        initial_weights_max_abs: the same at the start of the run (None if unknown).
    """

    epoch: int
    epochs: int | None
    saved_at: float
    weights: Path
    marker: Path | None = None
    size: int | None = None
    sha256: str | None = None
    history: tuple = ()
    callbacks: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    weights_max_abs: float | None = None
    initial_weights_max_abs: float | None = None

    @property
    def legacy(self) -> bool:
        return self.marker is None

    @property
    def loss(self) -> float | None:
        value = self.history[-1].get("loss") if self.history else None
        return None if value is None else float(value)

    def divergence(self) -> str | None:
        """None when the state looks sane; otherwise why a rerun from it would likely diverge again."""
        loss = self.loss
        if loss is not None and not math.isfinite(loss):
            return f"its loss was {loss}"
        earlier = [float(r["loss"]) for r in self.history[:-1] if r.get("loss") is not None]
        earlier = [value for value in earlier if math.isfinite(value)]
        # The reference is at least 1: an epoch without positive anchors logs a tiny loss (~0.002) that the
        # next, ordinary epoch's (~0.4) would otherwise appear to jump from.
        limit = LOSS_JUMP_LIMIT * max([1.0, *earlier])
        if loss is not None and earlier and loss > limit:
            return (
                f"its loss {loss:.3g} is over {limit:.3g} ({LOSS_JUMP_LIMIT:g} times the highest epoch loss before "
                "it, or than 1)"
            )
        largest, start = self.weights_max_abs, self.initial_weights_max_abs
        if largest is not None and start and largest > WEIGHT_GROWTH_LIMIT * start:
            return (
                f"its largest weight is {largest:.3g}, {largest / start:.3g} times the largest at the start"
            )
        return None

    def describe(self) -> str:
        """``epoch 2 (loss 0.84, largest weight 4.6, saved 2026-12-05 17:29:58)``."""
        facts = [] if self.loss is None else [f"loss {self.loss:.3g}"]
        facts += [] if self.weights_max_abs is None else [f"largest weight {self.weights_max_abs:.3g}"]
        return f"epoch {self.epoch} ({', '.join([*facts, f'saved {self.time_text()}'])})"

    def time_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))

    def damage(self) -> str | None:
        """None when the weights file is the one the marker describes; otherwise what is wrong."""
        try:
            size = self.weights.stat().st_size
        except FileNotFoundError:
            return "its weights file is missing"
        if size == 0:
            return "its weights file is empty (0 bytes)"
        if self.size is not None and size != self.size:
            return f"its weights file has {size} bytes, {self.size} were written"
        if self.sha256 is not None and file_sha256(self.weights) != self.sha256:
            return "its weights file does not match the SHA-256 written with it"
        return None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_paths(backup_dir: str | os.PathLike, epoch: int) -> tuple[Path, Path]:
    backup_dir = Path(backup_dir)
    return backup_dir / f"epoch-{epoch:04d}.weights.h5", backup_dir / f"epoch-{epoch:04d}.json"


def list_states(backup_dir: str | os.PathLike) -> tuple[list[TrainingState], list[str]]:
    """The committed states in ``backup_dir``, newest first (legacy included), and the unreadable markers."""
    backup_dir = Path(backup_dir)
    states, problems = [], []
    if not backup_dir.is_dir():
        return states, problems
    for marker in backup_dir.iterdir():
        if not _STATE_NAME.match(marker.name):
            continue
        try:
            values = json.loads(marker.read_text(encoding="utf-8"))
            states.append(
                TrainingState(
                    epoch=int(values["epoch"]),
                    epochs=values.get("epochs"),
                    saved_at=float(values["saved_at"]),
                    weights=backup_dir / values["weights"],
                    marker=marker,
                    size=int(values["size"]),
                    sha256=str(values["sha256"]),
                    history=tuple(values.get("history", ())),
                    callbacks=dict(values.get("callbacks", {})),
                    weights_max_abs=values.get("weights_max_abs"),
                    initial_weights_max_abs=values.get("initial_weights_max_abs"),
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{marker}: unreadable ({error})")
    legacy_weights, legacy_metadata = backup_dir / LEGACY_WEIGHTS, backup_dir / LEGACY_METADATA
    if legacy_weights.exists():
        try:
            epoch = int(json.loads(legacy_metadata.read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{legacy_metadata}: unreadable ({error})")
        else:
            states.append(TrainingState(epoch, None, legacy_weights.stat().st_mtime, legacy_weights))
    states.sort(key=lambda state: (state.epoch, not state.legacy), reverse=True)
    return states, problems


def commit_state(
    backup_dir: str | os.PathLike,
    epoch: int,
    epochs: int | None,
    history: Sequence[Mapping[str, Any]],
    callbacks: Mapping[str, Any],
    weights_max_abs: float | None = None,
    initial_weights_max_abs: float | None = None,
) -> TrainingState:
    """Writes the marker of the state after ``epoch`` epochs, whose weights are already in place, then deletes
    every other state but the :data:`KEPT_STATES` newest (newer ones from an abandoned attempt and legacy files)."""
    weights, marker = state_paths(backup_dir, epoch)
    state = TrainingState(
        epoch=epoch,
        epochs=epochs,
        saved_at=time.time(),
        weights=weights,
        marker=marker,
        size=weights.stat().st_size,
        sha256=file_sha256(weights),
        history=tuple(history),
        callbacks=dict(callbacks),
        weights_max_abs=weights_max_abs,
        initial_weights_max_abs=initial_weights_max_abs,
    )
    fields = [field.name for field in dataclasses.fields(state) if field.name not in ("weights", "marker")]
    values = {name: getattr(state, name) for name in fields}
    atomic.write_json(marker, {"format": 1, **values, "saved": state.time_text(), "weights": weights.name})
    _prune(Path(backup_dir), epoch, KEPT_STATES)
    return state


def _prune(backup_dir: Path, newest: int, keep: int) -> None:
    kept = set(range(newest - keep + 1, newest + 1))
    markers, weights = [], []
    for path in backup_dir.iterdir():
        match = re.match(r"^epoch-(\d+)\.(json|weights\.h5)$", path.name)
        if match and int(match.group(1)) not in kept:
            (markers if match.group(2) == "json" else weights).append(path)
        elif path.name.startswith(LEGACY_METADATA):
            markers.append(path)
        elif path.name.startswith(LEGACY_WEIGHTS):
            weights.append(path)
    # Markers first: a kill in between leaves weights without a marker (ignored), never the reverse.
    for path in markers + weights:
        path.unlink(missing_ok=True)


@dataclasses.dataclass
class RunPlan:
    """What :func:`plan_run` found; ``fresh``: nothing to continue, ``finished``: nothing to do, ``state``: the
    newest committed state, ``changes``: ``{option: (old, new)}``, ``previous``: the folder's configuration."""

    path: Path
    fresh: bool
    finished: bool = False
    state: TrainingState | None = None
    changes: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)
    class_names: list[str] | None = None
    summary: dict | None = None
    previous: TrainConfig | None = None

    def finished_message(self) -> str:
        done = (self.summary or {}).get("epochs_done", self.state.epoch if self.state else "all")
        unused = (
            f" The changed settings ({describe_changes(self.changes)}) act only on epochs still to train, so "
            f"nothing was changed ({CONFIG} included)."
            if self.changes
            else ""
        )
        return (
            f"{self.path} has already finished ({done} epochs, {self.path / MODEL}): nothing to do.{unused} To "
            "train longer add --epochs N --allow-changes epochs; to start over use a new --output."
        )

    def check_class_names(self, class_names: Sequence[str]) -> None:
        """Raises :class:`RunFolderError` if the run continues on data with other classes."""
        if self.fresh or self.class_names is None or list(class_names) == self.class_names:
            return
        raise RunFolderError(
            f"{self.path} was trained on the classes {self.class_names}; the data now gives "
            f"{list(class_names)}: nothing was changed. Use a new --output to train on these classes."
        )


def _show(value: Any) -> str:
    """A value as a user would type it: ``none``, ``true``, ``0.01``, ``[32, 64]``."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key} {_show(old)} -> {_show(new)}" for key, (old, new) in changes.items())


def parse_allow_changes(values: str | Iterable[str] | None) -> frozenset[str] | None:
    """``"epochs,learning_rate"``, ``["epochs", "learning-rate"]`` -> option names; None for ``"all"``."""
    if values is None:
        return frozenset()
    if isinstance(values, str):
        values = [values]
    names = {part.strip().replace("-", "_") for value in values for part in re.split(r"[,\s]+", value)}
    names.discard("")
    if "all" in names:
        return None
    known = set(flat_config(TrainConfig()))
    names = {name[len("model.") :] if name.startswith("model.") else name for name in names}
    unknown = sorted(names - known)
    if unknown:
        close = {name: difflib.get_close_matches(name, sorted(known), n=1) for name in unknown}
        hints = [f"{name} (did you mean {c[0]}?)" if c else name for name, c in close.items()]
        raise RunFolderError(f"--allow-changes: unknown option(s) {', '.join(hints)}")
    fixed = sorted(names & fixed_keys())
    if fixed:
        raise RunFolderError(
            f"--allow-changes: {', '.join(fixed)} can never change in an existing run folder (they define the "
            "model and the optimiser's state): use a new --output to train with other values"
        )
    return frozenset(names)


def _training_files(path: Path) -> list[str]:
    found = [name for name in (MODEL, SUMMARY, LOG) if (path / name).exists()]
    found += [f"{CHECKPOINTS}/{p.name}" for p in sorted((path / CHECKPOINTS).glob("*.keras"))]
    found += [f"{BACKUP}/{p.name}" for p in sorted((path / BACKUP).glob("*")) if not p.name.startswith(".")]
    return found


def plan_run(config: TrainConfig, allow_changes: str | Iterable[str] | None = ()) -> RunPlan:
    """Checks ``config.output`` against ``config`` without writing anything; raises :class:`RunFolderError`
    when the folder's run may not continue with it (:func:`fixed_keys` differ, options not in
    ``allow_changes`` do, or fewer epochs than already trained)."""
    allowed = parse_allow_changes(allow_changes)
    path = Path(config.output)
    if not (path / CONFIG).exists():
        found = _training_files(path) if path.is_dir() else []
        if found:
            raise RunFolderError(
                f"{path} holds training files ({', '.join(found[:4])}) but no {CONFIG}, so this command "
                "cannot be checked against the one that made them: nothing was changed. Use a new --output."
            )
        return RunPlan(path, fresh=True)
    try:
        previous = TrainConfig.from_yaml(path / CONFIG)
    except (OSError, ValueError) as error:
        reason = str(error).removeprefix(f"{path / CONFIG}: ")
        raise RunFolderError(
            f"{path / CONFIG} cannot be read ({reason}), so this command cannot be checked against the run "
            "in that folder: nothing was changed. Use a new --output."
        ) from None
    old, new = flat_config(previous), flat_config(config)
    changes = {key: (old[key], new[key]) for key in new if key not in FREE_KEYS and old.get(key) != new[key]}
    if config.anchors != "given" and previous.anchors == config.anchors:
        # Fitted or read by the run (training.anchors), not given: the resumed run reuses config.yaml's.
        for key in FITTED_ANCHOR_FIELDS:
            changes.pop(key, None)
    if same_requested_size(previous, config):
        changes.pop("image_size", None)  # resolved from the data's shape by the run (training.image_shape)
    state = next(iter(list_states(path / BACKUP)[0]), None)
    summary = _read_json(path / SUMMARY)
    names_file = next((path / n for n in (CLASS_NAMES, LEGACY_CLASS_NAMES) if (path / n).exists()), None)
    class_names = names_file.read_text(encoding="utf-8").splitlines() if names_file else None
    plan = RunPlan(
        path,
        fresh=False,
        state=state,
        changes=changes,
        class_names=class_names,
        summary=summary,
        previous=previous,
    )
    has_model = (path / MODEL).exists()
    if state is None and not has_model:
        # Nothing finished to continue from or to protect (e.g. a NaN or a kill in the first epoch).
        plan.fresh = True
        return plan
    if changes:
        fixed = [key for key in changes if key in fixed_keys()]
        refused = [key for key in changes if allowed is not None and key not in allowed]
        if fixed:
            raise RunFolderError(
                f"{path} was made by a different configuration ({describe_changes(changes)}): "
                f"{', '.join(fixed)} cannot change in an existing run folder (they define the model and the "
                "optimiser's state), so nothing was changed. Use a new --output to train with these settings."
            )
        if refused:
            raise RunFolderError(
                f"{path} was made by a different configuration ({describe_changes(changes)}): nothing was "
                f"changed. To continue this run with the new settings add --allow-changes {','.join(refused)}; "
                "to start a new run use a new --output."
            )
    # Earlier versions wrote the summary only at the end of a run, without "finished".
    finished = has_model and bool(
        summary and summary.get("finished", "stopped_on_nan" in summary and summary["stopped_on_nan"] is None)
    )
    # Changes act only on epochs still to train: with none left, the run stays as it is (config.yaml included,
    # which must keep describing the model that was trained).
    if finished and (not changes or (state is not None and config.epochs <= state.epoch)):
        plan.finished = True
        return plan
    if state is None:
        raise RunFolderError(
            f"{path} holds a trained {MODEL} but no training state to continue from ({path / BACKUP} has "
            "none): nothing was changed. Use a new --output, or move the model away to train again here."
        )
    if config.epochs < state.epoch:
        raise RunFolderError(
            f"{path} has already trained {state.epoch} epochs; --epochs {config.epochs} is fewer: nothing was "
            "changed. Use a new --output for a shorter run."
        )
    return plan


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def locked(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Creates the run folder and holds its ``.lock`` for the block (``FolderInUseError`` for a second one)."""
    return atomic.locked_folder(path, LOCK, "another training")
