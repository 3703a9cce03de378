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
    """One row per model file (anything ``load_detector`` reads) and runtime (a ``.tflite`` through each of
    ``runtimes``): ``{"file", "runtime", "size_bytes", "ms_per_image", "invoke_ms"}`` (medians; full inference
    per image; ``invoke_ms``, the bare invoke, for ``.tflite`` only; an OpenVINO ``.xml`` counts its ``.bin``)."""
    from keras_retinanet.detectors import load_detector

    rows = []
    for path in map(Path, paths):
        tflite = path.suffix == ".tflite"
        invoke = tflite_latency(path, runs=max(runs, 10), warmup=warmup)["median_ms"] if tflite else None
        parts = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
        parts = [p for part in parts for p in (part.rglob("*") if part.is_dir() else [part]) if p.is_file()]
        for runtime in runtimes if tflite else [None]:
            with load_detector(str(path), **({"runtime": runtime} if runtime else {})) as detector:
                timing = detector_latency(detector, images, warmup=warmup, runs=runs)
                rows.append(
                    {
                        "file": path.name,
                        "runtime": runtime or detector.format,
                        "size_bytes": sum(p.stat().st_size for p in parts),
                        "ms_per_image": timing["median_ms"],
                        "invoke_ms": invoke,
                    }
                )
    return rows
