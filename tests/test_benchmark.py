"""benchmarking and tools/benchmark.py: each test fails when the thing it names breaks.

Timings on a shared CI machine mean nothing, so no test asserts a speed: timing is checked with a fake clock and
with sleeps of known length, FLOPs against hand counts, the report against numbers it is given, machine facts
against canned /proc/cpuinfo texts.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchmarking import flops, peers, report
from benchmarking import machine as bench_machine
from benchmarking import timing as bench_timing

from keras_retinanet.detectors import machine, timing

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
MIB = 1 << 20


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


benchmark_tool = _load_tool("benchmark")


# ----------------------------------------------------------------------------------------------------------
# timing


class FakeClock:
    """A clock that only moves when the timed function says how long it took."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_time_runs_uses_only_the_timed_calls_and_exact_statistics():
    clock = FakeClock()
    durations = iter([9.0, 9.0, 0.030, 0.010, 0.020, 0.050])  # two warm-ups (9 s each) must not count
    calls = []

    def work():
        calls.append(1)
        clock.now += next(durations)

    result = timing.time_runs(work, warmup=2, runs=4, clock=clock)
    assert set(result) == {"median_ms", "min_ms", "runs_ms"}
    assert len(calls) == 6
    assert result["runs_ms"] == [30.0, 10.0, 20.0, 50.0]
    assert result["median_ms"] == 25.0  # mean of the middle two
    assert result["min_ms"] == 10.0


def test_time_runs_divides_by_per():
    clock = FakeClock()
    durations = iter([0.100, 0.300, 0.200])

    def work():
        clock.now += next(durations)

    result = timing.time_runs(work, warmup=0, runs=3, per=4, clock=clock)
    assert result == {"median_ms": 50.0, "min_ms": 25.0, "runs_ms": [25.0, 75.0, 50.0]}


def test_time_runs_measures_milliseconds_of_the_real_clock():
    # A sleep lasts at least what it asks for, so every run is >= 20 ms; a unit slip (s or us) is off by 1000x.
    result = timing.time_runs(lambda: time.sleep(0.02), warmup=0, runs=3)
    assert 20.0 <= result["min_ms"] <= result["median_ms"] < 2000.0


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"warmup": -1}, {"per": 0}])
def test_time_runs_rejects_impossible_counts(kwargs):
    args = {"warmup": 0, "runs": 1, "per": 1, **kwargs}
    with pytest.raises(ValueError, match="time_runs needs"):
        timing.time_runs(lambda: None, args["warmup"], args["runs"], args["per"])


def _touch(size: int) -> bytearray:
    """``size`` bytes that are really resident (bytearray(n) alone may map zero pages lazily)."""
    return bytearray(b"\x01") * size


def test_peak_rss_rises_by_a_known_allocation_and_reset_forgets_it():
    if not bench_timing.reset_peak_rss():
        pytest.skip("this kernel does not allow resetting the RSS high-water mark")
    before = bench_timing.peak_rss_mib()
    block = _touch(160 * MIB)
    during = bench_timing.peak_rss_mib()
    assert during - before >= 150
    del block
    assert bench_timing.peak_rss_mib() >= during - 1  # a high-water mark does not fall by itself
    assert bench_timing.reset_peak_rss()
    assert bench_timing.peak_rss_mib() < during - 100  # after the reset: only what is resident now


def test_peak_memory_records_the_phase_peak():
    record: dict = {}
    baseline = bench_timing.current_rss_mib()
    if baseline is None:
        pytest.skip("no /proc/self/status on this platform")
    with bench_timing.peak_memory(record):
        block = _touch(128 * MIB)
        del block
    if record["peak_rss_scope"] != "phase":
        pytest.skip("no per-phase reset on this platform")
    assert record["peak_rss_mib"] - baseline >= 120


