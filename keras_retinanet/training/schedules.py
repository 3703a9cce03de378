"""Learning-rate schedules of detection training: linear warm-up, then step decay or cosine."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

# The paper's warm-up (Detectron: WARMUP_ITERS 500 of 90k) and the share of a short run it takes instead.
PAPER_WARMUP_STEPS = 500
WARMUP_FRACTION = 0.1
# A pretrained backbone under freshly initialised heads: a 100-step warm-up beat a tenth of a 10-epoch run
# (26-37 steps) on BCCD and chess640 (docs/recipes.md).
PRETRAINED_MIN_WARMUP_STEPS = 100


def default_warmup_steps(total_steps: int, pretrained: bool = False) -> int:
    """A tenth of the run, at most the paper's 500 steps (which never end in a run of a few hundred); for a
    pretrained backbone at least :data:`PRETRAINED_MIN_WARMUP_STEPS`, but never more than half the run."""
    steps = math.ceil(WARMUP_FRACTION * total_steps)
    if pretrained:
        steps = max(steps, min(PRETRAINED_MIN_WARMUP_STEPS, total_steps // 2))
    return max(1, min(PAPER_WARMUP_STEPS, steps))


@keras.saving.register_keras_serializable(package="keras_retinanet")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``warmup_factor * base`` to the base rate over ``warmup_steps``, then decay.

    Args:
        total_steps: length of the training in optimizer steps.
        decay: ``"step"`` (x ``gamma`` at each fraction in ``milestones`` of ``total_steps``, never before the
            warm-up's end), ``"cosine"`` (to 0 at ``total_steps``) or ``"constant"``.
        warmup_factor: the warm-up's starting fraction of the base rate.
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
        else:
            rate = ops.convert_to_tensor(self.base_learning_rate, "float32")
            for decay_step in self.decay_steps():  # none when constant
                rate = ops.where(step >= decay_step, rate * self.gamma, rate)
        if self.warmup_steps > 0:
            alpha = ops.clip(step / self.warmup_steps, 0.0, 1.0)
            rate = rate * (self.warmup_factor * (1.0 - alpha) + alpha)
        return rate

    def decay_steps(self) -> list[int]:
        if self.decay != "step":
            return []
        # The first step at or past each fraction of the run, and past the warm-up's last step.
        return [max(math.ceil(m * self.total_steps - 1e-6), self.warmup_steps + 1) for m in self.milestones]

    def reaches_base_rate(self) -> bool:
        return self.warmup_steps < self.total_steps

    def describe(self) -> str:
        """One line: ``warm-up 111 steps (10%), cosine to 0 at step 1110``."""
        share = f" ({self.warmup_steps / max(self.total_steps, 1):.0%})" if self.total_steps else ""
        text = f"warm-up {self.warmup_steps} steps{share}, "
        if self.decay == "step":
            points = ", ".join(str(s) for s in self.decay_steps())
            return text + f"x{self.gamma:g} at steps {points}"
        if self.decay == "cosine":
            return text + f"cosine to 0 at step {self.total_steps}"
        return text + "then constant"

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
