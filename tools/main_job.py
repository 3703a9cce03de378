"""The main job, end to end: dataset -> train -> evaluate -> export -> evaluate int8 TFLite -> predict.

The synthetic photos are 480x640, a phone camera's VGA frame, and the model's input is 192x256 (their shape
with the longer side ``--image-size``). MediaPipe Tasks reports whole-pixel boxes in the photo's
coordinates, so on photos as small as the model's input those pixels alone cost AP (docs/export.md).

    python tools/main_job.py                       # synthetic shapes made in-process (no network, no files)
    python tools/main_job.py --data voc:BCCD:trainval --val-data voc:BCCD:test --image-size 384
    python tools/main_job.py --tiny                # a minute-scale run, used by the tests

Writes ``--output`` (default runs/main_job): ``train/`` (the training run folder with model.keras),
``export/`` (SavedModel, three .tflite files, export_report.json), ``predictions/`` (annotated images and
detections.json), ``gallery.png`` (predictions next to the ground truth), ``metrics.json`` and prints a
summary table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_retinanet._quiet import parse_args_quietly
from keras_retinanet.conventions import DISPLAY_SCORE_THRESHOLD


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/main_job")
    parser.add_argument("--data", help="training data spec (default: a synthetic set made in OUTPUT/data)")
    parser.add_argument("--val-data", help="validation spec (default: the synthetic validation split)")
    parser.add_argument("--image-size", type=int, default=256, help="the model input's longer side")
    parser.add_argument(
        "--photo-size",
        type=int,
        nargs=2,
        default=(480, 640),
        metavar=("H", "W"),
        help="the synthetic photos' height and width (default 480 640, a phone camera's VGA frame)",
    )
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=480, help="synthetic training images")
    parser.add_argument(
        "--val-images",
        type=int,
        default=480,
        help="synthetic validation images (480: on 96, moving the resize by a third of a pixel moved AP by a point)",
    )
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tiny", action="store_true", help="a very small, fast configuration (tests, smoke runs)"
    )
    parser.add_argument("--skip-bad", action="store_true", help="skip (and report) bad records of --data")
    parser.add_argument(
        "--recipe",
        choices=("default", "paper"),
        default="default",
        help="retinanet train --recipe: default (fitted anchors, ATSS, GroupNorm heads, the data's input shape, "
        "warm-up a tenth of the run) or paper",
    )
    return parse_args_quietly(parser, argv)


def _gallery(examples, detections, class_names, path: Path, columns: int = 3) -> None:
    """Ground truth (left) next to predictions (right) for each example, in a grid, as one PNG."""
    import cv2

    from keras_retinanet.imaging import read_image
    from keras_retinanet.visualize import draw_detections

    tiles = []
    for example, detection in zip(examples, detections):
        image = read_image(example["image_path"])
        truth = draw_detections(image, example["boxes"], None, example["classes"], class_names)
        predicted = draw_detections(image, detection.boxes, detection.scores, detection.classes, class_names)
        tiles.append(
            np.concatenate([truth, np.full((image.shape[0], 8, 3), 255, np.uint8), predicted], axis=1)
        )
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    tiles = [
        cv2.copyMakeBorder(
            t,
            4,
            4 + height - t.shape[0],
            4,
            4 + width - t.shape[1],
            cv2.BORDER_CONSTANT,
            value=(255, 255, 255),
        )
        for t in tiles
    ]
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import dataclasses

    from keras_retinanet import data
    from keras_retinanet.data.synthetic import make_synthetic_coco
    from keras_retinanet.detectors import load_detector, predict
    from keras_retinanet.evaluation import evaluate_model, format_metrics
    from keras_retinanet.export import export_model
    from keras_retinanet.training import TrainConfig, train

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    if args.tiny:
        args.train_images, args.val_images, args.epochs, args.image_size = 48, 16, 3, 128
        args.photo_size = (96, 128)
    if args.data:
        train_spec, val_spec = args.data, args.val_data or args.data
    else:
        # The smallest object is 16 pixels at the model's input, whatever the photo's size.
        min_size = round(16 * max(args.photo_size) / args.image_size)
        train_spec, val_spec = (
            make_synthetic_coco(
                output / "data" / split, count, tuple(args.photo_size), min_size=min_size, seed=args.seed + i
            )
            for i, (split, count) in enumerate((("train", args.train_images), ("val", args.val_images)))
        )
    timings["dataset_s"] = time.perf_counter() - start

    train_data = data.load_dataset(train_spec, skip_bad=args.skip_bad)
    steps_per_epoch = -(-len(train_data) // args.batch_size)
    config = TrainConfig.from_recipe(
        args.recipe,
        data=train_spec,
        val_data=val_spec,
        output=str(output / "train"),
        skip_bad=args.skip_bad,
        model=dict(
            backbone=args.backbone,
            # Offline and deterministic: the job must run on a machine that never downloaded ImageNet weights.
            weights=None,
            backbone_kwargs={"alpha": 0.5} if args.backbone.startswith("mobilenet_v2") else {},
            # Not 32 for --tiny: GroupNorm(32) would have one-channel groups, which on a 128 px input's 1x1 P7
            # gave an int8 TFLite file that LiteRT aborted on.
            fpn_channels=64 if args.tiny else 96,
            head_depth=1 if args.tiny else 3,
            image_size=args.image_size,
        ),
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=steps_per_epoch,
        optimizer="adamw",
        learning_rate=0.002,
        weight_decay=1e-4,
        eval_every=max(args.epochs, 1),
        tensorboard=False,
        seed=args.seed,
        verbose=2,
    )
    t0 = time.perf_counter()
    summary = train(config)
    timings["train_s"] = time.perf_counter() - t0
    model_path = output / "train" / "model.keras"
    if summary["stopped_on_nan"]:  # train has said why, and what a rerun continues from, on stderr
        return 3

    val_data = data.load_dataset(val_spec, skip_bad=args.skip_bad, class_names=train_data.class_names)
    metrics = {"keras": summary["final_metrics"]}
    t0 = time.perf_counter()
    export_dir = output / "export"
    report = export_model(
        str(model_path),
        export_dir,
        calibration_data=train_spec,
        calibration_steps=min(200, len(train_data)),
        overwrite=True,
    )
    timings["export_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics["tflite_int8"] = evaluate_model(str(export_dir / "model_int8.tflite"), val_data, progress=False)
    timings["evaluate_int8_s"] = time.perf_counter() - t0
    if importlib.util.find_spec("mediapipe"):  # `make install` has it; a plain `pip install` may not
        with load_detector(str(export_dir / "model_int8.tflite"), runtime="mediapipe") as detector:
            metrics["mediapipe_int8"] = evaluate_model(detector, val_data, progress=False)

    held_out = val_data.examples[:6]
    detections = predict(
        str(model_path), [e["image_path"] for e in held_out], score_threshold=DISPLAY_SCORE_THRESHOLD
    )
    predictions = output / "predictions"
    predictions.mkdir(exist_ok=True)
    (predictions / "detections.json").write_text(
        json.dumps(
            [{"image": e["image_path"], **d.to_dict()} for e, d in zip(held_out, detections)], indent=1
        )
    )
    _gallery(held_out, detections, train_data.class_names, output / "gallery.png")
    timings["total_s"] = time.perf_counter() - start

    result = {
        "data": {
            "train": train_spec,
            "val": val_spec,
            "train_images": len(train_data),
            "val_images": len(val_data),
        },
        "config": dataclasses.asdict(config),
        "metrics": metrics,
        "export": {k: report[k] for k in report if k in ("files", "sizes", "parity")},
        "timings": timings,
    }
    (output / "metrics.json").write_text(json.dumps(result, indent=2, default=str))

    print("\n== keras model on the validation set ==")
    print(format_metrics(metrics["keras"]))
    names = {
        "keras": "keras (.keras)",
        "tflite_int8": "int8 LiteRT",
        "mediapipe_int8": "int8 MediaPipe Tasks",
    }
    rows = [(names[stage], stage_metrics) for stage, stage_metrics in metrics.items()]
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    print(f"\n| model | {' | '.join(keys)} |\n|---|{'---|' * len(keys)}")
    for name, m in rows:
        print(f"| {name} | " + " | ".join(f"{m[key]:.3f}" for key in keys) + " |")
    print("\n| step | seconds |\n|---|---|")
    for name, seconds in timings.items():
        print(f"| {name[:-2]} | {seconds:.0f} |")
    print(f"\nrun folder: {output} (metrics.json, gallery.png, export/, predictions/, train/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
