"""Facts about the machine: CPU model and the CPU features that decide convolution speed, read from
``/proc/cpuinfo`` and ``lscpu`` (parsed from text, so that tests feed canned outputs), and whether bfloat16
inference runs natively here (:func:`bf16_support`, behind ``--precision bf16``). docs/benchmark.md lists
what each feature means."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
from typing import Any

# CPU flags (as /proc/cpuinfo spells them) that decide how fast the model's kernels can run, in report order.
SPEED_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
# Environment variables that change which kernels TensorFlow / oneDNN pick; recorded when set.
SPEED_ENV = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS")


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The ``key: value`` fields of the first processor block of a ``/proc/cpuinfo`` text."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break  # first processor only: the others repeat it
            continue
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def parse_lscpu(text: str) -> dict[str, str]:
    """The ``key: value`` lines of an ``lscpu`` output (empty values dropped)."""
    return {key: value for key, value in parse_cpuinfo(text).items() if value}


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _run_lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _int(value: str | None) -> int:
    """A decimal (cpuinfo, lscpu) or ``0x`` hexadecimal number; 0 when missing or unreadable."""
    with contextlib.suppress(TypeError, ValueError):
        return int(value, 0) if value and value.lower().startswith("0x") else int(value or 0)
    return 0


def machine_info(cpuinfo_text: str | None = None, lscpu_text: str | None = None) -> dict[str, Any]:
    """The machine's description for a benchmark report, from a ``/proc/cpuinfo`` text and an ``lscpu``
    output (None: this machine's). ``mhz`` is the max or nominal clock (None if unknown), ``cpu_features``
    ``{flag: bool}`` over :data:`SPEED_FEATURES`, ``speed_env`` the :data:`SPEED_ENV` variables set."""
    cpuinfo = parse_cpuinfo(_read("/proc/cpuinfo") if cpuinfo_text is None else cpuinfo_text)
    lscpu = parse_lscpu(_run_lscpu() if lscpu_text is None else lscpu_text)
    flags = set(cpuinfo.get("flags", lscpu.get("Flags", "")).split())
    mhz = None
    for source in (lscpu.get("CPU max MHz"), cpuinfo.get("cpu MHz"), lscpu.get("CPU MHz")):
        with contextlib.suppress(TypeError, ValueError):
            mhz = float(source)  # type: ignore[arg-type]
            if mhz > 0:
                break
            mhz = None
    if not mhz:  # e.g. "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
        match = re.search(r"@\s*([\d.]+)\s*GHz", cpuinfo.get("model name", lscpu.get("Model name", "")))
        mhz = float(match.group(1)) * 1000 if match else None
    features = {name: name in flags for name in SPEED_FEATURES}
    machine = {
        "cpu_model": lscpu.get("Model name")
        or cpuinfo.get("model name")
        or platform.processor()
        or "unknown",
        "vendor": lscpu.get("Vendor ID") or cpuinfo.get("vendor_id", ""),
        "cpu_family": _int(cpuinfo.get("cpu family", lscpu.get("CPU family"))),
        "cpu_model_number": _int(cpuinfo.get("model", lscpu.get("Model"))),
        "logical_cpus": os.cpu_count() or 1,
        "threads_per_core": _int(lscpu.get("Thread(s) per core")) or 1,
        "mhz": mhz,
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "cpu_features": features,
        "simd": sorted(name for name, present in features.items() if present),
        "speed_env": {name: os.environ[name] for name in SPEED_ENV if name in os.environ},
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    machine["bf16_hardware"] = bf16_hardware(machine)
    return machine


def bf16_hardware(machine: dict[str, Any]) -> str | None:
    """Which bfloat16 matmul hardware the CPU has: ``"AMX"``, ``"AVX512-BF16"`` or None (emulated, slow)."""
    features = machine.get("cpu_features", {})
    if features.get("amx_bf16") and features.get("amx_tile"):
        return "AMX"
    if features.get("avx512_bf16"):
        return "AVX512-BF16"
    return None


# GPUs compute bfloat16 natively from compute capability 8.0 (Ampere) on.
BF16_MIN_GPU_CAPABILITY = (8, 0)


def _accelerators() -> dict[str, list]:
    """TensorFlow's visible GPUs as ``[(name, (major, minor))]`` and TPUs as ``[name]`` (imports TensorFlow)."""
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(
            (details.get("device_name", device.name), tuple(details.get("compute_capability", (0, 0))))
        )
    return {"gpus": gpus, "tpus": [device.name for device in tf.config.list_physical_devices("TPU")]}


def bf16_support(
    machine: dict[str, Any] | None = None, accelerators: dict[str, list] | None = None
) -> tuple[bool, str]:
    """(supported, reason naming the hardware): whether ``--precision bf16`` runs natively here, decided by the
    device TensorFlow runs on: a TPU, else every GPU (compute capability >= 8.0), else the CPU (AMX or
    AVX512-BF16). ``machine``: :func:`machine_info`; ``accelerators``: ``{"gpus": [(name, (major, minor))],
    "tpus": [name]}``; both read from this machine when None."""
    accelerators = _accelerators() if accelerators is None else accelerators
    if accelerators.get("tpus"):
        return True, f"TPU {accelerators['tpus'][0]}"
    gpus = accelerators.get("gpus") or []
    if gpus:
        old = [
            f"{name} (compute capability {'.'.join(map(str, cc))})"
            for name, cc in gpus
            if tuple(cc) < BF16_MIN_GPU_CAPABILITY
        ]
        if old:
            return False, f"GPU {', '.join(old)} has no native bfloat16 (needs compute capability >= 8.0)"
        name, capability = gpus[0]
        return True, f"GPU {name} (compute capability {'.'.join(map(str, capability))})"
    machine = machine_info(lscpu_text="") if machine is None else machine
    hardware = bf16_hardware(machine)
    if hardware:
        return True, f"CPU {machine['cpu_model']} has {hardware}"
    return False, (
        f"CPU {machine['cpu_model']} has neither AMX nor AVX512-BF16 (cpuinfo flags amx_bf16, avx512_bf16), and "
        "no GPU with compute capability >= 8.0 or TPU is visible: bfloat16 would be emulated, slower than float32"
    )
