"""The server runtimes: the model exported to ONNX and OpenVINO (float32 and NNCF int8), each file timed.

Every file is written by the export's own writers (``keras_retinanet.export.onnx``), so what is timed is what
``retinanet export --format onnx,openvino,openvino_int8`` writes: letterbox, network, decoding and NMS in one
graph. Each is timed by :func:`keras_retinanet.detectors.latency.detector_latency` through its detector on one
uint8 image of the input size (full inference, as the ``inference`` phase times the Keras model), with the
runtime's own thread count set to ``settings.threads``. The int8 file is calibrated on random images: its
latency is meaningful, its accuracy is not.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarking.timing import run_phase
from keras_retinanet.detectors.latency import detector_latency

# (report key, export writer's precision or None for ONNX, detector class name in keras_retinanet.detectors.onnx)
FILES = (
    ("onnx", None, "OnnxDetector"),
    ("openvino_float32", "float32", "OpenVINODetector"),
    ("openvino_int8", "int8", "OpenVINODetector"),
)


def _random_photos(folder: Path, count: int, size: int) -> list[str]:
    """``count`` random RGB PNGs of ``size`` x ``size`` in ``folder`` (NNCF reads calibration photos as files)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        path = folder / f"calibration_{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


def measure_graph_runtimes(model, settings, image) -> dict[str, Any]:
    """Exports ``model`` to ONNX and OpenVINO float32 / int8 and times each file.

    Args:
        model: the benchmarked ``RetinaNet``.
        settings: ``project.ProjectSettings`` (``image_size``, ``threads``, ``warmup``, ``runs``,
            ``calibration_images``).
        image: (H, W, 3) uint8, the image every file detects.
    Returns:
        ``{"note": ..., key: record}`` for each of :data:`FILES`, a record holding ``detector_latency``'s figures,
        ``peak_rss_mib`` and ``convert`` (``convert_s``, ``size_bytes``), or ``{"error": ...}``; or
        ``{"skipped": why}`` when the ONNX / OpenVINO converters are not installed.
    """
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
        import tf2onnx  # noqa: F401

        from keras_retinanet.detectors import onnx as graph_detectors
        from keras_retinanet.export.config import ExportJob
        from keras_retinanet.export.onnx import write_onnx, write_openvino
    except ImportError as err:
        print(f"[benchmark] ONNX / OpenVINO skipped: {err}", flush=True)
        return {"skipped": f"pip install 'keras-retinanet[onnx,openvino]' ({err})"}
    size = settings.image_size
    runtimes: dict[str, Any] = {
        "note": "ONNX Runtime / OpenVINO CPU on one uint8 image: letterbox, network, decoding and NMS in the "
        "file; OpenVINO float32 with INFERENCE_PRECISION_HINT=f32; int8 by NNCF on random images (latency only)",
    }
    scratch = Path(tempfile.mkdtemp(prefix="retinanet-bench-onnx-"))
    try:
        photos = _random_photos(scratch, settings.calibration_images, size)
        job = ExportJob(model, scratch, (size, size), {}, None, {}, calibration_photos=photos)
        for key, precision, detector_name in FILES:
            phases: dict[str, Any] = {}

            def convert(precision: str | None = precision) -> dict[str, Any]:
                start = time.perf_counter()
                written = write_onnx(job) if precision is None else write_openvino(job, precision)
                ((name, info),) = written.items()
                return {
                    "convert_s": round(time.perf_counter() - start, 1),
                    "size_bytes": info["size_bytes"],
                    "file": name,
                }

            convert_record = run_phase(phases, f"{key} convert", convert)
            if "error" in convert_record:
                runtimes[key] = convert_record
                continue
            detector_class = getattr(graph_detectors, detector_name)

            def run(file: str = convert_record["file"], detector_class=detector_class) -> dict[str, Any]:
                detector = detector_class(scratch / file, num_threads=settings.threads)
                return detector_latency(detector, [image], 1, settings.warmup, settings.runs)

            runtimes[key] = {**run_phase(phases, key, run), "convert": convert_record}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return runtimes
