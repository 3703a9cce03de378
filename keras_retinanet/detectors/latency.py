"""Latency of a detector or of an exported .tflite file on this machine, timed by :func:`timing.time_runs`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_retinanet.detectors.timing import time_runs


def tflite_latency(
    path: str | os.PathLike, num_threads: int | None = None, runs: int = 10, warmup: int = 2
) -> dict[str, Any]:
    """``{"file", "size_bytes", "num_threads", "median_ms", "min_ms", "runs_ms"}`` of a .tflite file's invoke
    (LiteRT's default CPU path) on a random canvas of its input size."""
    from keras_retinanet.detectors import TFLiteDetector

    threads = num_threads or os.cpu_count() or 1
    detector = TFLiteDetector(path, num_threads=threads)
    canvas = np.random.default_rng(0).integers(0, 256, size=(*detector.image_size, 3), dtype=np.uint8)
    timing = time_runs(lambda: detector.run_canvas(canvas), warmup, runs)
    return {
        "file": Path(path).name,
        "size_bytes": Path(path).stat().st_size,
        "num_threads": threads,
        **timing,
    }


def detector_latency(
    detector: Any, images: Sequence[np.ndarray], batch_size: int = 1, warmup: int = 2, runs: int = 5
) -> dict[str, Any]:
    """``{"median_ms", "min_ms", "runs_ms", "images", "batch_size"}``: full inference time per image (resize,
    model, decoding, boxes mapped back) of ``detector`` on (H, W, 3) uint8 RGB ``images``."""
    images = list(images)
    batch_size = max(1, min(batch_size, detector.max_batch_size or batch_size))

    def once() -> None:
        for start in range(0, len(images), batch_size):
            detector.detect(images[start : start + batch_size])

    timing = time_runs(once, warmup, runs, per=len(images))
    return {**timing, "images": len(images), "batch_size": batch_size}


def file_latencies(
    paths: Sequence[str | os.PathLike],
    images: Sequence[np.ndarray],
    runtimes: Sequence[str] = ("litert", "mediapipe"),
    warmup: int = 2,
    runs: int = 5,
) -> list[dict[str, Any]]:
    """Per ``.tflite`` file, ``{"file", "size_bytes", "invoke_ms", "<runtime>_ms_per_image"...}`` (medians): the
    bare invoke and the full inference per image through each runtime."""
    from keras_retinanet.detectors import load_detector

    rows = []
    for path in paths:
        invoke = tflite_latency(path, runs=max(runs, 10), warmup=warmup)
        row = {"file": Path(path).name, "size_bytes": invoke["size_bytes"], "invoke_ms": invoke["median_ms"]}
        for runtime in runtimes:
            with load_detector(str(path), runtime=runtime) as detector:
                timing = detector_latency(detector, images, warmup=warmup, runs=runs)
            row[f"{runtime}_ms_per_image"] = timing["median_ms"]
        rows.append(row)
    return rows
