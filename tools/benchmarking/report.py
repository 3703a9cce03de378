"""The benchmark report: one JSON-ready dict per run, its peer ratios, and its Markdown tables.

The Markdown is what the README pastes: a heading with the CPU and the date, the machine, its CPU features,
software versions, protocol and command, then a table of timings side by side with the peers and their ratios
(peer time / our time: > 1 means keras_retinanet is faster), then this project's other figures.
"""

from __future__ import annotations

import datetime
from typing import Any

from benchmarking.flops import utilisation
from benchmarking.machine import describe_cpu, describe_features

# Phases whose time is compared with the peers: (our phase, peer phase, row label).
COMPARED = (
    ("forward", "forward", "forward, backbone + FPN + heads, batch 1 (ms/image)"),
    ("forward_xla", "forward_xla", "forward under XLA (jit_compile) (ms/image)"),
    ("inference", "inference", "full inference incl. decode + NMS, batch 1 (ms/image)"),
    ("decode", "decode", "decode + NMS alone (ms/image)"),
    ("train", "train", "training step, fwd + bwd + SGD, batch 2, 5 boxes/image (ms/image)"),
    ("train_xla", "train_xla", "training step under XLA (ms/image)"),
)
MEMORY_PHASES = ("forward", "inference", "train")
TFLITE_VARIANTS = ("float32", "float16", "int8")


def peer_ratios(results: dict[str, Any], peers: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{peer: {phase: peer median / our median}}`` (3 decimals) for every :data:`COMPARED` phase both timed."""
    ratios: dict[str, dict[str, float]] = {}
    for peer, report in peers.items():
        theirs = report.get("results", {})
        for ours_key, their_key, _ in COMPARED:
            a, b = results.get(ours_key, {}).get("median_ms"), theirs.get(their_key, {}).get("median_ms")
            if a and b:
                ratios.setdefault(peer, {})[ours_key] = round(b / a, 3)
    return ratios


def build_report(
    *,
    command: str,
    machine: dict[str, Any],
    versions: dict[str, str],
    config: dict[str, Any],
    model: dict[str, Any],
    peak: dict[str, Any],
    results: dict[str, Any],
    tflite: dict[str, Any],
    peers: dict[str, Any],
    runtimes: dict[str, Any] | None = None,
    date: str | None = None,
) -> dict[str, Any]:
    """The run's report (the ``--json`` file): the given parts plus ``utilisation`` and ``ratios``.

    Args:
        command: the command line that produced the run.
        machine: ``machine.machine_info()``.
        versions: library name -> version.
        config: the run's settings (``config["quick"]`` marks a smoke run).
        model: ``project.model_summary(...)`` (``params``, ``forward_flops``, ``forward_gflops``, ``flops_method``).
        peak: ``machine.peak_flops(...)``.
        results: phase -> record (``project.measure_model`` and the pipeline).
        tflite: ``project.measure_tflite(...)``, or ``{"skipped": why}``.
        peers: peer -> ``peers.run_peer(...)`` report.
        runtimes: ``runtimes.measure_graph_runtimes(...)`` (ONNX Runtime, OpenVINO), or ``{"skipped": why}``.
        date: ISO 8601; default now.
    """
    return {
        "date": date or datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "machine": machine,
        "versions": versions,
        "config": config,
        "model": model,
        "peak_flops": peak,
        "utilisation": utilisation(model["forward_flops"], results, peak.get("gflops")),
        "results": results,
        "tflite": tflite,
        "runtimes": runtimes or {"skipped": "not measured"},
        "peers": peers,
        "ratios": peer_ratios(results, peers),
    }


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


def _protocol_name(config: dict[str, Any]) -> str:
    """ "R50-512" for the protocol's model, else the measured backbone and size, e.g. "mobilenet_v2-256"."""
    measured = (config["backbone"], config["image_size"])
    return "R50-512" if measured == ("resnet50", 512) else "-".join(map(str, measured))


def _header(report: dict[str, Any], peers: dict[str, Any]) -> list[str]:
    m, cfg = report["machine"], report["config"]
    quick = " (QUICK: tiny settings, not the protocol)" if cfg.get("quick") else ""
    peer_versions = "".join(
        f"; {p}: " + ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items()) for p, r in peers.items()
    )
    return [
        f"## {_protocol_name(cfg)} benchmark on {m['cpu_model']}, {report['date']}",
        "",
        f"- Machine: {describe_cpu(m)}, {m['os']}, load average {m['load_average_1m']} at start",
        f"- CPU features: {describe_features(m)}",
        f"- Software: Python {m['python']}, TensorFlow {report['versions'].get('tensorflow', '-')}, "
        f"Keras {report['versions'].get('keras', '-')}{peer_versions}",
        f"- Protocol: {cfg['backbone']}-FPN RetinaNet (P6 from {cfg.get('p6_source', 'c5').upper()}), "
        f"{cfg['num_classes']} classes, random weights, {cfg['image_size']}x{cfg['image_size']}, float32, "
        f"{cfg['threads']} threads, median of {cfg['runs']} runs after {cfg['warmup']} warm-up{quick}",
        f"- Command: `{report['command']}`",
        "",
    ]


