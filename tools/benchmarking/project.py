"""This project's measurements: forward, inference, decode, target encoding, training step, TFLite.

Every phase runs on the fixed inputs of :func:`benchmark_inputs` (the same pixels the peers get) and is timed by
:func:`keras_retinanet.detectors.timing.time_runs` inside :func:`~keras_retinanet.detectors.timing.run_phase`,
so each record has ``median_ms``, ``min_ms``, ``runs_ms`` (ms per image), ``peak_rss_mib`` and ``phase_s``:

- ``forward``: ``model(images, training=False)`` in a ``tf.function``, batch 1 (backbone + FPN + heads), on the
  inference graph that ``predict`` runs (``keras_retinanet.model.inference_graph``: BatchNorm folded into the
  convolutions); ``forward_xla`` the same with ``jit_compile=True``; ``forward_unfolded`` the model's own
  (training) graph; ``forward_bf16`` the inference graph in bfloat16 (``mixed_bfloat16``) and ``train_bf16``
  the training step of a model built under ``mixed_bfloat16`` (``--mixed-precision`` on a CPU), only where
  ``machine.bf16_support()`` finds bfloat16 hardware (else ``forward_bf16`` is ``{"skipped": reason}``).
- ``inference``: a :class:`keras_retinanet.detectors.KerasDetector` on one uint8 image
  (:func:`keras_retinanet.detectors.latency.detector_latency`): letterbox, network, decode + per-class NMS,
  boxes mapped back to the image's pixels.
- ``decode``: ``model.decode`` (decode + NMS) alone, on fixed raw outputs.
- ``encode``: the label encoder on a batch of 2 (outside the training step, as the input pipeline runs it).
- ``train``: ``model.train_on_batch`` at batch 2 with targets encoded beforehand, SGD(0.01, momentum 0.9);
  ``train_xla`` the same compiled with ``jit_compile=True``.
- ``tflite``: float32 / float16 / int8 files from ``keras_retinanet.export.convert_tflite`` (NMS inside,
  builtin ops), each timed by :func:`keras_retinanet.detectors.latency.tflite_latency` (LiteRT, XNNPACK, the
  interpreter on a ready canvas). Int8 is calibrated on random images: its latency is meaningful, its accuracy
  is not.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarking.flops import graph_flops
from benchmarking.timing import run_phase
from keras_retinanet.conventions import fallback_class_names
from keras_retinanet.detectors.latency import detector_latency, tflite_latency
from keras_retinanet.detectors.timing import time_runs
from keras_retinanet.imaging import parse_image_size
from keras_retinanet.model.config import ModelConfig
from keras_retinanet.model.presets import PRESETS

FLOPS_METHOD = (
    "analytic: 2 x MACs of every Conv2D/DepthwiseConv2d/MatMul in the traced forward graph "
    "(static shapes); element-wise ops, BatchNorm and decoding not counted; training step = 3 x forward"
)
TRAIN_BATCH = 2


# The R50-512 protocol's model: the paper's RetinaNet (ResNet-50, 256-channel pyramid, 4-conv heads, P6 from C5,
# 512 x 512 input), 80 classes.
PROTOCOL_MODEL = PRESETS["paper"]
PROTOCOL_CLASSES = 80


@dataclasses.dataclass
class ProjectSettings:
    """What is measured and how often. Defaults: the R50-512 protocol.

    Attributes:
        model: the ``RetinaNet`` measured, as a :class:`~keras_retinanet.model.config.ModelConfig` (its
            ``image_size`` is the square input side); built by :func:`build_model` with random weights.
        num_classes: its number of classes.
        threads: TensorFlow intra- and inter-op threads, and LiteRT threads.
        inter_op_threads: TensorFlow inter-op threads when different from ``threads``.
        warmup, runs: untimed and timed calls per figure.
        xla: also time ``forward_xla`` and ``train_xla``.
        bf16: also time ``forward_bf16`` (the caller checks the hardware: ``machine.bf16_support``).
        tflite_variants: TFLite files to convert and time (empty: none).
        calibration_images: random images for int8 calibration.
    """

    model: ModelConfig = dataclasses.field(default_factory=lambda: PROTOCOL_MODEL)
    num_classes: int = PROTOCOL_CLASSES
    threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    inter_op_threads: int | None = None
    warmup: int = 2
    runs: int = 7
    xla: bool = False
    bf16: bool = False
    tflite_variants: Sequence[str] = ("float32", "float16", "int8")
    calibration_images: int = 8

    @property
    def image_size(self) -> int:
        """The square input side of ``model``; ``ValueError`` for a model of another shape."""
        height, width = parse_image_size(self.model.image_size)
        if height != width:
            raise ValueError(
                f"the benchmark measures square inputs; the model's image_size is {height} x {width}"
            )
        return height


def benchmark_inputs(
    image_size: int, boxes_per_image: int = 5, batch: int = TRAIN_BATCH, seed: int = 0
) -> dict[str, Any]:
    """The fixed inputs every library is timed on.

    Returns:
        ``images`` (batch, H, W, 3) uint8, ``boxes`` (batch, M, 4) float32 ``x1, y1, x2, y2`` pixels with sides
        from 1/8 to 1/2 of the image, ``classes`` (batch, M) int32 in [0, 80).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch, image_size, image_size, 3), dtype=np.uint8)
    sides = rng.uniform(image_size / 8, image_size / 2, size=(batch, boxes_per_image, 2))
    corners = rng.uniform(0, 1, size=(batch, boxes_per_image, 2)) * (image_size - sides)
    boxes = np.concatenate([corners, corners + sides], axis=-1).astype(np.float32)
    classes = rng.integers(0, 80, size=(batch, boxes_per_image)).astype(np.int32)
    return {"images": images, "boxes": boxes, "classes": classes}


