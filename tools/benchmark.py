"""R50-512 speed benchmark (DESIGN section 8): forward, inference, training step, TFLite, pipeline, memory.

Protocol: ResNet50-FPN RetinaNet, 80 classes, random weights, 512x512 RGB, float32, every core (TF intra- and
inter-op threads set to ``--threads``). Every figure is the median of ``--runs`` (>= 5) timed runs after
``--warmup`` untimed ones, on one fixed random image (batch 1) or pair of images with 5 boxes each (training,
batch 2). Measured phases:

- ``forward``: backbone + FPN + heads (``model(images)`` in a ``tf.function``), batch 1, ms/image;
  ``forward_xla`` the same under ``jit_compile=True``.
- ``inference``: image in, detections out (letterbox, network, decode + per-class NMS, boxes mapped back),
  ``keras_retinanet.inference.measure_inference_time`` with a ``KerasDetector``; ``decode`` is decode + NMS alone.
- ``train``: ``model.train_on_batch`` (forward + focal/box losses + backward + SGD momentum update) at batch 2,
  ms/image; targets are encoded once beforehand (as the input pipeline does), and ``encode`` times that
  encoding separately (keras-hub and torchvision match anchors inside their training step). ``train_xla`` the
  same compiled with ``jit_compile=True``.
- ``tflite``: fp32 / fp16 / int8 files from ``keras_retinanet.export.convert_tflite`` (NMS inside, builtin ops),
  timed by ``keras_retinanet.export.benchmark_tflite`` (LiteRT, XNNPACK). Int8 is calibrated on random images:
  the latency is meaningful, the accuracy is not.
- ``pipeline``: input-pipeline throughput (images/s) from ``tools/benchmark_pipeline.py``.
- Peak memory: the process's resident-set high-water mark during each phase (``VmHWM`` of /proc/self/status,
  reset before each phase through /proc/self/clear_refs; includes what the process already held). Where the reset
  is not possible it is the process-wide ``ru_maxrss`` so far.
- FLOPs: an analytic count over the traced forward graph: every Conv2D / depthwise conv / MatMul contributes
  2 x MACs from its static shapes (``2 * N * Ho * Wo * Cout * kh * kw * Cin / groups``); element-wise ops,
  BatchNorm, padding, resizes and the decoder are not counted. A training step is counted as 3x the forward
  (backward = 2x forward, the usual convention).
- Peak FLOP/s: the larger of ``cores x nominal GHz x FP32 FLOPs/cycle/core`` and the FP32 matmul rate measured
  on this machine with the same threads (a VM reports the nominal clock; when the cores boost above it, a real
  kernel beats the nominal peak), see :func:`peak_flops` and :func:`measure_matmul_gflops`.

With ``--compare`` the same figures are measured for keras-hub's ``RetinaNetObjectDetector`` and torchvision's
``retinanet_resnet50_fpn`` by ``tools/peer_benchmarks.py``, run as subprocesses with ``--peer-python`` (their own
environment), on the same input and threads; ratios are peer time / this project's time (> 1: we are faster).

    python tools/benchmark.py --json runs/benchmark.json --markdown runs/benchmark.md [--compare] [--xla]
    python tools/benchmark.py --quick --skip-tflite        # tiny model, seconds (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

TOOLS_DIR = Path(__file__).resolve().parent
DEFAULT_PEER_PYTHON = "/work/peers-venv/bin/python"
PEERS = ("keras-hub", "torchvision")
# Phases whose time is compared with the peers: (our phase, peer phase, label).
COMPARED = (
    ("forward", "forward", "forward, backbone + FPN + heads, batch 1 (ms/image)"),
    ("forward_xla", "forward_xla", "forward under XLA (jit_compile) (ms/image)"),
    ("inference", "inference", "full inference incl. decode + NMS, batch 1 (ms/image)"),
    ("decode", "decode", "decode + NMS alone (ms/image)"),
    ("train", "train", "training step, fwd + bwd + SGD, batch 2, 5 boxes/image (ms/image)"),
    ("train_xla", "train_xla", "training step under XLA (ms/image)"),
)


# ----------------------------------------------------------------------------------------------------------
# Timing and memory (stdlib only: tools/peer_benchmarks.py imports these in the peers' environment)


def time_runs(fn: Callable[[], Any], warmup: int, runs: int, per: int = 1) -> dict[str, Any]:
    """Median / min wall time of ``fn()`` in ms over ``runs`` calls after ``warmup`` untimed calls.

    ``per`` divides every time (e.g. the batch size, for ms/image).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0 / per)
    return {
        "median_ms": round(statistics.median(times), 3),
        "min_ms": round(min(times), 3),
        "runs_ms": [round(t, 3) for t in times],
    }


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Resets the process's RSS high-water mark to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """The RSS high-water mark in MiB: VmHWM (since the last reset) or else ``ru_maxrss`` (whole process)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kib //= 1024
    return round(kib / 1024.0, 1)