def test_run_phase_records_results_and_errors_without_raising(capsys):
    def status_mib(field: str) -> float:
        """VmRSS / VmHWM of this process from /proc/self/status, in MiB (read independently of timing.py)."""
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(field)

    held = {}

    def phase():
        held["rss"] = status_mib("VmRSS")
        time.sleep(0.3)
        return {"median_ms": 1.5, "extra": 3}

    results: dict = {}
    good = bench_timing.run_phase(results, "ok", phase)
    assert results["ok"] is good
    assert good["median_ms"] == 1.5 and good["extra"] == 3
    # The peak is at least what the phase held and at most the process's high-water mark, in MiB.
    assert held["rss"] - 1 <= good["peak_rss_mib"] <= status_mib("VmHWM") + 1, (held, good)
    assert 0.3 <= good["phase_s"] <= 3.0, good

    def broken():
        raise RuntimeError("out of cheese\nsecond line")

    bad = bench_timing.run_phase(results, "bad", broken)
    assert bad == {"error": "RuntimeError: out of cheese", "phase_s": bad["phase_s"]}
    assert set(results) == {"ok", "bad"}
    assert "bad failed: RuntimeError: out of cheese" in capsys.readouterr().out


def test_timing_module_imports_only_the_standard_library():
    """The peers' interpreter has neither numpy nor TensorFlow: timing.py may not import anything outside the
    standard library (checked on the source, whatever is installed here; the next test checks the packages)."""
    for path in (
        ROOT / "keras_retinanet" / "detectors" / "timing.py",
        ROOT / "tools" / "benchmarking" / "timing.py",
    ):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top == "__future__" or top in sys.stdlib_module_names, f"{path.name} imports {name}"


def test_importing_timing_loads_no_numpy_tensorflow_or_keras():
    """What the peers' script does first: also needs keras_retinanet/__init__.py to be lazy."""
    code = (
        "import sys, keras_retinanet.detectors.timing\n"
        "print(','.join(m for m in ('numpy', 'tensorflow', 'keras', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=120
    )
    assert out.stdout.strip() == "", f"importing the timing module loaded {out.stdout.strip()}"


# ----------------------------------------------------------------------------------------------------------
# machine

# Abridged /proc/cpuinfo of the two machine kinds of issue 16 (real field layout; the second processor block
# differs on purpose: only the first one may be read).
INTEL_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: INTEL(R) XEON(R) PLATINUM 8581C CPU @ 2.30GHz
stepping\t: 2
cpu MHz\t\t: 2300.000
siblings\t: 4
cpu cores\t: 2
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl \
avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: SOMETHING ELSE
flags\t\t: fpu
"""
AMD_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
cpu MHz\t\t: 2596.132
flags\t\t: fpu sse sse2 ssse3 fma avx f16c avx2 avx512f avx512dq avx512_bf16 avx512vbmi avx512_vnni
"""
INTEL_LSCPU = """\
Architecture:                            x86_64
Vendor ID:                               GenuineIntel
Model name:                              INTEL(R) XEON(R) PLATINUM 8581C CPU @ 2.30GHz
Thread(s) per core:                      2
CPU max MHz:                             4000.0000
Hypervisor vendor:                       KVM
"""


def test_cpuinfo_parser_reads_the_first_processor_only():
    info = machine.parse_cpuinfo(INTEL_CPUINFO)
    assert info["model name"] == "INTEL(R) XEON(R) PLATINUM 8581C CPU @ 2.30GHz"
    assert info["model"] == "207" and info["cpu family"] == "6"
    assert "amx_tile" in info["flags"].split()


def test_intel_amx_machine_facts():
    facts = machine.machine_info(cpuinfo_text=INTEL_CPUINFO, lscpu_text="")
    assert facts["cpu_model"] == "INTEL(R) XEON(R) PLATINUM 8581C CPU @ 2.30GHz"
    assert (facts["vendor"], facts["cpu_family"], facts["cpu_model_number"]) == ("GenuineIntel", 6, 207)
    assert facts["mhz"] == 2300.0
    assert all(facts["cpu_features"].values())  # every speed feature of the list, AMX included
    assert facts["simd"] == sorted(machine.SPEED_FEATURES)
    assert facts["bf16_hardware"] == "AMX"
    assert bench_machine.describe_features(facts).startswith(
        "has avx2, fma, avx512f, avx512_vnni, avx512_bf16, amx_tile, amx_bf16, amx_int8; lacks none;"
    )
    assert bench_machine.fp32_flops_per_cycle(facts)[0] == 64


