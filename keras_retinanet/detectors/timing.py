"""Wall-clock timing of a callable: standard library only.

``tools/peer_benchmarks.py`` imports this module inside the peers' Python environment (torch, keras-hub), so it
must not import numpy, TensorFlow or Keras, directly or through ``keras_retinanet/__init__.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def time_runs(
    fn: Callable[[], Any],
    warmup: int,
    runs: int,
    per: int = 1,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """``{"median_ms", "min_ms", "runs_ms": [runs]}`` of ``fn()`` (lazy results forced inside it) over ``runs``
    timed calls after ``warmup`` untimed ones, in milliseconds divided by ``per`` (e.g. per image), rounded to
    microseconds. ``clock``: seconds (a test substitutes a fake). ValueError: runs < 1, warmup < 0 or per < 1.
    """
    if runs < 1 or warmup < 0 or per < 1:
        raise ValueError(f"time_runs needs runs >= 1, warmup >= 0, per >= 1; got {runs}, {warmup}, {per}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = clock()
        fn()
        times.append((clock() - start) * 1000.0 / per)
    return {
        "median_ms": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "runs_ms": [round(t, 3) for t in times],
    }