def _comparison_table(report: dict[str, Any], peers: dict[str, Any]) -> list[str]:
    res = report["results"]
    header = "| measurement | keras_retinanet |" + "".join(f" {p} |" for p in peers)
    header += "".join(f" {p} / ours |" for p in peers)
    lines = [header, "|---|---:|" + "---:|" * (2 * len(peers))]
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
    for phase in MEMORY_PHASES:
        row = f"| peak RSS during {phase} (MiB) | {_mem(res.get(phase))} |"
        row += "".join(f" {_mem(r['results'].get(phase))} |" for r in peers.values()) + " - |" * len(peers)
        lines.append(row)
    lines.append(
        f"| parameters (M) | {report['model']['params'] / 1e6:.2f} |"
        + "".join(f" {r.get('params', 0) / 1e6:.2f} |" for r in peers.values())
        + " - |" * len(peers)
    )
    return lines


def _other_figures(report: dict[str, Any]) -> list[str]:
    model, peak, res = report["model"], report["peak_flops"], report["results"]
    lines = ["| other figures (keras_retinanet) | value |", "|---|---:|"]
    lines.append(
        f"| forward FLOPs (G, {model['flops_method'].split(':')[0]} conv/matmul count) | "
        f"{model['forward_gflops']:,.1f} |"
    )
    lines.append(f"| machine FP32 peak (GFLOP/s): {peak['formula']} | {peak['gflops'] or '-'} |")
    if peak.get("measured_matmul_gflops"):
        lines.append(f"| measured FP32 matmul (GFLOP/s) | {peak['measured_matmul_gflops']} |")
    bf16 = res.get("forward_bf16")
    if "forward_unfolded" in res or bf16:
        lines.append(
            f"| precision variants: forward float32, inference graph (BatchNorm folded; the forward row above) "
            f"(ms/image) | {_ms(res.get('forward'))} |"
        )
    if "forward_unfolded" in res:
        lines.append(
            f"| forward float32, training graph (BatchNorm not folded) (ms/image) | {_ms(res['forward_unfolded'])} |"
        )
    if bf16:
        hardware = report["machine"].get("bf16_hardware") or "no bfloat16 hardware"
        value = f"skipped: {bf16['skipped']}" if "skipped" in bf16 else _ms(bf16)
        lines.append(f"| forward bfloat16 (mixed_bfloat16, folded; {hardware}) (ms/image) | {value} |")
    if res.get("train_bf16"):
        lines.append(
            f"| training step bfloat16 (mixed_bfloat16, as --mixed-precision on a CPU) (ms/image) | "
            f"{_ms(res['train_bf16'])} |"
        )
    for key, label in (
        ("forward", "forward"),
        ("forward_xla", "forward XLA"),
        ("train", "training step"),
        ("train_xla", "training step XLA"),
    ):
        fraction = report["utilisation"].get(key)
        if fraction is not None:
            lines.append(f"| achieved fraction of peak, {label} | {fraction:.1%} |")
    pipe = res.get("pipeline", {})
    for stage, rate in pipe.get("images_per_s", {}).items():
        lines.append(f"| input pipeline {stage}, batch {pipe['batch_size']} (images/s) | {rate:,.1f} |")
    if "skipped" in pipe or "error" in pipe:
        lines.append(f"| input pipeline | {pipe.get('skipped') or pipe.get('error')} |")
    return lines


