"""Input-pipeline throughput (images/s): decode, augmentation + resize, and the full training pipeline.

Protocol (``benchmarking.pipeline``): BCCD trainval (292 images), 512x512, horizontal flip + scale
jitter (0.75-1.25) with random crop, label encoding with the paper's anchors (49,104 per image), batch 8. One
warm-up epoch (tracing, XLA compilation, file cache), then the median of ``--epochs`` epochs. Run alone: the
figure is CPU-bound.

    python tools/benchmark_pipeline.py [--spec voc:../shared/datasets/bccd/BCCD:trainval] [--cache]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarking.pipeline import STAGES, bccd_spec, pipeline_throughput

from keras_retinanet._quiet import parse_args_quietly
from keras_retinanet.model.presets import PRESETS

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Prints images/s of each stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec", default=None, help="dataset spec (default: BCCD trainval from ../shared/datasets)"
    )
    parser.add_argument("--image-size", type=int, default=PRESETS["paper"].image_size)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cache", action="store_true", help="cache decoded images")
    parser.add_argument("--matching", choices=("iou", "atss"), default="iou", help="label encoder's matcher")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"any of {', '.join(STAGES)}")
    args = parse_args_quietly(parser, argv)
    spec = args.spec or bccd_spec(REPO_ROOT)
    if spec is None:
        parser.error("no --spec given and BCCD is not at ../shared/datasets/bccd/BCCD next to this checkout")
    stages = [s for s in args.stages.split(",") if s]
    if set(stages) - set(STAGES):
        parser.error(f"unknown stages {sorted(set(stages) - set(STAGES))}; choose from {', '.join(STAGES)}")
    print(f"cpus: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    # The paper preset's anchors and box coding, at this size and with this matcher.
    model = PRESETS["paper"].update({"image_size": args.image_size, "matching": args.matching})
    results = pipeline_throughput(spec, model, args.batch_size, args.epochs, args.cache, stages)
    for name, rate in results.items():
        print(f"{name:<48} {rate:8.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