@contextlib.contextmanager
def peak_memory(record: dict[str, Any]) -> Iterator[None]:
    """Stores the phase's peak RSS (MiB) in ``record["peak_rss_mib"]`` (and how it was measured)."""
    per_phase = reset_peak_rss()
    try:
        yield
    finally:
        record["peak_rss_mib"] = peak_rss_mib()
        record["peak_rss_scope"] = "phase" if per_phase else "process so far"


def run_phase(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Runs one measured phase into ``results[name]``; an exception is recorded as an error, not raised."""
    record: dict[str, Any] = {}
    print(f"[benchmark] {name} ...", flush=True)
    start = time.perf_counter()
    try:
        with peak_memory(record):
            record.update(fn())
    except Exception as err:  # noqa: BLE001 - one failing phase must not lose the others
        record = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]}
        print(f"[benchmark] {name} failed: {record['error']}", flush=True)
    record["phase_s"] = round(time.perf_counter() - start, 1)
    results[name] = record
    if "median_ms" in record:
        print(f"[benchmark] {name}: {record['median_ms']:.1f} ms/image", flush=True)
    return record


# ----------------------------------------------------------------------------------------------------------
# Machine description and peak FLOP/s


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # first processor only
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def machine_info() -> dict[str, Any]:
    """CPU model, vendor/family/model, logical CPUs, threads per core, MHz, SIMD flags, OS and Python."""
    lscpu, cpuinfo = _lscpu(), _cpuinfo()
    flags = set(cpuinfo.get("flags", lscpu.get("Flags", "")).split())
    mhz = None
    for source in (lscpu.get("CPU max MHz"), cpuinfo.get("cpu MHz"), lscpu.get("CPU MHz")):
        with contextlib.suppress(TypeError, ValueError):
            mhz = float(source)  # type: ignore[arg-type]
            if mhz > 0:
                break
    if not mhz:
        match = re.search(r"@\s*([\d.]+)\s*GHz", cpuinfo.get("model name", ""))
        mhz = float(match.group(1)) * 1000 if match else None
    return {
        "cpu_model": lscpu.get("Model name")
        or cpuinfo.get("model name")
        or platform.processor()
        or "unknown",
        "vendor": lscpu.get("Vendor ID") or cpuinfo.get("vendor_id", ""),
        "cpu_family": int(cpuinfo.get("cpu family", lscpu.get("CPU family", "0")) or 0),
        "cpu_model_number": int(cpuinfo.get("model", lscpu.get("Model", "0")) or 0),
        "logical_cpus": os.cpu_count() or 1,
        "threads_per_core": int(lscpu.get("Thread(s) per core", "1") or 1),
        "mhz": mhz,
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "simd": sorted(
            f for f in flags if f in {"fma", "avx", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
        ),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def fp32_flops_per_cycle(machine: dict[str, Any]) -> tuple[int, str]:
    """FP32 FLOPs per cycle per core for the CPU in ``machine``, and the assumption behind the figure.

    FMA counts 2 FLOPs per lane. Tables (public microarchitecture docs; assumptions, not measurements):
    AMD Zen 1 (family 23, models < 0x30): 2 x 128-bit FMA = 16; Zen 2-4 (families 23 / 25): 2 x 256-bit FMA
    = 32 (Zen 4 runs AVX-512 on 256-bit units); Zen 5 (family 26): 2 x 512-bit FMA = 64. Intel with AVX-512:
    2 x 512-bit FMA = 64 (Xeon Gold 6xxx / Platinum; Silver/Bronze and some mobile parts have one unit: 32);
    AVX2 + FMA: 2 x 256-bit = 32; else SSE: 2 x 128-bit mul+add = 16.
    """
    vendor, family, model = (
        machine.get("vendor", ""),
        machine.get("cpu_family", 0),
        machine.get("cpu_model_number", 0),
    )
    simd = set(machine.get("simd", []))
    if "AMD" in vendor:
        if family == 26:
            return 64, "AMD Zen 5: 2 x 512-bit FMA units"
        if family == 25:
            return 32, "AMD Zen 3/4: 2 x 256-bit FMA units (Zen 4 splits AVX-512 into 2 x 256-bit)"
        if family == 23:
            return (
                (16, "AMD Zen 1: 2 x 128-bit FMA units")
                if model < 0x30
                else (32, "AMD Zen 2: 2 x 256-bit FMA units")
            )
    if "avx512f" in simd:
        return 64, "AVX-512 with 2 x 512-bit FMA units assumed (1 unit on some parts: half this peak)"
    if "avx2" in simd and "fma" in simd:
        return 32, "AVX2 with 2 x 256-bit FMA units"
    return 16, "no FMA: 2 x 128-bit SSE (mul + add) assumed"


def measure_matmul_gflops(size: int = 2048, runs: int = 7) -> float:
    """FP32 GFLOP/s of the best of ``runs`` ``size x size`` TensorFlow matmuls (2 size^3 FLOPs each).

    Uses the threads already configured for TensorFlow. A large square SGEMM is the fastest dense kernel a
    library has, so this is an achievable ceiling for the convolutions, measured rather than assumed.
    """
    import tensorflow as tf

    a = tf.random.stateless_uniform((size, size), seed=(1, 2))
    b = tf.random.stateless_uniform((size, size), seed=(3, 4))
    matmul = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    best = time_runs(lambda: matmul().numpy(), warmup=2, runs=runs)["min_ms"]
    return round(2 * size**3 / (best / 1000.0) / 1e9, 1)


def peak_flops(
    machine: dict[str, Any],
    threads: int,
    override_gflops: float | None = None,
    measured_gflops: float | None = None,
) -> dict[str, Any]:
    """The machine's FP32 peak FLOP/s for ``threads`` threads.

    Nominal: physical cores used x GHz x FLOPs/cycle/core, where cores used = min(threads, logical CPUs) /
    threads-per-core (hyper-threads share one core's FMA units) and GHz is ``CPU max MHz`` from lscpu if
    present, else ``cpu MHz`` of /proc/cpuinfo (in a VM usually the nominal clock, turbo unknown). If
    ``measured_gflops`` (:func:`measure_matmul_gflops`) is higher, the cores run above the nominal clock and the
    measured figure is the peak, so that no achieved fraction can exceed 100%.
    """
    if override_gflops:
        return {"gflops": float(override_gflops), "formula": "given with --peak-gflops", "assumption": ""}
    per_cycle, assumption = fp32_flops_per_cycle(machine)
    cores = min(threads, machine["logical_cpus"]) / max(1, machine.get("threads_per_core", 1))
    ghz = (machine.get("mhz") or 0) / 1000.0
    nominal = round(cores * ghz * per_cycle, 1) if ghz else None
    formula = f"{cores:g} cores x {ghz:.3f} GHz x {per_cycle} FP32 FLOPs/cycle" if ghz else "clock unknown"
    assumption += "; clock from lscpu/cpuinfo (nominal, no turbo)"
    result = {"gflops": nominal, "nominal_gflops": nominal, "measured_matmul_gflops": measured_gflops}
    if measured_gflops and (nominal is None or measured_gflops > nominal):
        result["gflops"] = measured_gflops
        formula = f"measured FP32 matmul rate (above the nominal {formula} = {nominal})"
        assumption += "; the measured matmul beat the nominal peak, so the cores run above the nominal clock"
    return {**result, "formula": formula, "assumption": assumption}


# ----------------------------------------------------------------------------------------------------------
# FLOP counting


def conv2d_flops(
    output_hw: Sequence[int],
    kernel_hw: Sequence[int],
    in_channels: int,
    out_channels: int,
    batch: int = 1,
    groups: int = 1,
) -> int:
    """FLOPs (2 x multiply-accumulates) of one 2D convolution: ``2 * N * Ho * Wo * Cout * kh * kw * Cin / g``."""
    return (
        2
        * batch
        * output_hw[0]
        * output_hw[1]
        * out_channels
        * kernel_hw[0]
        * kernel_hw[1]
        * in_channels
        // groups
    )


def _static(shape) -> list[int] | None:
    dims = shape.as_list() if shape.rank is not None else None
    return None if dims is None or any(d is None for d in dims) else dims


def graph_flops(concrete_function) -> dict[str, Any]:
    """Analytic FLOPs of a traced TF graph: convolutions and matrix products from their static shapes.

    Counts ``Conv2D`` (NHWC), ``DepthwiseConv2dNative``, ``MatMul`` and ``BatchMatMulV2`` ops, including those in
    nested function bodies; returns ``{"flops", "by_op": {type: flops}, "uncounted_ops": n}`` where
    ``uncounted_ops`` is the number of such ops whose shapes were not static.
    """
    by_op: dict[str, int] = {}
    unknown = 0

    def op_flops(op) -> int | None:
        out, first, second = (_static(t.shape) for t in (op.outputs[0], op.inputs[0], op.inputs[1]))
        if out is None or first is None or second is None:
            return None
        if op.type in ("Conv2D", "DepthwiseConv2dNative"):
            nchw = op.get_attr("data_format") == b"NCHW"
            n, ho, wo, co = (out[0], out[2], out[3], out[1]) if nchw else out
            kh, kw, kernel_in, _ = second
            if op.type == "DepthwiseConv2dNative":  # one kh x kw filter per output channel
                return 2 * n * ho * wo * co * kh * kw
            groups = max(1, (first[1] if nchw else first[3]) // kernel_in)
            return conv2d_flops((ho, wo), (kh, kw), kernel_in * groups, co, n, groups)
        adjoint = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        size = 1
        for d in out:
            size *= d
        return 2 * size * (first[-2] if adjoint else first[-1])

    def visit(graph, seen: set) -> None:
        nonlocal unknown
        for op in graph.get_operations():
            if op.type in ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2", "BatchMatMul"):
                flops = op_flops(op)
                if flops is None:
                    unknown += 1
                else:
                    by_op[op.type] = by_op.get(op.type, 0) + flops
                continue
            for attr in ("f", "then_branch", "else_branch", "body", "cond"):  # nested function bodies
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    name = op.get_attr(attr).name
                    function = graph._functions.get(name)  # noqa: SLF001 - no public accessor
                    if function is not None and name not in seen:
                        seen.add(name)
                        visit(function.graph, seen)

    visit(concrete_function.graph, set())
    return {"flops": sum(by_op.values()), "by_op": by_op, "uncounted_ops": unknown}


# ----------------------------------------------------------------------------------------------------------
# Data for the measurements


def benchmark_inputs(
    image_size: int, boxes_per_image: int = 5, batch: int = 2, seed: int = 0
) -> dict[str, Any]:
    """The fixed inputs every library is timed on: uint8 images (batch, H, W, 3), xyxy boxes (batch, M, 4) in
    pixels (sides 1/8 to 1/2 of the image) and class ids (batch, M) in [0, 80)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch, image_size, image_size, 3), dtype=np.uint8)
    sides = rng.uniform(image_size / 8, image_size / 2, size=(batch, boxes_per_image, 2))
    corners = rng.uniform(0, 1, size=(batch, boxes_per_image, 2)) * (image_size - sides)
    boxes = np.concatenate([corners, corners + sides], axis=-1).astype(np.float32)
    classes = rng.integers(0, 80, size=(batch, boxes_per_image)).astype(np.int32)
    return {"images": images, "boxes": boxes, "classes": classes}