def _runtime_table(report: dict[str, Any]) -> list[str]:
    """Every runtime the model deploys to, timed in this one run, against TensorFlow's float32 forward."""
    res, tflite, graphs = report["results"], report.get("tflite", {}), report.get("runtimes", {})
    threads = report["config"]["threads"]
    rows = [
        ("TensorFlow float32 forward (network only, BatchNorm folded)", res.get("forward")),
        ("TensorFlow bfloat16 forward (network only)", res.get("forward_bf16")),
        ("Keras float32 full inference (letterbox, network, decoding, NMS)", res.get("inference")),
    ]
    rows += [
        (f"TFLite {v} (LiteRT XNNPACK invoke: network, decoding, NMS)", tflite.get(v))
        for v in TFLITE_VARIANTS
    ]
    rows += [
        ("ONNX Runtime float32 (the file: letterbox, network, decoding, NMS)", graphs.get("onnx")),
        ("OpenVINO float32 (the file, INFERENCE_PRECISION_HINT=f32)", graphs.get("openvino_float32")),
        ("OpenVINO int8 (NNCF, the file)", graphs.get("openvino_int8")),
    ]
    forward, inference = (_median(res.get(key)) for key in ("forward", "inference"))
    lines = [
        f"| runtime, {threads} threads, batch 1 | ms/image | file MiB | TF forward / this | Keras inference / this |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, record in rows:
        if not record or "skipped" in record:
            continue
        size = record.get("size_bytes") or record.get("convert", {}).get("size_bytes")
        ms = _median(record)
        ratios = [f"{reference / ms:.2f}" if reference and ms else "-" for reference in (forward, inference)]
        mib = f"{size / 2**20:.1f}" if size else "-"
        lines.append(f"| {label} | {_ms(record)} | {mib} | {ratios[0]} | {ratios[1]} |")
    for name, part in (("TFLite", tflite), ("ONNX Runtime / OpenVINO", graphs)):
        if "skipped" in part:
            lines.append(f"| {name}: skipped ({part['skipped']}) | - | - | - | - |")
    return lines


def _median(record: dict[str, Any] | None) -> float | None:
    return record.get("median_ms") if record else None


def markdown_report(report: dict[str, Any]) -> str:
    """The Markdown of one run (a :func:`build_report` dict): header, comparison table, other figures, notes."""
    peers = {p: r for p, r in report.get("peers", {}).items() if "results" in r}
    lines = _header(report, peers) + _comparison_table(report, peers) + [""] + _runtime_table(report) + [""]
    lines += _other_figures(report) + [""]
    lines += [
        f"- {p}: skipped ({r['skipped']})" for p, r in report.get("peers", {}).items() if "skipped" in r
    ]
    lines.append(f"- FLOPs: {report['model']['flops_method']}.")
    lines.append(f"- Peak FLOP/s assumption: {report['peak_flops']['assumption']}.")
    lines.append(
        "- Ratios are peer time / keras_retinanet time from this one run (> 1: keras_retinanet is faster)."
    )
    return "\n".join(lines).rstrip() + "\n"
