"""R50-512 speed benchmark: forward, inference, training step, every deployment runtime (TFLite, ONNX Runtime,
OpenVINO), input pipeline, memory, FLOPs.

Protocol (docs/benchmark.md): ResNet50-FPN RetinaNet, 80 classes, random weights, 512x512 RGB, float32, every
core (TF intra- and inter-op threads set to ``--threads``); every figure is the median of ``--runs`` (>= 5)
timed runs after ``--warmup`` untimed ones, on fixed random inputs. With ``--compare``, keras-hub's
``RetinaNetObjectDetector`` and torchvision's ``retinanet_resnet50_fpn`` are measured on the same inputs by
``tools/peer_benchmarks.py`` in their own environment (``--peer-python`` or ``$RETINANET_PEER_PYTHON``). The
report names the CPU and its speed-relevant features, so every table says which machine it is from.

The work is done by ``benchmarking`` (timing, machine, flops, project, pipeline, peers, report);
this script only parses flags and strings the parts together.

    python tools/benchmark.py --json runs/benchmark.json --markdown runs/benchmark.md [--compare] [--xla]
    python tools/benchmark.py --quick --skip-tflite        # tiny model, seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarking.peers import PEER_PYTHON_ENV, PEERS, PeerPythonError, resolve_peer_python
from benchmarking.pipeline import STAGES, bccd_spec
from benchmarking.project import PROTOCOL_CLASSES, PROTOCOL_MODEL

from keras_retinanet._quiet import parse_args_quietly
from keras_retinanet.conventions import DEFAULT_IMAGE_SIZE
from keras_retinanet.model.config import ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_SCRIPT = REPO_ROOT / "tools" / "peer_benchmarks.py"
# The model measured: the protocol's (the paper preset, 512 px) or --quick's, a smoke test's tiny one. The model
# flags (--image-size, --backbone, --fpn-channels, ...) are ModelConfig fields and change these.
QUICK_MODEL = PROTOCOL_MODEL.update(
    {
        "image_size": 64,
        "backbone": "mobilenet_v2",
        "backbone_kwargs": {"alpha": 0.35},
        "fpn_channels": 32,
        "head_depth": 1,
    }
)
MODEL_FLAGS = ("image_size", "backbone", "fpn_channels", "head_depth", "p6_source")
# Other flag defaults: (protocol, --quick).
DEFAULTS = {
    "runs": (7, 2),
    "warmup": (2, 1),
    "calibration_images": (8, 2),
    "pipeline_batch_size": (8, 4),
    "pipeline_epochs": (3, 1),
    "pipeline_stages": (",".join(STAGES), "decode,full-no-xla"),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The flags, with protocol or ``--quick`` defaults filled in and the peers' interpreter resolved."""
    parser = argparse.ArgumentParser(
        description="R50-512 speed benchmark (protocol: docs/benchmark.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="TF intra/inter-op threads (all)"
    )
    parser.add_argument("--inter-op-threads", type=int, default=None, help="default: --threads")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per figure (default 7; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2; quick 1)")
    protocol, quick = PROTOCOL_MODEL, QUICK_MODEL
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"default {protocol.image_size} (quick {quick.image_size})",
    )
    parser.add_argument("--num-classes", type=int, default=PROTOCOL_CLASSES)
    parser.add_argument(
        "--backbone",
        default=None,
        help=f"default {protocol.backbone} (quick {quick.backbone} x{quick.backbone_kwargs['alpha']})",
    )
    parser.add_argument("--backbone-alpha", type=float, default=None, help="width multiplier of MobileNets")
    parser.add_argument(
        "--fpn-channels",
        type=int,
        default=None,
        help=f"default {protocol.fpn_channels} (quick {quick.fpn_channels})",
    )
    parser.add_argument(
        "--head-depth",
        type=int,
        default=None,
        help=f"default {protocol.head_depth} (quick {quick.head_depth})",
    )
    parser.add_argument(
        "--p6-source",
        choices=("c5", "p5"),
        default=None,
        help="c5: the paper (default); p5: the layout of the keras-hub and torchvision models compared",
    )
    parser.add_argument(
        "--xla", action="store_true", help="also time forward and training step with jit_compile"
    )
    parser.add_argument(
        "--skip-bf16", action="store_true", help="no bfloat16 forward (timed only on bfloat16 hardware)"
    )
    parser.add_argument("--skip-tflite", action="store_true")
    parser.add_argument(
        "--skip-onnx", action="store_true", help="no ONNX Runtime and OpenVINO files (float32, int8)"
    )
    parser.add_argument("--tflite-variants", default="float32,float16,int8")
    parser.add_argument(
        "--calibration-images", type=int, default=None, help="int8 calibration (default 8; quick 2)"
    )
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument(
        "--pipeline-spec",
        default=None,
        help="dataset spec (default: BCCD trainval from ../shared/datasets if present, else a synthetic set)",
    )
    parser.add_argument("--pipeline-batch-size", type=int, default=None, help="default 8 (quick 4)")
    parser.add_argument("--pipeline-epochs", type=int, default=None, help="default 3 (quick 1)")
    parser.add_argument(
        "--pipeline-stages",
        default=None,
        help=f"default {','.join(STAGES)} (quick: decode,full-no-xla)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="also run keras-hub and torchvision (subprocesses)"
    )
    parser.add_argument("--peers", default=",".join(PEERS), help="peers for --compare")
    parser.add_argument(
        "--peer-python",
        default=None,
        help=f"the peers' interpreter for --compare (default ${PEER_PYTHON_ENV}; see docs/benchmark.md)",
    )
    parser.add_argument("--peer-timeout", type=float, default=3600.0, help="seconds per peer")
    parser.add_argument(
        "--peak-gflops", type=float, default=None, help="machine peak, overriding the estimate"
    )
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--markdown", default=None, help="write the Markdown tables here")
    parser.add_argument("--quick", action="store_true", help="tiny model, size and runs (CI smoke test)")
    parser.add_argument(
        "--files",
        nargs="+",
        metavar="FILE",
        help="instead of the protocol: time these model files (.keras, SavedModel, .tflite, .onnx, OpenVINO "
        ".xml) per image on --images; a .tflite also by its bare invoke and through each of --runtimes",
    )
    parser.add_argument("--images", help="with --files: a folder of photos (the first 10 are timed)")
    parser.add_argument(
        "--runtimes",
        default="litert,mediapipe",
        help="with --files: the runtimes that run a .tflite (litert,mediapipe)",
    )
    args = parse_args_quietly(parser, argv)
    for name, (full, small) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    args.model = model_config(args)
    # The report shows the model flags as measured.
    for name in MODEL_FLAGS:
        setattr(args, name, getattr(args.model, name))
    args.backbone_alpha = args.model.backbone_kwargs.get("alpha")
    if not args.quick and args.runs < 5:
        parser.error("the protocol needs --runs >= 5 (use --quick for a smoke test)")
    args.tflite_variants = [v for v in args.tflite_variants.split(",") if v]
    args.pipeline_stages = [s for s in args.pipeline_stages.split(",") if s]
    unknown_stages = set(args.pipeline_stages) - set(STAGES)
    if unknown_stages:
        parser.error(f"unknown pipeline stages {sorted(unknown_stages)}; choose from {', '.join(STAGES)}")
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {', '.join(PEERS)}")
    if args.compare:
        # Checked before any measurement: a missing interpreter should not surface after minutes of work.
        try:
            args.peer_python = resolve_peer_python(args.peer_python)
        except PeerPythonError as err:
            parser.error(str(err))
    return args


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The measured model: the protocol's or ``--quick``'s, with the model flags that were given applied."""
    model = QUICK_MODEL if args.quick else PROTOCOL_MODEL
    model = model.update(
        {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
    )
    if args.backbone_alpha is not None:
        model = model.update({"backbone_kwargs": {**model.backbone_kwargs, "alpha": args.backbone_alpha}})
    return model


def time_files(args: argparse.Namespace, command: str) -> int:
    """``--files``: a Markdown table of each file's latency on this machine; ``--json`` keeps the rows."""
    from benchmarking import machine as bench_machine

    from keras_retinanet.detectors import latency, machine
    from keras_retinanet.detectors.running import IMAGE_EXTENSIONS
    from keras_retinanet.imaging import read_image

    photos = sorted(p for p in Path(args.images or "").glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not args.images or not photos:
        raise SystemExit(
            f"tools/benchmark.py: --files needs --images FOLDER holding photos, got {args.images}"
        )
    images = [read_image(path) for path in photos[:10]]
    runtimes = [name.strip() for name in args.runtimes.split(",") if name.strip()]
    rows = latency.file_latencies(args.files, images, runtimes, warmup=args.warmup, runs=args.runs)
    cpu = bench_machine.describe_cpu(machine.machine_info())
    header = ["file", "runtime", "MiB", "ms/image", "invoke ms"]
    lines = [f"`{command}` on {cpu}, {len(images)} photos", "", "| " + " | ".join(header) + " |"]
    lines.append("|---" * len(header) + "|")
    for row in rows:
        invoke = "-" if row["invoke_ms"] is None else f"{row['invoke_ms']:.1f}"
        cells = [
            row["file"],
            row["runtime"],
            f"{row['size_bytes'] / 2**20:.1f}",
            f"{row['ms_per_image']:.1f}",
            invoke,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"command": command, "cpu": cpu, "rows": rows}, indent=2) + "\n"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; prints the Markdown report and writes ``--json`` / ``--markdown``."""
    args = parse_args(argv)
    command = "python tools/benchmark.py " + shlex.join(list(argv) if argv is not None else sys.argv[1:])
    if args.files:
        return time_files(args, command)
    from benchmarking import machine as bench_machine
    from benchmarking import peers, pipeline, project, report, runtimes

    from keras_retinanet.detectors import machine

    settings = project.ProjectSettings(
        model=args.model,
        num_classes=args.num_classes,
        threads=args.threads,
        inter_op_threads=args.inter_op_threads,
        warmup=args.warmup,
        runs=args.runs,
        xla=args.xla,
        bf16=False,
        tflite_variants=() if args.skip_tflite else tuple(args.tflite_variants),
        calibration_images=args.calibration_images,
    )
    project.configure_threads(args.threads, args.inter_op_threads)
    import keras
    import numpy as np
    import tensorflow as tf

    machine_facts = machine.machine_info()
    data = project.benchmark_inputs(settings.image_size)
    results: dict = {}
    bf16_supported, bf16_reason = machine.bf16_support(machine_facts)
    settings.bf16 = bf16_supported and not args.skip_bf16
    if not settings.bf16:
        results["forward_bf16"] = {"skipped": "--skip-bf16" if bf16_supported else bf16_reason}
    model = project.build_phase(settings, results)
    summary = project.model_summary(model, settings.image_size)
    project.measure_model(model, settings, data, results)
    tflite = {"skipped": "--skip-tflite"} if args.skip_tflite else project.measure_tflite(model, settings)
    graph_runtimes = (
        {"skipped": "--skip-onnx"}
        if args.skip_onnx
        else runtimes.measure_graph_runtimes(model, settings, data["images"][0])
    )
    if args.skip_pipeline:
        results["pipeline"] = {"skipped": "--skip-pipeline"}
    else:
        spec = args.pipeline_spec or (None if args.quick else bccd_spec(REPO_ROOT))
        pipeline.measure_pipeline(
            results,
            spec,
            settings.model,
            args.pipeline_batch_size,
            args.pipeline_epochs,
            args.pipeline_stages,
            synthetic_images=16 if args.quick else 64,
            synthetic_size=96 if args.quick else DEFAULT_IMAGE_SIZE,
        )

    peer_reports: dict = {}
    if args.compare:
        with tempfile.TemporaryDirectory(prefix="retinanet-bench-") as tmp:
            inputs_path = Path(tmp) / "inputs.npz"
            np.savez(inputs_path, **data)
            for peer in args.peers:
                peer_reports[peer] = peers.run_peer(
                    peer,
                    args.peer_python,
                    PEER_SCRIPT,
                    inputs_path,
                    threads=args.threads,
                    runs=args.runs,
                    warmup=args.warmup,
                    num_classes=args.num_classes,
                    quick=args.quick,
                    xla=args.xla,
                    timeout=args.peer_timeout,
                )
                if "skipped" in peer_reports[peer]:
                    print(f"[benchmark] peer {peer} skipped: {peer_reports[peer]['skipped']}", flush=True)

    measured = bench_machine.measure_matmul_gflops(256 if args.quick else 2048)
    full_report = report.build_report(
        command=command,
        machine=machine_facts,
        versions={"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
        config={
            **{k: v for k, v in vars(args).items() if k not in ("json", "markdown", "model")},
            "model": args.model.to_dict(),
        },
        model=summary,
        peak=bench_machine.peak_flops(machine_facts, args.threads, args.peak_gflops, measured),
        results=results,
        tflite=tflite,
        runtimes=graph_runtimes,
        peers=peer_reports,
    )
    text = report.markdown_report(full_report)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(full_report, indent=2, default=str) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