def test_amd_zen4_machine_facts():
    facts = machine.machine_info(cpuinfo_text=AMD_CPUINFO, lscpu_text="")
    assert facts["cpu_features"] == {
        "avx2": True,
        "fma": True,
        "avx512f": True,
        "avx512_vnni": True,
        "avx512_bf16": True,
        "amx_tile": False,
        "amx_bf16": False,
        "amx_int8": False,
    }
    assert facts["bf16_hardware"] == "AVX512-BF16"
    assert (
        "lacks amx_tile, amx_bf16, amx_int8; bfloat16 matmul: AVX512-BF16"
        in bench_machine.describe_features(facts)
    )
    assert bench_machine.describe_cpu(facts).startswith("AMD EPYC (AuthenticAMD family 25 model 17), ")
    assert "2.60 GHz" in bench_machine.describe_cpu(facts)
    assert bench_machine.fp32_flops_per_cycle(facts)[0] == 32


def test_lscpu_wins_for_clock_and_threads_and_model_name_gives_the_clock_last():
    facts = machine.machine_info(cpuinfo_text=INTEL_CPUINFO, lscpu_text=INTEL_LSCPU)
    assert facts["mhz"] == 4000.0 and facts["threads_per_core"] == 2 and facts["hypervisor"] == "KVM"
    no_clock = INTEL_CPUINFO.replace("cpu MHz\t\t: 2300.000\n", "")
    assert machine.machine_info(cpuinfo_text=no_clock, lscpu_text="")["mhz"] == 2300.0  # "@ 2.30GHz"
    old = machine.machine_info(cpuinfo_text="processor\t: 0\nflags\t\t: fpu sse2\n", lscpu_text="")
    assert not any(old["cpu_features"].values()) and old["bf16_hardware"] is None
    assert "bfloat16 matmul: none" in bench_machine.describe_features(old)
    assert bench_machine.fp32_flops_per_cycle(old)[0] == 16


def test_peak_flops_formula():
    facts = {
        "vendor": "GenuineIntel",
        "cpu_family": 6,
        "cpu_model_number": 85,
        "simd": ["avx2", "avx512f", "fma"],
        "logical_cpus": 4,
        "threads_per_core": 2,
        "mhz": 2000.0,
    }
    peak = bench_machine.peak_flops(facts, threads=4)
    assert peak["gflops"] == pytest.approx(2 * 2.0 * 64)  # 2 physical cores x 2 GHz x 64 FLOPs/cycle
    amd = dict(facts, vendor="AuthenticAMD", cpu_family=25, threads_per_core=1)
    assert bench_machine.peak_flops(amd, threads=2)["gflops"] == pytest.approx(2 * 2.0 * 32)
    assert bench_machine.peak_flops(facts, 4, override_gflops=123.0)["gflops"] == 123.0
    # A measured matmul faster than the nominal peak means the clock boosts: it becomes the peak.
    assert bench_machine.peak_flops(amd, 2, measured_gflops=200.0)["gflops"] == 200.0
    assert bench_machine.peak_flops(amd, 2, measured_gflops=100.0)["gflops"] == pytest.approx(128.0)


def test_matmul_rate_is_two_n_cubed_over_the_fastest_run(monkeypatch):
    monkeypatch.setattr(bench_machine, "time_runs", lambda fn, warmup, runs: {"min_ms": 2.0})
    # 2 * 256^3 FLOPs in 2 ms = 16.777 GFLOP/s.
    assert bench_machine.measure_matmul_gflops(size=256, runs=3) == 16.8


# ----------------------------------------------------------------------------------------------------------
# FLOPs


def test_single_conv_flops_match_hand_count():
    import keras
    import tensorflow as tf

    # 3x3 conv, stride 2, 'same': 32x32x3 -> 16x16x8. FLOPs = 2 * 16*16 * 8 * 3*3*3 = 110,592.
    expected = 2 * 16 * 16 * 8 * 3 * 3 * 3
    assert flops.conv2d_flops((16, 16), (3, 3), 3, 8) == expected
    layer = keras.layers.Conv2D(8, 3, strides=2, padding="same")
    function = tf.function(lambda x: layer(x), autograph=False)
    counted = flops.graph_flops(function.get_concrete_function(tf.TensorSpec((1, 32, 32, 3), tf.float32)))
    assert counted == {"flops": expected, "by_op": {"Conv2D": expected}, "uncounted_ops": 0}


