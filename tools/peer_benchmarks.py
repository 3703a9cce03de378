"""The R50-512 measurements for a peer library, run in the peers' own environment by tools/benchmark.py.

tools/benchmark.py --compare runs this script with the peers' interpreter and ``PYTHONPATH`` pointing at this
project's ``keras_retinanet`` package (for :mod:`keras_retinanet.detectors.timing`, which needs only the standard
library). By hand, from the repository root::

    PYTHONPATH=. "$RETINANET_PEER_PYTHON" tools/peer_benchmarks.py --peer torchvision --inputs inputs.npz \\
        --threads 2 --json out.json

Peers (never dependencies of this project):

- ``keras-hub``: ``RetinaNetObjectDetector`` over ``RetinaNetBackbone(ResNetBackbone(ResNet50 layout), min_level 3,
  max_level 7, use_p5=False)``, 80 classes, xyxy boxes, random weights. ``forward``: ``detector(images)`` in a
  ``tf.function`` (raw outputs; ``forward_xla`` with ``jit_compile=True``); ``inference``:
  ``predict`` (forward, decode, NMS: the library default); ``decode``: ``decode_predictions`` alone;
  ``train``: one call of Keras' ``train_function`` (one step) after ``compile(SGD(0.01, momentum=0.9))`` with the
  default losses (anchor matching happens inside its step).
- ``torchvision``: ``retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80, min_size=512,
  max_size=512)``. ``forward``: ``head(backbone(normalised 512 x 512 tensor))`` under ``torch.inference_mode``;
  ``inference``: ``model([image])`` in eval mode (transform, forward, anchors, decode, NMS); ``train``: loss of
  ``model(images, targets)`` in train mode, backward, ``SGD(0.01, momentum=0.9)`` step (matching inside).

Inputs (images, xyxy pixel boxes, classes) come from ``--inputs`` (written by tools/benchmark.py), so every library
sees the same pixels. Timing and peak memory use the same helpers as tools/benchmark.py
(``keras_retinanet.detectors.timing``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    from benchmarking.timing import run_phase

    from keras_retinanet._quiet import parse_args_quietly
    from keras_retinanet.detectors.timing import time_runs
except ImportError as err:  # run by hand without PYTHONPATH: say how, not just "no module named"
    raise SystemExit(
        f"tools/peer_benchmarks.py needs keras_retinanet.detectors.timing on the path ({err}); run it through "
        "tools/benchmark.py --compare, or with PYTHONPATH set to the repository root"
    ) from None


def bench_keras_hub(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """keras-hub's RetinaNetObjectDetector (see the module docstring); the report dict."""
    import keras_hub  # first: an ImportError here means "keras-hub not installed", reported as skipped
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    results: dict[str, Any] = {}
    holder: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        # ResNet50 (v1, bottleneck blocks); --quick: a tiny basic-block ResNet.
        layout = (
            {"kernel": 3, "filters": [64] * 4, "blocks": [1] * 4, "block_type": "basic_block"}
            if args.quick
            else {
                "kernel": 7,
                "filters": [64, 128, 256, 512],
                "blocks": [3, 4, 6, 3],
                "block_type": "bottleneck_block",
            }
        )
        encoder = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[layout["kernel"]],
            stackwise_num_filters=layout["filters"],
            stackwise_num_blocks=layout["blocks"],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type=layout["block_type"],
            use_pre_activation=False,
        )
        backbone = keras_hub.models.RetinaNetBackbone(
            image_encoder=encoder, min_level=3, max_level=7, use_p5=False
        )
        holder["model"] = keras_hub.models.RetinaNetObjectDetector(
            backbone=backbone, num_classes=args.num_classes, bounding_box_format="xyxy"
        )
        return {}

    if "error" in run_phase(results, "build", build):
        raise RuntimeError(f"{args.peer}: building the model failed: {results['build']['error']}")
    model = holder["model"]
    images1 = tf.constant(data["images"][:1].astype(np.float32))
    images2 = tf.constant(data["images"].astype(np.float32))
    w, r = args.warmup, args.runs

    def call(x):
        return model(x, training=False)

    forward = tf.function(call, autograph=False)
    run_phase(results, "forward", lambda: time_runs(lambda: forward(images1), w, r))
    if args.xla:
        forward_xla = tf.function(call, autograph=False, jit_compile=True)
        run_phase(results, "forward_xla", lambda: time_runs(lambda: forward_xla(images1), w, r))
    # predict() is the library's inference path (predict_on_batch fails in keras-hub 0.32: its predict_step
    # unpacks a 2-tuple); it includes Keras' per-call data-adapter overhead.
    run_phase(results, "inference", lambda: time_runs(lambda: model.predict(images1, verbose=0), w, r))
    outputs = forward(images1)

    def decode_outputs(raw, x):
        return model.decode_predictions(raw, x)

    decode = tf.function(decode_outputs)
    run_phase(results, "decode", lambda: time_runs(lambda: decode(outputs, images1), w, r))
    targets = {"boxes": data["boxes"], "labels": data["classes"].astype(np.float32)}
    batches = tf.data.Dataset.from_tensors((images2, targets)).repeat()

    def train(jit: bool) -> dict[str, Any]:
        # One call of Keras' compiled train function = one step (train_on_batch rejects the dict targets).
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
        model.make_train_function(force=True)
        iterator = iter(batches)
        losses: list[float] = []
        timing = time_runs(lambda: losses.append(float(model.train_function(iterator)["loss"])), w, r, 2)
        return {**timing, "batch_size": 2, "loss_first_last": [losses[0], losses[-1]]}

    run_phase(results, "train", lambda: train(False))
    if args.xla:
        run_phase(results, "train_xla", lambda: train(True))
    return {
        "results": results,
        "params": int(model.count_params()),
        "versions": {
            "keras-hub": keras_hub.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    }


def bench_torchvision(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """torchvision's retinanet_resnet50_fpn (see the module docstring); the report dict."""
    import numpy as np
    import torch
    import torchvision
    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable before any parallel work
        torch.set_num_interop_threads(args.threads)
    results: dict[str, Any] = {}
    size = data["images"].shape[1]
    holder: dict[str, Any] = {}

    def build() -> dict[str, Any]:
        torch.manual_seed(0)
        holder["model"] = retinanet_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=args.num_classes, min_size=size, max_size=size
        )
        return {}

    if "error" in run_phase(results, "build", build):
        raise RuntimeError(f"{args.peer}: building the model failed: {results['build']['error']}")
    model = holder["model"]
    # NHWC uint8 -> NCHW float in [0, 1], the layout torchvision takes.
    images = torch.from_numpy(np.ascontiguousarray(data["images"].transpose(0, 3, 1, 2))).float() / 255.0
    w, r = args.warmup, args.runs
    model.eval()
    normalised = model.transform([images[0]])[0].tensors

    def forward() -> None:
        with torch.inference_mode():
            features = list(model.backbone(normalised).values())
            model.head(features)

    run_phase(results, "forward", lambda: time_runs(forward, w, r))

    def inference() -> None:
        with torch.inference_mode():
            model([images[0]])

    run_phase(results, "inference", lambda: time_runs(inference, w, r))

    targets = [
        {"boxes": torch.from_numpy(data["boxes"][i]), "labels": torch.from_numpy(data["classes"][i]).long()}
        for i in range(len(images))
    ]
    train_images = list(images)

    def train() -> dict[str, Any]:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        losses: list[float] = []

        def step() -> None:
            optimizer.zero_grad()
            loss = sum(model(train_images, targets).values())
            loss.backward()
            optimizer.step()
            losses.append(float(loss))

        timing = time_runs(step, w, r, per=2)
        return {**timing, "batch_size": 2, "loss_first_last": [losses[0], losses[-1]]}

    run_phase(results, "train", train)
    return {
        "results": results,
        "params": int(sum(p.numel() for p in model.parameters())),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measures one peer and writes its JSON report (``{"results", "params", "versions", "config"}``, or
    ``{"skipped": why}`` when the peer's library cannot be imported)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", required=True, choices=("keras-hub", "torchvision"))
    parser.add_argument("--inputs", required=True, help=".npz with images (B,H,W,3) uint8, boxes, classes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--xla", action="store_true", help="also time XLA variants (keras-hub)")
    parser.add_argument("--quick", action="store_true", help="tiny keras-hub encoder (smoke test)")
    parser.add_argument("--json", required=True)
    args = parse_args_quietly(parser, argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np

    with np.load(args.inputs) as npz:
        data = {k: npz[k] for k in npz.files}
    bench = bench_keras_hub if args.peer == "keras-hub" else bench_torchvision
    try:
        report = bench(args, data)
    except ImportError as err:  # the peer is not installed in this interpreter: say so, do not fail
        report = {"skipped": f"{args.peer} not importable with {sys.executable}: {err}", "results": {}}
        print(report["skipped"], file=sys.stderr)
    report["config"] = {k: v for k, v in vars(args).items() if k != "json"}
    Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({k: v.get("median_ms") for k, v in report["results"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
