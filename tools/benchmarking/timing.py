"""Peak memory of measured phases, and ``run_phase`` (a phase timed and recorded, or its error): standard library
only, beside :func:`keras_retinanet.detectors.timing.time_runs`.

``tools/peer_benchmarks.py`` imports this module inside the peers' Python environment (torch, keras-hub), so it
must not import numpy, TensorFlow or Keras.

Peak memory is the process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``), which Linux
(>= 4.0) resets to the current resident set when ``5`` is written to ``/proc/self/clear_refs``. Elsewhere the
figure falls back to ``ru_maxrss``, the high-water mark of the whole process so far.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kib(field: str) -> int | None:
    """One ``kB`` field of /proc/self/status (e.g. ``VmHWM``), or None where there is no such file."""
    try:
        with open(_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark to its current RSS; False where the kernel does not allow it."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mib() -> float | None:
    """The process's resident set now (``VmRSS``) in MiB, or None off Linux."""
    kib = _status_kib("VmRSS")
    return None if kib is None else round(kib / 1024.0, 1)


def peak_rss_mib() -> float:
    """The RSS high-water mark in MiB: ``VmHWM`` (since the last :func:`reset_peak_rss`) or else ``ru_maxrss``."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there, KiB on Linux
            kib //= 1024
    return round(kib / 1024.0, 1)


@contextlib.contextmanager
def peak_memory(record: dict[str, Any]) -> Iterator[None]:
    """Stores the block's peak RSS in ``record["peak_rss_mib"]`` and its scope in ``record["peak_rss_scope"]``.

    The scope is ``"phase"`` when the high-water mark could be reset before the block, else ``"process so far"``.
    Either way the figure includes what the process already held (interpreter, runtime, model).
    """
    per_phase = reset_peak_rss()
    try:
        yield
    finally:
        record["peak_rss_mib"] = peak_rss_mib()
        record["peak_rss_scope"] = "phase" if per_phase else "process so far"


def run_phase(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Runs one measured phase and stores its record in ``results[name]``.

    The record is ``fn()``'s dict plus ``peak_rss_mib``, ``peak_rss_scope`` and ``phase_s`` (wall seconds of
    the whole phase). An exception inside ``fn`` is recorded as ``{"error": "Type: first line"}`` and not raised,
    so that one failing phase does not lose the others. Returns the record.
    """
    record: dict[str, Any] = {}
    print(f"[benchmark] {name} ...", flush=True)
    start = time.perf_counter()
    try:
        with peak_memory(record):
            record.update(fn())
    except Exception as err:  # noqa: BLE001 - one failing phase must not lose the others
        first_line = str(err).splitlines()[0] if str(err) else ""
        record = {"error": f"{type(err).__name__}: {first_line}"[:500]}
        print(f"[benchmark] {name} failed: {record['error']}", flush=True)
    record["phase_s"] = round(time.perf_counter() - start, 1)
    results[name] = record
    if "median_ms" in record:
        print(f"[benchmark] {name}: {record['median_ms']:.1f} ms/image", flush=True)
    return record