def test_tiny_graph_flops_match_hand_counts():
    """Conv, depthwise conv, grouped 1x1 conv, matmuls, a nested function called twice, hand-counted."""
    import tensorflow as tf

    w_conv = tf.zeros((3, 3, 3, 8))  # 32x32x3 -> 16x16x8 (stride 2)
    w_depthwise = tf.zeros((3, 3, 8, 2))  # multiplier 2: 16x16x8 -> 16x16x16
    w_grouped = tf.zeros((1, 1, 4, 8))  # 4 groups of 4 input channels: 16x16x16 -> 16x16x8
    w_dense = tf.zeros((2048, 10))

    @tf.function(autograph=False)
    def inner(x):
        return tf.nn.conv2d(x, w_conv, strides=2, padding="SAME")

    @tf.function(autograph=False)
    def graph(x, a, b):
        y = inner(x) + inner(x)  # the nested function's body counts once per call
        y = tf.nn.depthwise_conv2d(y, w_depthwise, strides=[1, 1, 1, 1], padding="SAME")
        y = tf.nn.conv2d(y, w_grouped, strides=1, padding="VALID")
        logits = tf.matmul(tf.reshape(y, (1, 2048)), w_dense)
        return logits, tf.matmul(a, a, transpose_a=True), tf.matmul(b, tf.transpose(b, (0, 2, 1)))

    concrete = graph.get_concrete_function(
        tf.TensorSpec((1, 32, 32, 3)), tf.TensorSpec((5, 3)), tf.TensorSpec((2, 3, 5))
    )
    counted = flops.graph_flops(concrete)
    conv = 2 * 16 * 16 * 8 * (3 * 3 * 3)  # 110,592, twice
    depthwise = 2 * 16 * 16 * 16 * (3 * 3)  # 73,728: one 3x3 filter per output channel
    grouped = 2 * 16 * 16 * 8 * (1 * 1 * 4)  # 16,384: each output sees its group's 4 channels
    dense = 2 * 1 * 10 * 2048  # 40,960
    transposed = 2 * (3 * 3) * 5  # a^T a: (3, 3) outputs, each a dot product over 5
    batched = 2 * 2 * (3 * 3) * 5  # (2, 3, 3) outputs over 5
    assert counted["by_op"] == {
        "Conv2D": 2 * conv + grouped,
        "DepthwiseConv2dNative": depthwise,
        "MatMul": dense + transposed,
        "BatchMatMulV2": batched,
    }
    assert counted["flops"] == 2 * conv + grouped + depthwise + dense + transposed + batched
    assert counted["uncounted_ops"] == 0


def test_dynamic_shapes_are_reported_as_uncounted():
    import tensorflow as tf

    w = tf.zeros((3, 3, 3, 4))
    function = tf.function(lambda x: tf.nn.conv2d(x, w, 1, "SAME"), autograph=False)
    counted = flops.graph_flops(function.get_concrete_function(tf.TensorSpec((1, None, None, 3))))
    assert counted == {"flops": 0, "by_op": {}, "uncounted_ops": 1}


def test_utilisation_from_given_numbers():
    results = {"forward": {"median_ms": 500.0}, "train": {"median_ms": 1500.0}, "decode": {"median_ms": 1.0}}
    # 100 GFLOP in 0.5 s = 200 GFLOP/s of a 400 peak; training = 3 x 100 GFLOP in 1.5 s: also half.
    assert flops.utilisation(100 * 10**9, results, 400.0) == {"forward": 0.5, "train": 0.5}
    assert flops.utilisation(100 * 10**9, results, None) == {}


# ----------------------------------------------------------------------------------------------------------
# report