def configure_threads(threads: int, inter_op: int | None = None) -> None:
    """Sets TensorFlow's intra-op and inter-op thread pools (effective only before TF runs anything)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op or threads)
    except RuntimeError:
        # TF already ran something in this process (e.g. main() called from a test): the pools are fixed.
        print(
            f"[benchmark] TensorFlow is already initialised; its thread pools stay at "
            f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all cores'} (asked {threads})"
        )


def build_model(settings: ProjectSettings):
    """The benchmarked ``RetinaNet`` with random weights: ``settings.model`` built for ``num_classes`` classes."""
    return settings.model.update({"weights": None}).build(fallback_class_names(settings.num_classes))


def _forward_function(model, jit_compile: bool = False):
    import tensorflow as tf

    def call(x):
        return model(x, training=False)

    return tf.function(call, autograph=False, jit_compile=jit_compile)


def model_summary(model, image_size: int) -> dict[str, Any]:
    """Parameters and analytic forward FLOPs of one image.

    Returns:
        ``{"params", "forward_flops", "forward_gflops", "flops_by_op", "flops_uncounted_ops", "flops_method"}``.
    """
    import tensorflow as tf

    spec = tf.TensorSpec((1, image_size, image_size, 3), tf.float32)
    flops = graph_flops(_forward_function(model).get_concrete_function(spec))
    return {
        "params": int(model.count_params()),
        "forward_flops": int(flops["flops"]),
        "forward_gflops": round(flops["flops"] / 1e9, 2),
        "flops_by_op": flops["by_op"],
        "flops_uncounted_ops": flops["uncounted_ops"],
        "flops_method": FLOPS_METHOD,
    }


def build_phase(settings: ProjectSettings, results: dict[str, Any]):
    """Builds the model as the ``build`` phase (``build_s`` seconds); returns it.

    Raises:
        RuntimeError: building failed (every other phase needs the model).
    """
    holder: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        start = time.perf_counter()
        holder["model"] = build_model(settings)
        return {"build_s": round(time.perf_counter() - start, 2)}

    if "error" in run_phase(results, "build", build):
        raise RuntimeError(f"building the model failed: {results['build']['error']}")
    return holder["model"]


def measure_model(model, settings: ProjectSettings, data: dict[str, Any], results: dict[str, Any]) -> None:
    """Times forward (and XLA), inference, decode, encode and the training step into ``results``.

    Args:
        model: from :func:`build_model` (the training step changes its weights).
        data: from :func:`benchmark_inputs` at ``settings.image_size``.
        results: phase name -> record (see the module docstring); a failing phase is recorded as an error.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_retinanet.detectors import KerasDetector
    from keras_retinanet.model.inference_graph import global_dtype_policy, inference_model

    size, w, r = settings.image_size, settings.warmup, settings.runs
    image = tf.constant(data["images"][:1].astype(np.float32))
    folded = inference_model(model)
    forward = _forward_function(folded)
    run_phase(results, "forward", lambda: time_runs(lambda: forward(image), w, r))
    if settings.xla:
        forward_xla = _forward_function(folded, jit_compile=True)
        run_phase(results, "forward_xla", lambda: time_runs(lambda: forward_xla(image), w, r))
    unfolded = _forward_function(model)
    run_phase(results, "forward_unfolded", lambda: time_runs(lambda: unfolded(image), w, r))
    if settings.bf16:
        forward_bf16 = _forward_function(inference_model(model, "bf16"))
        run_phase(results, "forward_bf16", lambda: time_runs(lambda: forward_bf16(image), w, r))

    def inference() -> dict[str, Any]:
        timing = detector_latency(KerasDetector(model, size), [data["images"][0]], 1, w, r)
        return {**timing, "how": "detector_latency(KerasDetector) on one uint8 image"}

    run_phase(results, "inference", inference)

    outputs = forward(image)

    def decode_outputs(raw):
        return model.decode(raw, (size, size))

    decode = tf.function(decode_outputs)
    run_phase(results, "decode", lambda: time_runs(lambda: decode(outputs), w, r))

    encoder = model.label_encoder()

    def encode_targets(boxes, classes):
        return encoder.encode((size, size), boxes, classes)

    encode = tf.function(encode_targets)
    batch = len(data["images"])
    run_phase(
        results,
        "encode",
        lambda: time_runs(lambda: encode(data["boxes"], data["classes"]), w, r, per=batch),
    )
    targets = {k: np.asarray(v) for k, v in encode(data["boxes"], data["classes"]).items()}
    images = tf.constant(data["images"].astype(np.float32))

    def train(trained, jit: bool) -> dict[str, Any]:
        trained.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
        losses: list[float] = []
        timing = time_runs(
            lambda: losses.append(float(np.sum(trained.train_on_batch(images, targets)))), w, r, per=batch
        )
        return {**timing, "batch_size": batch, "loss_first_last": [losses[0], losses[-1]]}

    run_phase(results, "train", lambda: train(model, False))
    if settings.xla:
        run_phase(results, "train_xla", lambda: train(model, True))
    if settings.bf16:
        # What `retinanet train --mixed-precision` trains on a CPU: the model built under mixed_bfloat16.
        def train_bf16() -> dict[str, Any]:
            with global_dtype_policy("mixed_bfloat16"):
                bf16_model = build_model(settings)
            return train(bf16_model, False)

        run_phase(results, "train_bf16", train_bf16)


