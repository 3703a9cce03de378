"""tools/benchmark.py: a --quick run writes a complete report, FLOPs are counted right, missing peers are skipped.

No timing threshold is asserted: timings on a shared CI machine mean nothing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # peer_benchmarks imports "benchmark" by name
    spec.loader.exec_module(module)
    return module


benchmark = _load("benchmark")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One --quick run (tiny model at 64 px, float32 TFLite only, peers asked for but absent)."""
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--quick",
        "--threads",
        "2",
        "--tflite-variants",
        "float32",
        "--compare",
        "--peer-python",
        str(out / "no-such-python"),
        "--json",
        str(out / "bench.json"),
        "--markdown",
        str(out / "bench.md"),
    ]
    assert benchmark.main(argv) == 0
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def test_quick_run_writes_complete_json(quick_report):
    report, markdown = quick_report
    for key in (
        "date",
        "command",
        "machine",
        "versions",
        "config",
        "model",
        "peak_flops",
        "utilisation",
        "results",
        "tflite",
        "peers",
        "ratios",
    ):
        assert key in report, key
    results = report["results"]
    for phase in ("forward", "inference", "decode", "encode", "train"):
        assert "error" not in results[phase], results[phase]
        assert results[phase]["median_ms"] > 0
        assert len(results[phase]["runs_ms"]) == report["config"]["runs"]
        assert results[phase]["peak_rss_mib"] > 0
    assert report["model"]["params"] > 0 and report["model"]["forward_flops"] > 0
    assert report["machine"]["logical_cpus"] >= 1 and report["machine"]["cpu_model"]
    assert report["tflite"]["float32"]["median_ms"] > 0
    assert report["tflite"]["float32"]["size_bytes"] > 0
    assert all(rate > 0 for rate in results["pipeline"]["images_per_s"].values())
    assert "| forward, backbone + FPN + heads" in markdown and report["command"] in markdown


def test_missing_peers_are_skipped_with_a_message(quick_report):
    report, markdown = quick_report
    assert set(report["peers"]) == {"keras-hub", "torchvision"}
    for peer in report["peers"].values():
        assert "does not exist" in peer["skipped"]
    assert report["ratios"] == {}
    assert "keras-hub: skipped" in markdown


def test_peer_without_its_library_is_skipped(tmp_path):
    """An interpreter lacking torch (this project's own) reports torchvision as not importable."""
    pytest.importorskip("numpy")
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed in the test environment")
    inputs = tmp_path / "inputs.npz"
    import numpy as np

    np.savez(inputs, **benchmark.benchmark_inputs(32, batch=2))
    args = benchmark.parse_args(["--quick"])
    result = benchmark.run_peer("torchvision", sys.executable, args, inputs, timeout=120)
    assert "not importable" in result["skipped"]
    assert benchmark.run_peer("torchvision", None, args, inputs, timeout=1)["skipped"].startswith("no peer")


def test_single_conv_flops_match_hand_count():
    import keras
    import tensorflow as tf

    # 3x3 conv, stride 2, 'same': 32x32x3 -> 16x16x8. FLOPs = 2 * 16*16 * 8 * 3*3*3 = 110,592.
    expected = 2 * 16 * 16 * 8 * 3 * 3 * 3
    assert benchmark.conv2d_flops((16, 16), (3, 3), 3, 8) == expected
    layer = keras.layers.Conv2D(8, 3, strides=2, padding="same")
    function = tf.function(lambda x: layer(x), autograph=False)
    counted = benchmark.graph_flops(function.get_concrete_function(tf.TensorSpec((1, 32, 32, 3), tf.float32)))
    assert counted["flops"] == expected
    assert counted["by_op"] == {"Conv2D": expected} and counted["uncounted_ops"] == 0
    # Dense 10 -> 4 on a batch of 3: 2 * 3 * 4 * 10.
    dense = keras.layers.Dense(4)
    function = tf.function(lambda x: dense(x), autograph=False)
    counted = benchmark.graph_flops(function.get_concrete_function(tf.TensorSpec((3, 10), tf.float32)))
    assert counted["flops"] == 2 * 3 * 4 * 10


def test_peak_flops_formula():
    machine = {
        "vendor": "GenuineIntel",
        "cpu_family": 6,
        "cpu_model_number": 85,
        "simd": ["avx2", "avx512f", "fma"],
        "logical_cpus": 4,
        "threads_per_core": 2,
        "mhz": 2000.0,
    }
    peak = benchmark.peak_flops(machine, threads=4)
    assert peak["gflops"] == pytest.approx(2 * 2.0 * 64)  # 2 physical cores x 2 GHz x 64 FLOPs/cycle
    amd = dict(machine, vendor="AuthenticAMD", cpu_family=25, threads_per_core=1)
    assert benchmark.peak_flops(amd, threads=2)["gflops"] == pytest.approx(2 * 2.0 * 32)
    assert benchmark.peak_flops(machine, 4, override_gflops=123.0)["gflops"] == 123.0
    # A measured matmul faster than the nominal peak means the clock boosts: it becomes the peak.
    assert benchmark.peak_flops(amd, 2, measured_gflops=200.0)["gflops"] == 200.0
    assert benchmark.peak_flops(amd, 2, measured_gflops=100.0)["gflops"] == pytest.approx(128.0)


def test_measured_matmul_rate_is_plausible():
    # 2 * 256^3 FLOPs: positive, and far below any CPU's 100 TFLOP/s.
    assert 0.1 < benchmark.measure_matmul_gflops(size=256, runs=3) < 1e5


@pytest.mark.slow
def test_quick_compare_with_installed_peers(tmp_path):
    """With the peers' environment present, --compare measures both peers and prints ratios."""
    python = benchmark.find_peer_python(None)
    if python is None:
        pytest.skip(f"no peer environment at {benchmark.DEFAULT_PEER_PYTHON}")
    out = tmp_path / "bench.json"
    argv = ["--quick", "--compare", "--skip-tflite", "--skip-pipeline", "--json", str(out)]
    assert benchmark.main(argv) == 0
    report = json.loads(out.read_text())
    for peer in ("keras-hub", "torchvision"):
        assert "skipped" not in report["peers"][peer], report["peers"][peer]
        assert report["peers"][peer]["results"]["forward"]["median_ms"] > 0
        assert report["ratios"][peer]["forward"] > 0