def _canned_report() -> dict:
    facts = machine.machine_info(cpuinfo_text=AMD_CPUINFO, lscpu_text="")
    ours = {
        "forward": {"median_ms": 500.0, "peak_rss_mib": 1000.0},
        "inference": {"median_ms": 520.0, "peak_rss_mib": 1100.0},
        "decode": {"median_ms": 8.0},
        "encode": {"median_ms": 6.0},
        "train": {"median_ms": 1000.0, "peak_rss_mib": 3000.0},
        "pipeline": {"images_per_s": {"decode": 900.0}, "batch_size": 8},
    }
    peer_reports = {
        "keras-hub": {
            "results": {
                "forward": {"median_ms": 600.0, "peak_rss_mib": 990.0},
                "decode": {"median_ms": 12.0},
                "train": {"median_ms": 1100.0},
            },
            "params": 33_890_000,
            "versions": {"keras-hub": "0.32.0"},
        },
        "torchvision": {"skipped": "torchvision not importable with /x/python: No module named 'torch'"},
    }
    return report.build_report(
        command="python tools/benchmark.py --compare",
        machine=facts,
        versions={"tensorflow": "2.21.0", "keras": "3.15.1"},
        config={
            "backbone": "resnet50",
            "num_classes": 80,
            "image_size": 512,
            "threads": 2,
            "runs": 7,
            "warmup": 2,
            "quick": False,
        },
        model={
            "params": 38_020_000,
            "forward_flops": 120 * 10**9,
            "forward_gflops": 120.0,
            "flops_method": "x",
        },
        peak={"gflops": 480.0, "formula": "measured", "assumption": "a"},
        results=ours,
        tflite={"skipped": "--skip-tflite"},
        peers=peer_reports,
        date="2026-11-30T12:00:00+00:00",
    )


def test_report_ratios_and_utilisation_from_given_numbers():
    full = _canned_report()
    assert full["ratios"] == {"keras-hub": {"forward": 1.2, "decode": 1.5, "train": 1.1}}
    # 120 GFLOP / 0.5 s / 480 GFLOP/s = 0.5; training 360 GFLOP / 1 s / 480 = 0.75.
    assert full["utilisation"] == {"forward": 0.5, "train": 0.75}
    json.dumps(full)  # the --json file


def test_markdown_names_the_cpu_its_features_and_the_ratios():
    text = report.markdown_report(_canned_report())
    lines = text.splitlines()
    assert lines[0] == "## R50-512 benchmark on AMD EPYC, 2026-11-30T12:00:00+00:00"
    assert "- Machine: AMD EPYC (AuthenticAMD family 25 model 17), " in text
    assert (
        "- CPU features: has avx2, fma, avx512f, avx512_vnni, avx512_bf16; lacks amx_tile, amx_bf16, amx_int8; "
        "bfloat16 matmul: AVX512-BF16" in lines
    )
    assert "| measurement | keras_retinanet | keras-hub | keras-hub / ours |" in lines
    assert "| forward, backbone + FPN + heads, batch 1 (ms/image) | 500.0 | 600.0 | 1.2 |" in lines
    assert "| full inference incl. decode + NMS, batch 1 (ms/image) | 520.0 | - | - |" in lines
    assert (
        "| training step, fwd + bwd + SGD, batch 2, 5 boxes/image (ms/image) | 1,000.0 | 1,100.0 | 1.1 |"
        in lines
    )
    assert "| peak RSS during forward (MiB) | 1,000 | 990 | - |" in lines
    assert "| parameters (M) | 38.02 | 33.89 | - |" in lines
    assert "| achieved fraction of peak, forward | 50.0% |" in lines
    assert "| achieved fraction of peak, training step | 75.0% |" in lines
    assert "| input pipeline decode, batch 8 (images/s) | 900.0 |" in lines
    assert (
        "- torchvision: skipped (torchvision not importable with /x/python: No module named 'torch')" in lines
    )
    assert "under XLA" not in text  # no one timed it: no row


# ----------------------------------------------------------------------------------------------------------
# peers


def test_peer_python_must_be_given_for_compare(monkeypatch, capsys):
    monkeypatch.delenv(peers.PEER_PYTHON_ENV, raising=False)
    with pytest.raises(peers.PeerPythonError, match="--peer-python PATH or set RETINANET_PEER_PYTHON"):
        peers.resolve_peer_python(None)
    with pytest.raises(SystemExit) as exit_info:
        benchmark_tool.parse_args(["--quick", "--compare"])
    assert exit_info.value.code == 2
    assert "RETINANET_PEER_PYTHON" in capsys.readouterr().err
    with pytest.raises(peers.PeerPythonError, match="--peer-python=/no/such/python: no such"):
        peers.resolve_peer_python("/no/such/python")
    monkeypatch.setenv(peers.PEER_PYTHON_ENV, sys.executable)
    assert benchmark_tool.parse_args(["--quick", "--compare"]).peer_python == sys.executable


