"""The default recipe and the paper's: the schedule that fits the run, the plan line and its warnings, the
input shape taken from the data, and the paper recipe kept exact."""

from __future__ import annotations

import numpy as np
import pytest

from keras_retinanet.cli.retinanet import build_parser
from keras_retinanet.cli.train import resolve_config
from keras_retinanet.training.config import TrainConfig
from keras_retinanet.training.image_shape import resolve_image_shape
from keras_retinanet.training.loop import build_schedule, describe_plan


def _rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


@pytest.mark.parametrize(
    "total, warmup",
    [(100, 10), (1000, 100), (90_000, 500)],  # a tenth of the run, at most the paper's 500
)
def test_default_schedule_warms_up_for_a_tenth_of_the_run_then_cosine(total, warmup):
    schedule = build_schedule(TrainConfig(model={"weights": None}), total)
    assert (schedule.decay, schedule.warmup_steps) == ("cosine", warmup)
    before, peak, half, end = _rates(schedule, [warmup - 1, warmup, warmup + (total - warmup) // 2, total])
    # Linear from 0.001x: one step before the end of the warm-up, 0.01 * (0.001 + 0.999 * (w - 1) / w).
    np.testing.assert_allclose(before, 0.01 * (0.001 + 0.999 * (warmup - 1) / warmup), rtol=1e-5)
    np.testing.assert_allclose(peak, 0.01, rtol=1e-6)  # the base rate is reached...
    assert _rates(schedule, range(0, total + 1, max(1, total // 200))).max() <= 0.01 + 1e-9
    np.testing.assert_allclose(
        half, 0.005, rtol=2e-3
    )  # ...then cos: half-way down at the middle of the decay
    np.testing.assert_allclose(end, 0.0, atol=1e-9)


def test_paper_recipe_is_the_papers_schedule_at_90k_steps():
    schedule = build_schedule(TrainConfig.from_recipe("paper"), 90_000)
    assert (schedule.decay, schedule.warmup_steps, schedule.decay_steps()) == ("step", 500, [60_000, 80_000])
    rates = _rates(schedule, [0, 500, 59_999, 60_000, 79_999, 80_000, 89_999])
    np.testing.assert_allclose(rates, [1e-5, 0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001], rtol=1e-5)


@pytest.mark.parametrize("total, decays", [(100, [67, 89]), (1000, [667, 889])])
def test_step_schedule_of_a_short_run_decays_only_after_its_warmup(total, decays):
    schedule = build_schedule(TrainConfig(schedule="step", model={"weights": None}), total)
    assert schedule.decay_steps() == decays and schedule.warmup_steps == total // 10
    peak, cut = _rates(schedule, [schedule.warmup_steps, decays[0]])
    np.testing.assert_allclose([peak, cut], [0.01, 0.001], rtol=1e-5)
    # A warm-up the user set past the first milestone still ends at the base rate before any decay.
    late = build_schedule(TrainConfig(schedule="step", warmup_steps=80), 100)
    assert late.decay_steps() == [81, 89]
    np.testing.assert_allclose(_rates(late, [80, 81]), [0.01, 0.001], rtol=1e-5)


def test_plan_line_names_steps_warmup_decay_input_anchors_matcher():
    config = TrainConfig(epochs=20, model={"image_size": (288, 384), "weights": None})
    lines = describe_plan(config, 18, "the data's", {"fitted": True, "reason": "x"})
    assert lines == [
        "plan: 360 steps (20 epochs x 18), lr 0.01 with warm-up 36 steps (10%), cosine to 0 at step 360, weight "
        "decay 0.0001; "
        "input 288x384 (the data's); backbone resnet50, weights random (from scratch), BatchNorm trained; anchors "
        "fitted to the data; matcher atss; heads GroupNorm"
    ]


def test_short_runs_are_warned_about_in_one_line():
    # Issue 23's run: 360 steps with the paper's 500-step warm-up never reach the base rate.
    paper = describe_plan(TrainConfig.from_recipe("paper", epochs=20), 18, "square", None)
    assert len(paper) == 2 and paper[0].startswith("plan: 360 steps") and "x0.1 at steps 501, 501" in paper[0]
    assert paper[1] == (
        "warning: the warm-up (500 steps) is not shorter than the run (360 steps), so the learning rate never "
        "reaches 0.01: leave --warmup-steps unset (a tenth of the run) or train for more epochs"
    )
    tiny = describe_plan(TrainConfig(epochs=2), 30, "square", None)
    assert tiny[1:] == [
        "warning: 60 optimizer steps is very short for a detector trained from scratch (under 100; the shortest "
        "run measured, 260 steps, reached AP 0.16 on chess640); train for more epochs, or fine-tune with --init"
    ]
    assert len(describe_plan(TrainConfig(epochs=4), 30, "square", None)) == 1


def _train_config(*flags):
    return resolve_config(build_parser().parse_args(["train", *flags]))


def test_recipe_flag_comes_before_the_config_file_and_the_flags(tmp_path):
    default = _train_config()
    assert (default.anchors, default.image_shape, default.schedule, default.warmup_steps) == (
        "auto", "data", "cosine", None,
    )  # fmt: skip
    assert (default.model.matching, default.model.use_group_norm) == ("atss", True)
    paper = _train_config("--recipe", "paper", "--matching", "atss")
    assert (paper.anchors, paper.image_shape, paper.schedule, paper.warmup_steps) == (
        "given",
        "square",
        "step",
        500,
    )
    assert (paper.model.matching, paper.model.use_group_norm) == ("atss", False)  # the flag wins
    run_file = tmp_path / "run.yaml"
    run_file.write_text("recipe: paper\nschedule: cosine\n")
    from_file = _train_config("--config", str(run_file))
    assert (from_file.anchors, from_file.schedule) == ("given", "cosine")  # the file's own key wins
    overridden = _train_config("--config", str(run_file), "--recipe", "default")
    assert (overridden.anchors, overridden.schedule, overridden.model.matching) == ("auto", "cosine", "atss")
    with pytest.raises(ValueError, match="option recipe: expected one of default, paper, got 'yolo'"):
        TrainConfig.from_recipe("yolo")


class _Data:
    def __init__(self, sizes):
        self.examples = [{"width": w, "height": h} for w, h in sizes]


@pytest.mark.parametrize(
    "image_size, shape, sizes, expected",
    [
        (384, "data", [(640, 480)] * 3 + [(480, 640)], (288, 384)),  # BCCD's 4:3 photos (median)
        (384, "data", [(480, 640)], (384, 288)),  # portrait
        (416, "data", [(640, 428)], (288, 416)),  # chess640: 416 * 428 / 640 = 278 -> 288
        (384, "square", [(640, 480)], (384, 384)),
        ((256, 384), "data", [(640, 480)], (256, 384)),  # H x W as given
    ],
)
def test_input_shape_follows_the_training_images(image_size, shape, sizes, expected):
    config = TrainConfig(image_shape=shape, model={"image_size": image_size})
    resolved, note = resolve_image_shape(config, _Data(sizes))
    assert tuple(np.broadcast_to(resolved.model.image_size, 2)) == expected, note


def test_a_resumed_run_keeps_its_resolved_shape():
    previous = TrainConfig(model={"image_size": (288, 384)})
    again = TrainConfig(model={"image_size": 384})
    resolved, note = resolve_image_shape(again, _Data([(100, 100)]), previous=previous)
    assert (resolved.model.image_size, note) == ((288, 384), "the run folder's")
