"""Input-pipeline throughput (images/s): decode, decode + augment + resize, and the full training pipeline.

Protocol: a detection dataset (BCCD trainval, 292 images, in the README), the model's ``image_size`` canvas,
horizontal flip + scale jitter (0.75-1.25) with random crop, label encoding with the model's anchors and matcher
(the paper preset's: 49,104 anchors per image at 512),
``batch_size`` 8. One warm-up epoch (tracing, XLA compilation, file cache), then the median of ``epochs`` epochs.
The figure is CPU-bound: run it alone.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarking.timing import run_phase
from keras_retinanet.conventions import DEFAULT_IMAGE_SIZE
from keras_retinanet.imaging import parse_image_size
from keras_retinanet.model.config import ModelConfig
from keras_retinanet.model.presets import PRESETS

STAGES = ("decode", "augment", "full", "full-no-xla")
# Where the BCCD dataset sits relative to a checkout of this repository (the README's pipeline figures).
BCCD_FROM_CHECKOUT = Path("..", "shared", "datasets", "bccd", "BCCD")


def bccd_spec(repo_root: str | Path) -> str | None:
    """``voc:<BCCD>:trainval`` when BCCD sits at ``repo_root/../shared/datasets/bccd/BCCD``, else None."""
    root = Path(repo_root) / BCCD_FROM_CHECKOUT
    return f"voc:{root}:trainval" if root.is_dir() else None


def _rate(ds: Iterable, images_per_element: int, epochs: int) -> float:
    """Median images/s over ``epochs`` passes through ``ds`` after one untimed pass."""
    for _ in ds:  # warm-up epoch
        pass
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for _ in ds:
            count += images_per_element
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def pipeline_throughput(
    spec: str,
    model: ModelConfig = PRESETS["paper"],
    batch_size: int = 8,
    epochs: int = 3,
    cache: bool = False,
    stages: Sequence[str] = STAGES,
) -> dict[str, float]:
    """Images/s of each requested stage of the training input pipeline.

    Args:
        spec: dataset spec for ``keras_retinanet.data.load_dataset`` (e.g. ``voc:DIR:trainval``); bad records
            are skipped.
        model: the model trained: its ``image_size`` is the canvas, its anchors, box coding and matcher
            (``ModelConfig.build_label_encoder``) encode the labels.
        batch_size: images per batch (the augment and full stages).
        epochs: timed epochs (median), after one warm-up epoch.
        cache: cache decoded images in the full stages.
        stages: any of :data:`STAGES`: ``decode`` (read + decode), ``augment`` (+ flip, jitter, crop, resize),
            ``full`` (``make_training_dataset`` with XLA-compiled label encoding), ``full-no-xla``.
    Returns:
        ``{stage label: images/s}``; labels are ``decode``, ``decode+augment+resize``,
        ``full (flip+jitter+encode)``, ``full-no-xla (flip+jitter+encode)`` (``, cached`` added with ``cache``).
    Raises:
        ValueError: an unknown stage.
    """
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown pipeline stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    import tensorflow as tf

    from keras_retinanet.data import load_dataset
    from keras_retinanet.data.pipeline import _decoded, make_training_dataset, train_transform

    dataset = load_dataset(spec, skip_bad=True)
    size = parse_image_size(model.image_size)
    results = {}
    if "decode" in stages:
        results["decode"] = _rate(_decoded(dataset, tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE), 1, epochs)
    if "augment" in stages:
        seeds = tf.data.Dataset.random(seed=0).batch(2)
        ds = tf.data.Dataset.zip(_decoded(dataset, tf.data.AUTOTUNE), seeds).map(
            lambda e, s: train_transform(e, s, size, dataset.max_boxes), num_parallel_calls=tf.data.AUTOTUNE
        )
        results["decode+augment+resize"] = _rate(
            ds.batch(batch_size).prefetch(tf.data.AUTOTUNE), batch_size, epochs
        )
    encoder = model.build_label_encoder()
    for name, jit in (("full", True), ("full-no-xla", False)):
        if name in stages:
            ds = make_training_dataset(
                dataset, encoder, size, batch_size, seed=0, cache=cache, jit_encode=jit
            )
            results[f"{name} (flip+jitter+encode{', cached' if cache else ''})"] = _rate(
                ds, batch_size, epochs
            )
    return results


def measure_pipeline(
    results: dict[str, Any],
    spec: str | None,
    model: ModelConfig,
    batch_size: int,
    epochs: int,
    stages: Sequence[str],
    synthetic_images: int = 64,
    synthetic_size: int = DEFAULT_IMAGE_SIZE,
) -> dict[str, Any]:
    """Runs :func:`pipeline_throughput` as the ``pipeline`` phase into ``results["pipeline"]``; returns it.

    Args:
        spec: dataset spec; None writes a synthetic COCO set (``synthetic_images`` images of
            ``synthetic_size`` pixels, ``keras_retinanet.data.synthetic``) to a temporary directory.
    Returns:
        ``{"images_per_s": {stage: rate}, "spec", "batch_size", ...}`` or ``{"error": ...}``.
    """
    scratch = None
    if spec is None:
        from keras_retinanet.data.synthetic import make_synthetic_coco

        scratch = Path(tempfile.mkdtemp(prefix="retinanet-bench-data-"))
        spec = make_synthetic_coco(scratch, num_images=synthetic_images, image_size=synthetic_size)

    def run() -> dict[str, Any]:
        rates = pipeline_throughput(spec, model, batch_size, epochs, stages=stages)
        return {
            "images_per_s": {k: round(v, 1) for k, v in rates.items()},
            "spec": spec,
            "batch_size": batch_size,
        }

    try:
        return run_phase(results, "pipeline", run)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