def test_peer_python_from_the_environment_is_checked():
    with pytest.raises(peers.PeerPythonError, match="RETINANET_PEER_PYTHON=/nope: no such"):
        peers.resolve_peer_python(None, environ={peers.PEER_PYTHON_ENV: "/nope"})
    assert peers.resolve_peer_python(sys.executable, environ={}) == sys.executable


FAKE_PEER = """\
import json, os, sys
from keras_retinanet.detectors.timing import time_runs
import keras_retinanet.detectors.timing as timing
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
loaded = [m for m in ("numpy", "tensorflow", "keras") if m in sys.modules]
report = {"results": {"forward": time_runs(lambda: None, 0, 3)}, "argv": sys.argv[1:], "loaded": loaded,
          "timing_file": os.path.realpath(timing.__file__), "pythonpath": os.environ["PYTHONPATH"]}
with open(args["--json"], "w") as f:
    json.dump(report, f)
"""


def _base_python() -> str:
    """An interpreter without this project's environment (the venv's base Python), like the peers' one."""
    for name in ("python3", "python"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.exists():
            return str(candidate)
    pytest.skip("no base interpreter next to this venv")


def test_run_peer_passes_the_settings_and_reads_the_json(tmp_path):
    """The peers' interpreter sees this package (and nothing else of our environment) through PYTHONPATH."""
    script = tmp_path / "fake_peer.py"
    script.write_text(FAKE_PEER)
    inputs = tmp_path / "inputs.npz"
    result = peers.run_peer(
        "torchvision", _base_python(), script, inputs, threads=3, runs=4, warmup=1, num_classes=7, quick=True
    )
    assert "skipped" not in result, result
    assert len(result["results"]["forward"]["runs_ms"]) == 3
    argv = result["argv"]
    assert argv[:12] == [
        "--peer",
        "torchvision",
        "--inputs",
        str(inputs),
        "--threads",
        "3",
        "--runs",
        "4",
        "--warmup",
        "1",
        "--num-classes",
        "7",
    ]
    assert argv[12] == "--json" and argv[14:] == ["--quick"]
    assert result["loaded"] == []
    assert Path(result["timing_file"]) == ROOT.resolve() / "keras_retinanet" / "detectors" / "timing.py"
    assert os.pathsep not in result["pythonpath"]  # one entry: the package, not our whole environment


def test_run_peer_reports_a_failing_script(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text("raise SystemExit('peer exploded')\n")
    result = peers.run_peer(
        "keras-hub", sys.executable, script, tmp_path / "x.npz", threads=1, runs=1, warmup=0
    )
    assert result["skipped"].startswith("keras-hub exited 1: ") and "peer exploded" in result["skipped"]
    with pytest.raises(ValueError, match="unknown peer"):
        peers.run_peer("detectron2", sys.executable, script, tmp_path / "x.npz", threads=1, runs=1, warmup=0)


def test_real_peer_script_reports_a_missing_library(tmp_path):
    """tools/peer_benchmarks.py, run by this project's interpreter (no torch): torchvision is skipped."""
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed in the test environment")
    import numpy as np
    from benchmarking.project import benchmark_inputs

    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **benchmark_inputs(32, batch=2))
    result = peers.run_peer(
        "torchvision", sys.executable, TOOLS / "peer_benchmarks.py", inputs, threads=1, runs=1, warmup=0
    )
    assert "not importable" in result["skipped"] and "torch" in result["skipped"]


# ----------------------------------------------------------------------------------------------------------
# tools/benchmark.py end to end (tiny model)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One --quick run: tiny MobileNetV2 model at 64 px, float32 TFLite only, synthetic pipeline data."""
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "--quick",
        "--threads",
        "2",
        "--tflite-variants",
        "float32",
        "--json",
        str(out / "bench.json"),
        "--markdown",
        str(out / "bench.md"),
    ]
    assert benchmark_tool.main(argv) == 0
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def test_quick_run_times_every_phase_consistently(quick_report):
    full, markdown = quick_report
    runs = full["config"]["runs"]
    for phase in ("forward", "inference", "decode", "encode", "train"):
        record = full["results"][phase]
        assert "error" not in record, (phase, record)
        assert len(record["runs_ms"]) == runs
        assert record["median_ms"] == pytest.approx(statistics.median(record["runs_ms"]), abs=1e-3)
        assert record["min_ms"] == min(record["runs_ms"])
        assert record["peak_rss_scope"] in ("phase", "process so far")
    assert full["results"]["train"]["batch_size"] == 2
    assert all(map(lambda v: v == v, full["results"]["train"]["loss_first_last"]))  # not NaN
    forward = full["results"]["forward"]["median_ms"]
    assert f"| forward, backbone + FPN + heads, batch 1 (ms/image) | {forward:,.1f} |" in markdown