def measure_tflite(model, settings: ProjectSettings) -> dict[str, Any]:
    """Converts and times each of ``settings.tflite_variants``.

    Returns:
        ``{"note": ..., variant: record}``, each record :func:`~keras_retinanet.detectors.latency.tflite_latency`'s
        (``median_ms``, ``size_bytes`` ...) plus ``peak_rss_mib`` and ``convert`` (``convert_s``, ``size_bytes``),
        or ``{"error": ...}``; or
        ``{"skipped": why}`` when the export package cannot be imported.
    """
    import numpy as np

    try:
        from keras_retinanet.export import convert_tflite
    except ImportError as err:
        print(f"[benchmark] TFLite skipped: keras_retinanet.export not available ({err})", flush=True)
        return {"skipped": f"keras_retinanet.export not available ({err})"}
    size = settings.image_size
    rng = np.random.default_rng(1)
    calibration = [
        rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(settings.calibration_images)
    ]
    tflite: dict[str, Any] = {
        "note": "LiteRT interpreter (XNNPACK) on a uint8 canvas; NMS inside (TFLite_Detection_PostProcess); "
        "int8 calibrated on random images (latency only)",
    }
    scratch = Path(tempfile.mkdtemp(prefix="retinanet-bench-tflite-"))
    try:
        for variant in settings.tflite_variants:
            path = scratch / f"model_{variant}.tflite"
            phases: dict[str, Any] = {}

            def convert(variant: str = variant, path: Path = path) -> dict[str, Any]:
                start = time.perf_counter()
                representative = (lambda: calibration) if variant == "int8" else None
                contents = convert_tflite(model, variant, (size, size), representative_images=representative)
                path.write_bytes(contents)
                return {"convert_s": round(time.perf_counter() - start, 1), "size_bytes": len(contents)}

            convert_record = run_phase(phases, f"tflite {variant} convert", convert)
            if "error" in convert_record:
                tflite[variant] = convert_record
                continue

            def run(path: Path = path) -> dict[str, Any]:
                return tflite_latency(path, settings.threads, settings.runs, settings.warmup)

            tflite[variant] = {**run_phase(phases, f"tflite {variant}", run), "convert": convert_record}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tflite
