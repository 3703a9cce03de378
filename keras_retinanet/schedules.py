"""Learning-rate schedules of detection training: linear warm-up, then step decay or cosine."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_retinanet")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``warmup_factor * base`` to the base rate over ``warmup_steps``, then decay.

    Args:
        base_learning_rate: rate after warm-up (0.01 at batch 16 in the paper).
        total_steps: length of the training in optimizer steps.
        decay: ``"step"`` (x ``gamma`` at each fraction in ``milestones`` of ``total_steps``; the paper's 1x
            schedule is 60k and 80k of 90k, milestones (2/3, 8/9)), ``"cosine"`` (to 0 at ``total_steps``) or
            ``"constant"``.
        warmup_steps: length of the linear warm-up (0 disables it).
        warmup_factor: the warm-up's starting fraction of the base rate (detectron2: 0.001).
        milestones, gamma: the step decay.
    """

    def __init__(
        self,
        base_learning_rate: float,
        total_steps: int,
        decay: str = "step",
        warmup_steps: int = 500,
        warmup_factor: float = 0.001,
        milestones: Sequence[float] = (2 / 3, 8 / 9),
        gamma: float = 0.1,
    ):
        if decay not in ("step", "cosine", "constant"):
            raise ValueError(f"decay must be 'step', 'cosine' or 'constant', got {decay!r}")
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = int(total_steps)
        self.decay = decay
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.milestones = [float(m) for m in milestones]
        self.gamma = float(gamma)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.decay == "cosine":
            decay_steps = max(self.total_steps - self.warmup_steps, 1)
            progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
            rate = 0.5 * self.base_learning_rate * (1.0 + ops.cos(3.141592653589793 * progress))
        elif self.decay == "step":
            rate = ops.convert_to_tensor(self.base_learning_rate, "float32")
            for milestone in self.milestones:
                rate = ops.where(step >= milestone * self.total_steps, rate * self.gamma, rate)
        else:
            rate = ops.convert_to_tensor(self.base_learning_rate, "float32")
        if self.warmup_steps > 0:
            alpha = ops.clip(step / self.warmup_steps, 0.0, 1.0)
            rate = rate * (self.warmup_factor * (1.0 - alpha) + alpha)
        return rate

    def get_config(self) -> dict:
        return {
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "decay": self.decay,
            "warmup_steps": self.warmup_steps,
            "warmup_factor": self.warmup_factor,
            "milestones": self.milestones,
            "gamma": self.gamma,
        }