def test_quick_run_report_names_the_machine_and_model(quick_report):
    full, markdown = quick_report
    here = machine.machine_info()
    assert full["machine"]["cpu_model"] == here["cpu_model"]
    assert full["machine"]["cpu_features"] == here["cpu_features"]
    # Not the protocol's model: the heading names the one measured.
    assert markdown.startswith(f"## mobilenet_v2-64 benchmark on {here['cpu_model']}, ")
    assert f"- CPU features: {bench_machine.describe_features(full['machine'])}" in markdown
    assert full["command"] in markdown and "QUICK" in markdown
    # The quick model's forward graph is convolutions only: the count must be complete.
    assert full["model"]["flops_uncounted_ops"] == 0
    assert full["model"]["forward_flops"] == sum(full["model"]["flops_by_op"].values())
    assert full["peers"] == {} and full["ratios"] == {}


def test_quick_run_times_the_onnx_and_openvino_files(quick_report):
    """The export's ONNX and OpenVINO float32 / int8 files of the tiny model, each timed in its runtime."""
    full, markdown = quick_report
    for key in ("onnx", "openvino_float32", "openvino_int8"):
        record = full["runtimes"][key]
        assert "error" not in record, (key, record)
        assert len(record["runs_ms"]) == full["config"]["runs"] and record["images"] == 1
        assert record["convert"]["size_bytes"] > 0
    # int8 weights: the int8 file is smaller than the float32 one.
    assert (
        full["runtimes"]["openvino_int8"]["convert"]["size_bytes"]
        < full["runtimes"]["openvino_float32"]["convert"]["size_bytes"]
    )
    assert (
        f"| OpenVINO int8 (NNCF, the file) | {full['runtimes']['openvino_int8']['median_ms']:,.1f} |"
        in markdown
    )


def test_quick_run_tflite_and_pipeline(quick_report):
    full, _ = quick_report
    tflite = full["tflite"]["float32"]
    assert "error" not in tflite, tflite
    assert len(tflite["runs_ms"]) == full["config"]["runs"]
    assert tflite["size_bytes"] == tflite["convert"]["size_bytes"] > 0
    pipeline = full["results"]["pipeline"]
    assert set(pipeline["images_per_s"]) == {"decode", "full-no-xla (flip+jitter+encode)"}
    assert pipeline["batch_size"] == 4 and pipeline["spec"].startswith("coco:")


@pytest.mark.slow
def test_quick_compare_with_installed_peers(tmp_path):
    """With the peers' environment given ($RETINANET_PEER_PYTHON), --compare measures both and gives ratios."""
    if not os.environ.get(peers.PEER_PYTHON_ENV):
        pytest.skip(f"set {peers.PEER_PYTHON_ENV} to the peers' interpreter (docs/benchmark.md)")
    out = tmp_path / "bench.json"
    argv = ["--quick", "--compare", "--skip-tflite", "--skip-pipeline", "--json", str(out)]
    assert benchmark_tool.main(argv) == 0
    full = json.loads(out.read_text())
    for peer in peers.PEERS:
        assert "skipped" not in full["peers"][peer], full["peers"][peer]
        theirs = full["peers"][peer]["results"]["forward"]
        assert len(theirs["runs_ms"]) == full["config"]["runs"]
        ratio = theirs["median_ms"] / full["results"]["forward"]["median_ms"]
        assert full["ratios"][peer]["forward"] == pytest.approx(ratio, abs=1e-3)


