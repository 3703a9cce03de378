"""Input-pipeline throughput (images/s): decode, augmentation + resize, and the full training pipeline.

Protocol: BCCD trainval (292 images), 512x512, horizontal flip + scale jitter (0.75-1.25) with random crop,
label encoding with the paper's anchors (49,104 per image), batch 8. One warm-up epoch (tracing, XLA
compilation, file cache), then the median of ``--epochs`` epochs. Run alone: the figure is CPU-bound.

    python tools/benchmark_pipeline.py [--spec voc:../shared/datasets/bccd/BCCD:trainval] [--cache]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence

DEFAULT_SPEC = (
    "voc:"
    + os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "bccd", "BCCD")
    + ":trainval"
)


def _rate(ds, images_per_element: int, epochs: int) -> float:
    for _ in ds:  # warm-up epoch
        pass
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for _ in ds:
            count += images_per_element
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def benchmark(
    spec: str,
    image_size: int = 512,
    batch_size: int = 8,
    epochs: int = 3,
    cache: bool = False,
    stages: Sequence[str] = ("decode", "augment", "full", "full-no-xla"),
) -> dict[str, float]:
    """Images/s of each pipeline stage (see the module docstring)."""
    import tensorflow as tf

    from keras_retinanet.data import load_dataset
    from keras_retinanet.data.pipeline import _decoded, make_training_dataset, train_transform
    from keras_retinanet.targets import LabelEncoder

    dataset = load_dataset(spec, skip_bad=True)
    size = (image_size, image_size)
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
    encoder = LabelEncoder()
    for name, jit in (("full", True), ("full-no-xla", False)):
        if name in stages:
            ds = make_training_dataset(
                dataset, encoder, image_size, batch_size, seed=0, cache=cache, jit_encode=jit
            )
            results[f"{name} (flip+jitter+encode{', cached' if cache else ''})"] = _rate(
                ds, batch_size, epochs
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=DEFAULT_SPEC)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cache", action="store_true", help="cache decoded images")
    parser.add_argument("--stages", default="decode,augment,full,full-no-xla")
    args = parser.parse_args(argv)
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    results = benchmark(
        args.spec, args.image_size, args.batch_size, args.epochs, args.cache, args.stages.split(",")
    )
    for name, rate in results.items():
        print(f"{name:<48} {rate:8.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
