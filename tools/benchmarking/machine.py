"""How a benchmark names its machine: one-line CPU and feature descriptions, FP32 peak FLOP/s (by the CPU's
vector units and by a measured matmul). The facts themselves come from :mod:`keras_retinanet.detectors.machine`."""

from __future__ import annotations

from typing import Any

from keras_retinanet.detectors.machine import SPEED_FEATURES
from keras_retinanet.detectors.timing import time_runs


def describe_cpu(machine: dict[str, Any]) -> str:
    """One line naming the CPU, e.g. ``AMD EPYC (AuthenticAMD family 25 model 17), 2 logical CPUs, ...``."""
    ghz = f"{machine['mhz'] / 1000:.2f} GHz" if machine.get("mhz") else "clock unknown"
    hypervisor = f", {machine['hypervisor']} guest" if machine.get("hypervisor") else ""
    return (
        f"{machine['cpu_model']} ({machine['vendor']} family {machine['cpu_family']} model "
        f"{machine['cpu_model_number']}), {machine['logical_cpus']} logical CPUs, "
        f"{machine['threads_per_core']} thread(s)/core, {ghz}{hypervisor}"
    )


def describe_features(machine: dict[str, Any]) -> str:
    """Which :data:`SPEED_FEATURES` the CPU has and lacks, and its bfloat16 hardware, as one line."""
    features = machine.get("cpu_features", {})
    have = [name for name in SPEED_FEATURES if features.get(name)]
    lack = [name for name in SPEED_FEATURES if not features.get(name)]
    bf16 = machine.get("bf16_hardware") or "none (emulated in float32)"
    text = (
        f"has {', '.join(have) or 'none of them'}; lacks {', '.join(lack) or 'none'}; bfloat16 matmul: {bf16}"
    )
    if machine.get("speed_env"):
        text += "; " + ", ".join(f"{k}={v}" for k, v in machine["speed_env"].items())
    return text


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
            if model < 0x30:
                return 16, "AMD Zen 1: 2 x 128-bit FMA units"
            return 32, "AMD Zen 2: 2 x 256-bit FMA units"
    if "avx512f" in simd:
        return 64, "AVX-512 with 2 x 512-bit FMA units assumed (1 unit on some parts: half this peak)"
    if "avx2" in simd and "fma" in simd:
        return 32, "AVX2 with 2 x 256-bit FMA units"
    return 16, "no FMA: 2 x 128-bit SSE (mul + add) assumed"


def measure_matmul_gflops(size: int = 2048, runs: int = 7) -> float:
    """FP32 GFLOP/s of the fastest of ``runs`` ``size x size`` TensorFlow matmuls (``2 size^3`` FLOPs each).

    Uses the thread pools already configured for TensorFlow. A large square SGEMM is the fastest dense kernel a
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

    Returns:
        ``{"gflops", "nominal_gflops", "measured_matmul_gflops", "formula", "assumption"}`` (``gflops`` is the
        peak used; only ``gflops``, ``formula`` and ``assumption`` when ``override_gflops`` is given).
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