def test_markdown_reports_the_precision_variants():
    full = _canned_report()
    full["results"].update(forward_unfolded={"median_ms": 560.0}, forward_bf16={"median_ms": 210.0})
    lines = report.markdown_report(full).splitlines()
    assert (
        "| precision variants: forward float32, inference graph (BatchNorm folded; the forward row above) "
        "(ms/image) | 500.0 |" in lines
    )
    assert "| forward float32, training graph (BatchNorm not folded) (ms/image) | 560.0 |" in lines
    assert "| forward bfloat16 (mixed_bfloat16, folded; AVX512-BF16) (ms/image) | 210.0 |" in lines
    full["results"]["forward_bf16"] = {"skipped": "CPU X has neither AMX nor AVX512-BF16"}
    assert (
        "| forward bfloat16 (mixed_bfloat16, folded; AVX512-BF16) (ms/image) | skipped: CPU X has neither AMX "
        "nor AVX512-BF16 |" in report.markdown_report(full).splitlines()
    )


def test_runtime_table_divides_the_tensorflow_forward_by_each_runtime():
    """Forward 500 ms and Keras inference 520 ms over ONNX Runtime 250 ms: 2.00 and 2.08; OpenVINO int8 at 100 ms:
    5.00 and 5.20; a skipped part says why; a runtime not timed has no row."""
    full = _canned_report()
    full["tflite"] = {"skipped": "--skip-tflite"}
    full["runtimes"] = {
        "onnx": {"median_ms": 250.0, "convert": {"size_bytes": 3 * 2**20}},
        "openvino_int8": {"median_ms": 100.0, "convert": {"size_bytes": 2**20}},
    }
    lines = report.markdown_report(full).splitlines()
    assert (
        "| ONNX Runtime float32 (the file: letterbox, network, decoding, NMS) | 250.0 | 3.0 | 2.00 | 2.08 |"
        in lines
    )
    assert "| OpenVINO int8 (NNCF, the file) | 100.0 | 1.0 | 5.00 | 5.20 |" in lines
    assert "| TFLite: skipped (--skip-tflite) | - | - | - | - |" in lines
    assert not any(line.startswith("| OpenVINO float32") for line in lines)
    assert (
        "| TensorFlow float32 forward (network only, BatchNorm folded) | 500.0 | - | 1.00 | 1.04 |" in lines
    )


def test_files_mode_times_each_file_through_each_runtime(detector_like, tmp_path, capsys):
    """`tools/benchmark.py --files`: a row per file and runtime with its size and time per image; the .tflite
    once per runtime asked for, with its bare invoke; a .keras file through the Keras detector."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in detector_like["images"][:2]:
        (photos / Path(path).name).write_bytes(Path(path).read_bytes())
    keras_file, tflite = Path(detector_like["keras"]), Path(detector_like["tflite"])
    out = tmp_path / "files.json"
    argv = [
        "--files",
        str(keras_file),
        str(tflite),
        "--images",
        str(photos),
        "--runtimes",
        "litert",
        "--runs",
        "5",
    ]
    assert benchmark_tool.main([*argv, "--warmup", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["file"], row["runtime"]) for row in rows] == [
        (keras_file.name, "keras"),
        (tflite.name, "litert"),
    ]
    assert [row["size_bytes"] for row in rows] == [keras_file.stat().st_size, tflite.stat().st_size]
    assert rows[0]["invoke_ms"] is None and rows[1]["invoke_ms"] > 0
    assert all(row["ms_per_image"] > 0 for row in rows)
    table = capsys.readouterr().out
    assert (
        f"| {tflite.name} | litert | {tflite.stat().st_size / 2**20:.1f} | {rows[1]['ms_per_image']:.1f} |"
        in table
    )
    with pytest.raises(SystemExit, match="--images FOLDER"):
        benchmark_tool.main(["--files", str(tflite), "--images", str(tmp_path / "none")])