def write_synthetic_voc(root: Path, num_images: int = 16, size: int = 96, seed: int = 0) -> str:
    """A tiny VOC dataset (random-noise JPEGs with 1-3 boxes of 2 classes) for the pipeline phase; its spec."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(num_images):
        image_id = f"img{i:04d}"
        ids.append(image_id)
        cv2.imwrite(
            str(root / "JPEGImages" / f"{image_id}.jpg"), rng.integers(0, 256, (size, size, 3), np.uint8)
        )
        objects = []
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.integers(size // 8, size // 2, 2)
            x, y = rng.integers(0, size - w), rng.integers(0, size - h)
            objects.append(
                f"<object><name>{'ab'[int(rng.integers(2))]}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax></bndbox></object>"
            )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>{size}</width><height>{size}</height>"
            f"<depth>3</depth></size>{''.join(objects)}</annotation>"
        )
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    return f"voc:{root}:trainval"


def _load_tool(name: str):
    """Imports ``tools/NAME.py`` (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_retinanet_tools_{name}", TOOLS_DIR / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"tools/{name}.py not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------
# The measured phases of this project


def configure_threads(threads: int, inter_op: int | None = None) -> None:
    """Sets TF's intra-op and inter-op thread pools (must run before TF executes anything)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op or threads)
    except RuntimeError:
        # TF already ran something in this process (e.g. when main() is called from a test): the pools are fixed.
        print(
            f"benchmark: TensorFlow is already initialised; its thread pools stay at "
            f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all cores'} (asked {threads})"
        )


def build_model(args: argparse.Namespace):
    """The benchmarked RetinaNet (random weights)."""
    from keras_retinanet import RetinaNet

    kwargs: dict[str, Any] = {
        "fpn_channels": args.fpn_channels,
        "head_depth": args.head_depth,
        "p6_source": args.p6_source,
    }
    if args.backbone_alpha:
        kwargs["backbone_kwargs"] = {"alpha": args.backbone_alpha}
    return RetinaNet(args.num_classes, backbone=args.backbone, **kwargs)


def measure_project(
    args: argparse.Namespace, data: dict[str, Any], results: dict[str, Any]
) -> dict[str, Any]:
    """Runs every phase for keras_retinanet into ``results``; returns the model summary (params, FLOPs)."""
    import keras
    import numpy as np
    import tensorflow as tf

    size = args.image_size
    holder: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        start = time.perf_counter()
        holder["model"] = build_model(args)
        return {"build_s": round(time.perf_counter() - start, 2)}

    if "error" in run_phase(results, "build", build):
        raise RuntimeError(f"building the model failed: {results['build']['error']}")
    model = holder["model"]
    image = tf.constant(data["images"][:1].astype(np.float32))

    def call(x):
        return model(x, training=False)

    forward = tf.function(call, autograph=False)
    flops_info = graph_flops(forward.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32)))
    summary = {
        "params": int(model.count_params()),
        "forward_flops": int(flops_info["flops"]),
        "forward_gflops": round(flops_info["flops"] / 1e9, 2),
        "flops_by_op": flops_info["by_op"],
        "flops_uncounted_ops": flops_info["uncounted_ops"],
        "flops_method": "analytic: 2 x MACs of every Conv2D/DepthwiseConv2d/MatMul in the traced forward graph "
        "(static shapes); element-wise ops, BatchNorm and decoding not counted; training step = 3 x forward",
    }
    w, r = args.warmup, args.runs
    run_phase(results, "forward", lambda: time_runs(lambda: forward(image), w, r))
    outputs = forward(image)

    if args.xla:
        forward_xla = tf.function(call, autograph=False, jit_compile=True)
        run_phase(results, "forward_xla", lambda: time_runs(lambda: forward_xla(image), w, r))

    def inference() -> dict[str, Any]:
        from keras_retinanet.inference import KerasDetector, measure_inference_time

        timing = measure_inference_time(KerasDetector(model, size), [data["images"][0]], 1, w, r)
        return {
            "median_ms": round(timing["median_ms_per_image"], 3),
            "min_ms": round(timing["min_ms_per_image"], 3),
            "runs_ms": [round(t, 3) for t in timing["runs_ms_per_image"]],
            "how": "keras_retinanet.inference.measure_inference_time(KerasDetector) on a uint8 image",
        }

    run_phase(results, "inference", inference)

    def decode_outputs(raw):
        return model.decode(raw, (size, size))

    decode = tf.function(decode_outputs)
    run_phase(results, "decode", lambda: time_runs(lambda: decode(outputs), w, r))

    encoder = model.label_encoder()
    images2 = tf.constant(data["images"].astype(np.float32))

    def encode_targets(boxes, classes):
        return encoder.encode((size, size), boxes, classes)

    encode = tf.function(encode_targets)
    run_phase(
        results, "encode", lambda: time_runs(lambda: encode(data["boxes"], data["classes"]), w, r, per=2)
    )
    targets = {k: np.asarray(v) for k, v in encode(data["boxes"], data["classes"]).items()}

    def train(jit: bool) -> dict[str, Any]:
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
        losses = []
        timing = time_runs(
            lambda: losses.append(float(np.sum(model.train_on_batch(images2, targets)))), w, r, 2
        )
        return {**timing, "batch_size": 2, "loss_first_last": [losses[0], losses[-1]]}

    run_phase(results, "train", lambda: train(False))
    if args.xla:
        run_phase(results, "train_xla", lambda: train(True))

    if not args.skip_tflite:
        measure_tflite(args, model, results)
    else:
        results["tflite"] = {"skipped": "--skip-tflite"}
    return summary


def measure_tflite(args: argparse.Namespace, model, results: dict[str, Any]) -> None:
    """TFLite latency (XNNPACK) of each variant via ``keras_retinanet.export`` into ``results["tflite"]``."""
    import numpy as np

    try:
        from keras_retinanet.export import benchmark_tflite, convert_tflite
    except ImportError as err:
        results["tflite"] = {"skipped": f"keras_retinanet.export not available ({err})"}
        print(f"[benchmark] TFLite skipped: {results['tflite']['skipped']}", flush=True)
        return
    size = args.image_size
    rng = np.random.default_rng(1)
    calibration = [
        rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.calibration_images)
    ]
    tflite: dict[str, Any] = {
        "note": "LiteRT interpreter (XNNPACK); NMS inside (TFLite_Detection_PostProcess); int8 calibrated on "
        "random images (latency only)",
    }
    scratch = Path(tempfile.mkdtemp(prefix="retinanet-bench-tflite-"))
    try:
        for variant in args.tflite_variants:
            path = scratch / f"model_{variant}.tflite"
            holder: dict[str, Any] = {}

            def convert(variant: str = variant, path: Path = path) -> dict[str, Any]:
                start = time.perf_counter()
                data = convert_tflite(
                    model,
                    variant,
                    (size, size),
                    representative_images=(lambda: calibration) if variant == "int8" else None,
                )
                path.write_bytes(data)
                return {"convert_s": round(time.perf_counter() - start, 1), "size_bytes": len(data)}

            convert_record = run_phase(holder, f"tflite {variant} convert", convert)
            if "error" in convert_record:
                tflite[variant] = convert_record
                continue
            run_record = run_phase(
                holder,
                f"tflite {variant}",
                lambda path=path: benchmark_tflite(path, args.threads, args.runs, args.warmup),
            )
            tflite[variant] = {**run_record, "convert": convert_record}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["tflite"] = tflite


def measure_pipeline(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Input-pipeline throughput (images/s) from ``tools/benchmark_pipeline.benchmark``."""
    try:
        pipeline = _load_tool("benchmark_pipeline")
        benchmark = pipeline.benchmark
    except (ImportError, AttributeError, FileNotFoundError) as err:
        results["pipeline"] = {"skipped": f"tools/benchmark_pipeline.py not usable ({err})"}
        print(f"[benchmark] pipeline skipped: {results['pipeline']['skipped']}", flush=True)
        return
    scratch = None
    spec = args.pipeline_spec
    if spec is None:
        default = getattr(pipeline, "DEFAULT_SPEC", "")
        default_root = default.split(":")[1] if default.count(":") >= 1 else ""
        if not args.quick and default_root and Path(default_root).is_dir():
            spec = default
        else:
            scratch = Path(tempfile.mkdtemp(prefix="retinanet-bench-voc-"))
            spec = write_synthetic_voc(scratch / "VOC", 16 if args.quick else 64, 96 if args.quick else 512)

    def run() -> dict[str, Any]:
        rates = benchmark(
            spec,
            image_size=args.image_size,
            batch_size=args.pipeline_batch_size,
            epochs=args.pipeline_epochs,
            stages=args.pipeline_stages,
        )
        return {
            "images_per_s": {k: round(v, 1) for k, v in rates.items()},
            "spec": spec,
            "batch_size": args.pipeline_batch_size,
        }

    try:
        run_phase(results, "pipeline", run)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# Peers


def find_peer_python(given: str | None) -> str | None:
    """The peers' interpreter: ``given``, else /work/peers-venv/bin/python if it exists, else None."""
    if given:
        return given
    return DEFAULT_PEER_PYTHON if os.path.exists(DEFAULT_PEER_PYTHON) else None


def run_peer(
    peer: str, python: str | None, args: argparse.Namespace, inputs_path: Path, timeout: float
) -> dict[str, Any]:
    """Runs ``tools/peer_benchmarks.py --peer PEER`` with ``python``; its JSON, or ``{"skipped": why}``."""
    if python is None:
        return {"skipped": f"no peer interpreter (pass --peer-python; default {DEFAULT_PEER_PYTHON} missing)"}
    if not os.path.exists(python):
        return {"skipped": f"peer interpreter {python} does not exist"}
    with tempfile.TemporaryDirectory(prefix="retinanet-peer-") as tmp:
        out = Path(tmp) / "peer.json"
        command = [
            python,
            str(TOOLS_DIR / "peer_benchmarks.py"),
            "--peer",
            peer,
            "--inputs",
            str(inputs_path),
            "--threads",
            str(args.threads),
            "--runs",
            str(args.runs),
            "--warmup",
            str(args.warmup),
            "--num-classes",
            str(args.num_classes),
            "--json",
            str(out),
        ]
        if args.quick:
            command.append("--quick")
        if args.xla:
            command.append("--xla")
        print(f"[benchmark] peer {peer}: {shlex.join(command)}", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(OMP_NUM_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            return {"skipped": f"{peer} timed out after {timeout:.0f} s"}
        if out.exists():
            report = json.loads(out.read_text())
            return {"skipped": report["skipped"]} if "skipped" in report else report
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        return {"skipped": f"{peer} exited {proc.returncode}: " + " | ".join(tail)[-600:]}


def peer_ratios(results: dict[str, Any], peers: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{peer: {phase: peer median / our median}}`` for every phase both measured (> 1: we are faster)."""
    ratios: dict[str, dict[str, float]] = {}
    for peer, report in peers.items():
        theirs = report.get("results", {})
        for ours_key, their_key, _ in COMPARED:
            a, b = results.get(ours_key, {}).get("median_ms"), theirs.get(their_key, {}).get("median_ms")
            if a and b:
                ratios.setdefault(peer, {})[ours_key] = round(b / a, 3)
    return ratios


# ----------------------------------------------------------------------------------------------------------
# Report


def _ms(record: dict[str, Any] | None) -> str:
    if not record:
        return "-"
    if "median_ms" in record:
        return f"{record['median_ms']:,.1f}"
    if "error" in record:
        return "error"
    return "-"


def _mem(record: dict[str, Any] | None) -> str:
    return f"{record['peak_rss_mib']:,.0f}" if record and "peak_rss_mib" in record else "-"


def markdown_report(report: dict[str, Any]) -> str:
    """The Markdown tables of one run (machine, command, date; timings side by side; other figures)."""
    m, cfg, res = report["machine"], report["config"], report["results"]
    peers = {p: r for p, r in report.get("peers", {}).items() if "results" in r}
    lines = [
        f"## R50-512 benchmark, {report['date']}",
        "",
        f"- Machine: {m['cpu_model']} ({m['vendor']} family {m['cpu_family']} model {m['cpu_model_number']}), "
        f"{m['logical_cpus']} logical CPUs, {m['threads_per_core']} thread(s)/core, "
        f"{(m['mhz'] or 0) / 1000:.2f} GHz, SIMD {', '.join(m['simd'])}, {m['os']}, "
        f"load average {m['load_average_1m']} at start",
        f"- Software: Python {m['python']}, TensorFlow {report['versions']['tensorflow']}, "
        f"Keras {report['versions']['keras']}"
        + "".join(
            f"; {p}: " + ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
            for p, r in peers.items()
        ),
        f"- Protocol: {cfg['backbone']}-FPN RetinaNet (P6 from {cfg.get('p6_source', 'c5').upper()}), "
        f"{cfg['num_classes']} classes, random weights, "
        f"{cfg['image_size']}x{cfg['image_size']}, float32, {cfg['threads']} threads, median of {cfg['runs']} "
        f"runs after {cfg['warmup']} warm-up{' (QUICK: tiny settings, not the protocol)' if cfg['quick'] else ''}",
        f"- Command: `{report['command']}`",
        "",
    ]
    header = "| measurement | keras_retinanet |" + "".join(f" {p} |" for p in peers)
    header += "".join(f" {p} / ours |" for p in peers)
    lines += [header, "|---|---:|" + "---:|" * (2 * len(peers))]
    for ours_key, their_key, label in COMPARED:
        if ours_key not in res and not any(their_key in r["results"] for r in peers.values()):
            continue
        row = f"| {label} | {_ms(res.get(ours_key))} |"
        row += "".join(f" {_ms(r['results'].get(their_key))} |" for r in peers.values())
        row += "".join(f" {report['ratios'].get(p, {}).get(ours_key, '-')} |" for p in peers)
        lines.append(row)
    if "encode" in res:
        lines.append(
            f"| target encoding alone, batch 2 (ms/image; ours only, outside the step) | "
            f"{_ms(res['encode'])} |" + " - |" * (2 * len(peers))
        )
    for phase in ("forward", "inference", "train"):
        row = f"| peak RSS during {phase} (MiB) | {_mem(res.get(phase))} |"
        row += "".join(f" {_mem(r['results'].get(phase))} |" for r in peers.values()) + " - |" * len(peers)
        lines.append(row)
    model = report["model"]
    lines.append(
        f"| parameters (M) | {model['params'] / 1e6:.2f} |"
        + "".join(f" {r.get('params', 0) / 1e6:.2f} |" for r in peers.values())
        + " - |" * len(peers)
    )
    lines += ["", "| other figures (keras_retinanet) | value |", "|---|---:|"]
    lines.append(
        f"| forward FLOPs (G, {model['flops_method'].split(':')[0]} conv/matmul count) | "
        f"{model['forward_gflops']:,.1f} |"
    )
    peak = report["peak_flops"]
    lines.append(f"| machine FP32 peak (GFLOP/s): {peak['formula']} | {peak['gflops'] or '-'} |")
    if peak.get("measured_matmul_gflops"):
        lines.append(f"| measured FP32 matmul (GFLOP/s) | {peak['measured_matmul_gflops']} |")
    for key, label in (
        ("forward", "forward"),
        ("forward_xla", "forward XLA"),
        ("train", "training step"),
        ("train_xla", "training step XLA"),
    ):
        frac = report["utilisation"].get(key)
        if frac is not None:
            lines.append(f"| achieved fraction of peak, {label} | {frac:.1%} |")
    tflite = report.get("tflite", {})
    for variant in ("float32", "float16", "int8"):
        rec = tflite.get(variant)
        if rec:
            size = rec.get("size_bytes") or rec.get("convert", {}).get("size_bytes")
            lines.append(
                f"| TFLite {variant} latency, XNNPACK, {cfg['threads']} threads (ms/image); file "
                f"{(size or 0) / 2**20:.1f} MiB; peak RSS {_mem(rec)} MiB | {_ms(rec)} |"
            )
    if "skipped" in tflite:
        lines.append(f"| TFLite | skipped: {tflite['skipped']} |")
    pipe = res.get("pipeline", {})
    for stage, rate in pipe.get("images_per_s", {}).items():
        lines.append(f"| input pipeline {stage}, batch {pipe['batch_size']} (images/s) | {rate:,.1f} |")
    if "skipped" in pipe or "error" in pipe:
        lines.append(f"| input pipeline | {pipe.get('skipped') or pipe.get('error')} |")
    lines += [
        "",
        *[f"- {p}: skipped ({r['skipped']})" for p, r in report.get("peers", {}).items() if "skipped" in r],
    ]
    lines.append(f"- FLOPs: {model['flops_method']}.")
    lines.append(f"- Peak FLOP/s assumption: {peak['assumption']}.")
    lines.append(
        "- Ratios are peer time / keras_retinanet time from this one run (> 1: keras_retinanet is faster)."
    )
    return "\n".join(lines).rstrip() + "\n"


def utilisation(model: dict[str, Any], results: dict[str, Any], peak: dict[str, Any]) -> dict[str, float]:
    """Achieved fraction of peak FLOP/s per phase: counted FLOPs per image / time per image / peak."""
    out: dict[str, float] = {}
    if not peak.get("gflops"):
        return out
    for key, factor in (("forward", 1), ("forward_xla", 1), ("train", 3), ("train_xla", 3)):
        ms = results.get(key, {}).get("median_ms")
        if ms:
            out[key] = round(model["forward_flops"] * factor / (ms / 1000.0) / (peak["gflops"] * 1e9), 4)
    return out


# ----------------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="R50-512 speed benchmark (DESIGN section 8)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="TF intra/inter-op threads (all)"
    )
    parser.add_argument("--inter-op-threads", type=int, default=None, help="default: --threads")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per figure (default 7; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2; quick 1)")
    parser.add_argument("--image-size", type=int, default=None, help="default 512 (quick 64)")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--backbone", default=None, help="default resnet50 (quick mobilenet_v2 x0.35)")
    parser.add_argument("--backbone-alpha", type=float, default=None, help="width multiplier of MobileNets")
    parser.add_argument("--fpn-channels", type=int, default=None, help="default 256 (quick 32)")
    parser.add_argument("--head-depth", type=int, default=None, help="default 4 (quick 1)")
    parser.add_argument(
        "--p6-source",
        choices=("c5", "p5"),
        default="c5",
        help="c5: the paper (default); p5: the layout of the keras-hub and torchvision models compared",
    )
    parser.add_argument(
        "--xla", action="store_true", help="also time forward and training step with jit_compile"
    )
    parser.add_argument("--skip-tflite", action="store_true")
    parser.add_argument("--tflite-variants", default="float32,float16,int8")
    parser.add_argument(
        "--calibration-images", type=int, default=None, help="int8 calibration (default 8; quick 2)"
    )
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument(
        "--pipeline-spec",
        default=None,
        help="dataset spec (default: BCCD trainval if present, else a synthetic VOC set)",
    )
    parser.add_argument("--pipeline-batch-size", type=int, default=None, help="default 8 (quick 4)")
    parser.add_argument("--pipeline-epochs", type=int, default=None, help="default 3 (quick 1)")
    parser.add_argument(
        "--pipeline-stages",
        default=None,
        help="default decode,augment,full,full-no-xla (quick: decode,full-no-xla)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="also run keras-hub and torchvision (subprocesses)"
    )
    parser.add_argument("--peers", default=",".join(PEERS), help="peers for --compare")
    parser.add_argument(
        "--peer-python", default=None, help=f"peers' interpreter (default {DEFAULT_PEER_PYTHON})"
    )
    parser.add_argument("--peer-timeout", type=float, default=3600.0, help="seconds per peer")
    parser.add_argument(
        "--peak-gflops", type=float, default=None, help="machine peak, overriding the estimate"
    )
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--markdown", default=None, help="write the Markdown tables here")
    parser.add_argument("--quick", action="store_true", help="tiny model, size and runs (CI smoke test)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "runs": (7, 2),
        "warmup": (2, 1),
        "image_size": (512, 64),
        "backbone": ("resnet50", "mobilenet_v2"),
        "backbone_alpha": (None, 0.35),
        "fpn_channels": (256, 32),
        "head_depth": (4, 1),
        "calibration_images": (8, 2),
        "pipeline_batch_size": (8, 4),
        "pipeline_epochs": (3, 1),
        "pipeline_stages": ("decode,augment,full,full-no-xla", "decode,full-no-xla"),
    }
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if not quick and args.runs < 5:
        parser.error("the protocol needs --runs >= 5 (use --quick for a smoke test)")
    args.tflite_variants = [v for v in args.tflite_variants.split(",") if v]
    args.pipeline_stages = [s for s in args.pipeline_stages.split(",") if s]
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; prints the Markdown report and writes ``--json`` / ``--markdown``."""
    args = parse_args(argv)
    command = "python tools/benchmark.py " + shlex.join(list(argv) if argv is not None else sys.argv[1:])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    configure_threads(args.threads, args.inter_op_threads)
    import keras

    machine = machine_info()
    data = benchmark_inputs(args.image_size)
    results: dict[str, Any] = {}
    model_summary = measure_project(args, data, results)
    tflite = results.pop("tflite", {})
    if args.skip_pipeline:
        results["pipeline"] = {"skipped": "--skip-pipeline"}
    else:
        measure_pipeline(args, results)

    peers: dict[str, Any] = {}
    if args.compare:
        python = find_peer_python(args.peer_python)
        with tempfile.TemporaryDirectory(prefix="retinanet-bench-") as tmp:
            inputs_path = Path(tmp) / "inputs.npz"
            np.savez(inputs_path, **data)
            for peer in args.peers:
                peers[peer] = run_peer(peer, python, args, inputs_path, args.peer_timeout)
                if "skipped" in peers[peer]:
                    print(f"[benchmark] peer {peer} skipped: {peers[peer]['skipped']}", flush=True)

    peak = peak_flops(
        machine, args.threads, args.peak_gflops, measure_matmul_gflops(256 if args.quick else 2048)
    )
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "machine": machine,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
        "model": model_summary,
        "peak_flops": peak,
        "utilisation": utilisation(model_summary, results, peak),
        "results": results,
        "tflite": tflite,
        "peers": peers,
        "ratios": peer_ratios(results, peers),
    }
    text = markdown_report(report)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
