"""``retinanet data check SPEC``, ``retinanet data show SPEC --out DIR`` and
``retinanet data convert SPEC --to coco|yolo|voc OUT``.

check: statistics, the bad records (skipped and listed; exit code 1 unless ``--no-strict``) and the anchor
coverage per class and size, before / after fitting. show: PNGs at network resolution with the ground truth
and the anchors the label encoder makes positive or ignored. convert: the dataset in another format, and the
spec that reads it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Any

from keras_retinanet.conventions import DEFAULT_IMAGE_SIZE


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="{check,show,convert}", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "spec",
        help="dataset: voc:DIR[:SPLIT], coco:ANNOTATIONS.json[:IMAGE_DIR], "
        "csv:ANNOTATIONS.csv:CLASSES.csv, yolo:DATA.yaml[:SPLIT] or tfds:NAME[:SPLIT]",
    )
    common.add_argument("--data-dir", default=None, help="TFDS data directory")
    common.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="read COCO images whose file_name leads outside the image folder (../x.jpg, absolute paths); "
        "otherwise each is a bad record",
    )
    common.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        help=f"network input size (the longer side), default {DEFAULT_IMAGE_SIZE}",
    )
    common.add_argument(
        "--image-shape",
        choices=("data", "square"),
        default="data",
        help="data: the other side from the images' median aspect ratio, as `retinanet train` does by "
        "default; square: NxN letterbox (train --recipe paper)",
    )
    common.add_argument("--anchor-sizes", type=_floats, default=None, help="comma-separated, one per level")
    common.add_argument(
        "--anchor-scales", type=_floats, default=None, help="comma-separated, e.g. 1,1.26,1.587"
    )
    common.add_argument(
        "--anchor-aspect-ratios",
        "--anchor-ratios",
        dest="anchor_ratios",
        type=_floats,
        default=None,
        help="comma-separated h/w, e.g. 0.5,1,2",
    )
    common.add_argument("--anchor-offset", type=float, default=None, help="anchor centre offset in strides")
    common.add_argument("--positive-threshold", type=float, default=0.5, help="matcher IoU for positives")
    common.add_argument(
        "--negative-threshold", type=float, default=0.4, help="matcher IoU below which negative"
    )

    check = sub.add_parser("check", parents=[common], help="statistics, problems and anchor coverage")
    check.add_argument("--no-optimize", dest="optimize", action="store_false", help="skip the anchor search")
    check.add_argument("--iterations", type=int, default=300, help="anchor search evaluations")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--json", default=None, help="also write the statistics to this JSON file")
    check.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="exit with 1 when bad records were found (default), so that the check can gate a pipeline; "
        "--no-strict: exit 0 whenever the data could be read",
    )

    show = sub.add_parser("show", parents=[common], help="draw ground truth and matched anchors to PNGs")
    show.add_argument("--out", required=True, help="output directory")
    show.add_argument("--num", type=int, default=8, help="number of images (default 8)")
    show.add_argument("--augment", action="store_true", help="apply the training augmentation first")
    show.add_argument("--seed", type=int, default=0)

    convert = sub.add_parser(
        "convert", help="write the dataset as COCO, YOLO or VOC (images copied); prints the spec to read it"
    )
    convert.add_argument("spec", help="source dataset spec (any file format: voc, coco, csv, yolo)")
    convert.add_argument("out", help="output folder (created; several splits may be written into one folder)")
    convert.add_argument("--to", required=True, choices=("coco", "yolo", "voc"), help="output format")
    convert.add_argument(
        "--split",
        default=None,
        help="split name written (default: the source's VOC / YOLO split, else 'train')",
    )
    convert.add_argument(
        "--skip-bad", action="store_true", help="leave bad records out (reported) instead of stopping"
    )
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files of the same names already in the output folder (by default a file with other "
        "content is an error; identical files are kept)",
    )


def _anchor_generator(args):
    from keras_retinanet.model.anchors import AnchorGenerator

    given = zip(
        ("sizes", "scales", "aspect_ratios", "offset"),
        (args.anchor_sizes, args.anchor_scales, args.anchor_ratios, args.anchor_offset),
    )
    return AnchorGenerator(**{key: value for key, value in given if value is not None})


def _load(args):
    from keras_retinanet.data import load_dataset

    return load_dataset(
        args.spec, skip_bad=True, data_dir=args.data_dir, allow_outside_paths=args.allow_outside_paths
    )


def run(args: argparse.Namespace) -> int:
    return {"check": check, "convert": convert, "show": show}[args.data_command](args)


def convert(args: argparse.Namespace) -> int:
    from keras_retinanet.data import load_dataset, parse_spec, writers

    source = parse_spec(args.spec)
    split = writers.check_split_name(
        args.split or (source.extra if source.format in ("voc", "yolo") and source.extra else "train")
    )
    dataset = load_dataset(source, skip_bad=args.skip_bad)
    boxes = sum(len(ex["boxes"]) for ex in dataset.examples)
    print(f"read {dataset.name}: {len(dataset)} images, {boxes} boxes, {dataset.num_classes} classes")
    if len(dataset.skipped):
        print(dataset.skipped.summary())
    if args.to == "coco":
        spec = writers.write_coco(dataset, args.out, split, overwrite=args.overwrite)
    elif args.to == "yolo":
        spec, left_out = writers.write_yolo(dataset, args.out, split, overwrite=args.overwrite)
        if left_out:
            print(f"left out {left_out} ignore box(es) (VOC difficult / COCO crowd): YOLO has no ignore flag")
    else:
        spec, report = writers.write_voc(
            dataset, args.out, split, skip_bad=args.skip_bad, overwrite=args.overwrite
        )
        if len(report):
            print(report.summary())
        empty = [name for name, count in dataset.boxes_per_class().items() if count == 0]
        if empty:
            print(f"classes without boxes, not kept (VOC has no class list): {', '.join(empty)}")
    print(f"wrote {args.to} to {args.out}; read it with: {spec}")
    return 0


def _fmt(value: float) -> str:
    return "   n/a" if value != value else f"{100 * value:5.1f}%"


def _coverage_table(title: str, before, after=None) -> list[str]:
    def row(name, count, value, suggested) -> str:
        return f"  {name:<22}{count:>7}  {value:>9}" + (f"  {suggested:>9}" if after else "")

    total = sum(before.counts_per_class.values())
    lines = [title, row("", "boxes", "coverage", "suggested")]
    lines.append(row("all", total, _fmt(before.overall), after and _fmt(after.overall)))
    for kind, values, counts in (
        ("class", "per_class", "counts_per_class"),
        ("size", "per_size", "counts_per_size"),
    ):
        for name, value in getattr(before, values).items():
            suggested = after and _fmt(getattr(after, values)[name])
            lines.append(row(f"{kind} {name}", getattr(before, counts)[name], _fmt(value), suggested))
    iou = f"{before.mean_best_iou:9.3f}"
    return [*lines, row("mean best IoU", "", iou, after and f"{after.mean_best_iou:9.3f}")]


def _network_size(args: argparse.Namespace, dataset) -> tuple[int, int]:
    """The (H, W) that `retinanet train --image-size N` trains at for this data (training.image_shape)."""
    from keras_retinanet.imaging import median_aspect_ratio, shape_for_aspect_ratio

    ratio = median_aspect_ratio(dataset.examples) if args.image_shape == "data" else None
    return shape_for_aspect_ratio(ratio, args.image_size) if ratio else (args.image_size, args.image_size)


def check(args: argparse.Namespace) -> int:
    dataset = _load(args)  # first: unreadable data fails before TensorFlow loads (seconds)
    size = _network_size(args, dataset)
    out, counts, negatives = _dataset_lines(dataset)
    box_lines, stats = _box_size_lines(dataset)
    out += box_lines
    out.append(f"problems: {len(dataset.skipped)} record(s) skipped")
    out.append("  " + dataset.skipped.summary().replace("\n", "\n  "))
    anchor_lines, before, after, suggestion = _anchor_lines(args, dataset, size)
    out += ["", *anchor_lines, "", *_starting_point_lines(args.spec, size)]
    finetuning = _finetuning_recipe(args.spec, dataset, size)
    out += [""] + finetuning["lines"]
    print("\n".join(out))

    if args.json:
        report = {
            "spec": dataset.name,
            "images": len(dataset),
            "class_names": dataset.class_names,
            "boxes_per_class": counts,
            "negatives": negatives,
            "problems": dataset.skipped.counts(),
            "clipped": dataset.skipped.clipped,
            "coverage": dataclasses.asdict(before),
            # retinanet train --anchors FILE reads "anchors" (keras_retinanet.training.anchors).
            "anchors": dataclasses.asdict(suggestion) if suggestion else None,
            "image_size": list(size),
            "suggested_coverage": dataclasses.asdict(after) if after else None,
            "finetuning": {key: finetuning[key] for key in ("coco_matches", "convert", "train")},
            **stats,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if len(dataset.skipped) and args.strict:
        print(
            f"retinanet data check: {len(dataset.skipped)} bad record(s) found (listed under 'problems'); "
            "exit code 1",
            file=sys.stderr,
        )
        return 1
    return 0


def _dataset_lines(dataset) -> tuple[list[str], dict[str, int], int]:
    """The dataset's counts as lines, with the boxes per class and the negatives for the JSON report."""
    import numpy as np

    out = [f"dataset {dataset.name}: {len(dataset)} images, {dataset.num_classes} classes"]
    negatives = sum(len(ex["boxes"]) == 0 for ex in dataset.examples)
    ignored = sum(int(ex["ignore"].sum()) for ex in dataset.examples)
    per_image = [len(ex["boxes"]) for ex in dataset.examples] or [0]
    out.append(f"  images without boxes (negatives): {negatives}; ignore boxes (difficult/crowd): {ignored}")
    out.append(f"  boxes per image: mean {np.mean(per_image):.1f}, max {max(per_image)}")
    out.append("boxes per class:")
    counts = dataset.boxes_per_class()
    for name, count in counts.items():
        note = "  <- no boxes" if count == 0 else ("  <- very few boxes" if count < 5 else "")
        out.append(f"  {name:<24}{count:>7}{note}")
    without = [name for name, count in dataset.boxes_per_class(include_ignored=False).items() if count == 0]
    if without:
        what = "no class has a box" if len(without) == len(counts) else f"no boxes for {', '.join(without)}"
        out.append(f"  {what}: retinanet train refuses this unless --allow-empty-classes")
    return out, counts, negatives


def _box_size_lines(dataset) -> tuple[list[str], dict]:
    """Percentiles of box sizes in original pixels, as lines and for the JSON report."""
    import numpy as np

    all_boxes = np.concatenate([ex["boxes"] for ex in dataset.examples] or [np.zeros((0, 4), np.float32)])
    if not len(all_boxes):
        return [], {}
    w, h = all_boxes[:, 2] - all_boxes[:, 0], all_boxes[:, 3] - all_boxes[:, 1]
    side = np.sqrt(w * h)
    pct = (0, 5, 25, 50, 75, 95, 100)
    out = [
        "box size distribution (original pixels), percentiles " + "/".join(map(str, pct)) + ":",
        "  sqrt(area): " + " ".join(f"{v:.0f}" for v in np.percentile(side, pct)),
        "  width:      " + " ".join(f"{v:.0f}" for v in np.percentile(w, pct)),
        "  height:     " + " ".join(f"{v:.0f}" for v in np.percentile(h, pct)),
        "  h/w ratio:  " + " ".join(f"{v:.2f}" for v in np.percentile(h / w, pct)),
    ]
    return out, {
        "sqrt_area_percentiles": dict(zip(map(str, pct), np.percentile(side, pct).tolist(), strict=True))
    }


def _anchor_lines(
    args: argparse.Namespace, dataset, size: tuple[int, int]
) -> tuple[list[str], Any, Any, Any]:
    """(lines, coverage now, coverage with the fitted suggestion or None, the suggestion or None)."""
    from keras_retinanet.data import anchor_stats as st
    from keras_retinanet.training.anchors import MIN_CLASS_COVERAGE, shapes_text

    generator = _anchor_generator(args)
    boxes, classes = st.network_boxes(dataset, size)

    threshold, names = args.positive_threshold, dataset.class_names

    def coverage(anchors):
        return st.coverage(st.best_anchor_iou(boxes, anchors, size), classes, boxes, names, threshold)

    before = coverage(generator)
    after, suggestion = None, None
    if args.optimize and len(boxes):
        found = st.optimize_anchors(
            boxes, classes, names, generator, size, threshold, args.iterations, args.seed
        )
        suggestion, after = found, coverage(found.generator(generator))
    out = _coverage_table(
        f"anchor coverage at {size[0]}x{size[1]} (share of boxes with best anchor IoU >= "
        f"{threshold}; sizes in network pixels: small < 32, medium < 96, large):",
        before,
        after,
    )
    out.append(
        f"  anchors: {shapes_text(generator.sizes, generator.scales, generator.aspect_ratios)}, "
        f"offset {generator.offset}"
    )
    if suggestion:
        better = after.objective() > before.objective()
        out.append(
            f"  suggested: {shapes_text(suggestion.sizes, suggestion.scales, suggestion.aspect_ratios)}"
            + ("" if better else "  (no improvement found; keep the current anchors)")
        )
        sizes = ",".join(f"{s:.4g}" for s in suggestion.sizes)
        scales = ",".join(f"{s:.3f}" for s in suggestion.scales)
        ratios = ",".join(f"{r:.3f}" for r in suggestion.aspect_ratios)
        out.append(
            f"  use: retinanet train --image-size {size[0]} {size[1]} --anchor-sizes {sizes} --anchor-scales "
            f"{scales} --anchor-aspect-ratios {ratios} --anchor-offset {generator.offset:g}"
        )
        if args.json:
            out.append(f"   or: retinanet train --image-size {size[0]} {size[1]} --anchors {args.json}")
    under_covered = [name for name, share in before.per_class.items() if share < MIN_CLASS_COVERAGE]
    if under_covered:
        # Fitted anchors alone did not teach BCCD's platelets; ATSS and GroupNorm did (docs/small-objects.md).
        out.append(
            f"  {', '.join(under_covered)}: under {MIN_CLASS_COVERAGE:.0%} covered; the default recipe fits "
            "anchors and matches with ATSS for this; with --recipe paper, train with --anchors auto "
            "--matching atss --use-group-norm (ATSS's per-box thresholds give small boxes as many positives as "
            "large ones; GroupNorm in the heads trains them faster)"
        )
    return out, before, after, suggestion


def _starting_point_lines(spec: str, size: tuple[int, int]) -> list[str]:
    """Where ``retinanet train`` starts on this data: the backbone's ImageNet weights unless told otherwise."""
    import shlex

    from keras.src.backend.config import keras_home

    train = ["train", "--data", spec, "--image-size", str(size[0]), str(size[1]), "--output", "runs/mine"]
    return [
        "training starts from the backbone's ImageNet weights with its BatchNorm frozen and a warm-up of at least "
        "100 steps (the defaults for a pretrained backbone, --weights imagenet; Keras keeps them in "
        f"{os.path.join(keras_home(), 'models')} after the first download):",
        "  retinanet " + shlex.join(train),
        "  --weights none trains from scratch (docs/recipes.md compares the two); --weights PATH loads a local "
        "file",
    ]


# torchvision's COCO v1 checkpoint (the user downloads it) and the fine-tuning recipe of docs/pretrained.md.
COCO_CHECKPOINT_URL = "https://download.pytorch.org/models/retinanet_resnet50_fpn_coco-eeacb38b.pth"
COCO_CHECKPOINT = COCO_CHECKPOINT_URL.rsplit("/", 1)[1]
FINETUNE_LEARNING_RATE, FINETUNE_EPOCHS, FINETUNE_BATCH_SIZE, FINETUNE_MAX_WARMUP = 0.001, 12, 8, 500


def _finetuning_recipe(spec: str, dataset, size: tuple[int, int]) -> dict:
    """How to fine-tune from torchvision's COCO RetinaNet on this data: ``{"lines", "coco_matches": {class: COCO
    class}, "convert": argv, "train": argv}``, the argv lists without the leading ``retinanet``."""
    import math
    import shlex

    from keras_retinanet.convert.torchvision import COCO_CLASS_NAMES
    from keras_retinanet.training.finetune import match_class_names

    matches = match_class_names(COCO_CLASS_NAMES, dataset.class_names)
    coco_matches = {dataset.class_names[j]: COCO_CLASS_NAMES[i] for j, i in sorted(matches.items())}
    # One epoch of warm-up on a small set: the default 500 steps can outlast a 12-epoch fine-tuning.
    warmup = max(1, min(FINETUNE_MAX_WARMUP, math.ceil(len(dataset) / FINETUNE_BATCH_SIZE)))
    convert = ["convert", "torchvision", COCO_CHECKPOINT, "--output", "coco_r50.keras"]
    train = [
        "train", "--init", "coco_r50.keras", "--data", spec, "--image-size", str(size[0]), str(size[1]),
        "--learning-rate", f"{FINETUNE_LEARNING_RATE:g}", "--epochs", str(FINETUNE_EPOCHS),
        "--batch-size", str(FINETUNE_BATCH_SIZE), "--warmup-steps", str(warmup), "--output", "runs/finetune",
    ]  # fmt: skip
    known = ", ".join(f"{new} <- {old}" if new != old else new for new, old in coco_matches.items())
    lines = [
        f"fine-tuning from a COCO model (docs/pretrained.md), with {COCO_CHECKPOINT_URL} downloaded:",
        "  retinanet " + shlex.join(convert),
        "  retinanet " + shlex.join(train),
        f"  classes COCO knows, starting from its weights: {len(coco_matches)}"
        + (f" ({known})" if known else ""),
        f"  starting from the prior: {len(dataset.class_names) - len(coco_matches)}; anchors and architecture are "
        "the COCO model's (anchor suggestions do not apply)",
    ]
    return {"lines": lines, "coco_matches": coco_matches, "convert": convert, "train": train}


def _text(canvas, text: str, origin: tuple[int, int], colour) -> None:
    import cv2

    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)


# BGR colours for OpenCV.
GT_COLOUR, IGNORE_GT_COLOUR = (0, 200, 0), (160, 160, 160)
POSITIVE_COLOUR, IGNORED_COLOUR = (255, 128, 0), (0, 140, 255)


def show(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from keras_retinanet.data import augment as aug
    from keras_retinanet.data.pipeline import _decoded, train_transform
    from keras_retinanet.model.matching import Matcher
    from keras_retinanet.model.targets import LabelEncoder

    dataset = _load(args)
    if len(dataset.skipped):
        print(dataset.skipped.summary())
    size = _network_size(args, dataset)
    generator = _anchor_generator(args)
    encoder = LabelEncoder(generator, matcher=Matcher(args.positive_threshold, args.negative_threshold))
    anchors = np.asarray(generator(image_shape=size))
    os.makedirs(args.out, exist_ok=True)
    max_boxes = max(dataset.max_boxes, 1)
    seeds = np.random.default_rng(args.seed).integers(0, 2**31, size=(args.num, 2))
    written = 0
    for index, example in enumerate(_decoded(dataset, 1).take(args.num)):
        image, boxes, classes = train_transform(example, seeds[index], size, max_boxes, augment=args.augment)
        cls = np.asarray(encoder.encode(size, boxes, classes)["classification"])
        canvas = cv2.cvtColor(np.asarray(image).astype(np.uint8), cv2.COLOR_RGB2BGR)
        # Hundreds of anchors per image: positives as faint outlines, ignored ones as centre dots.
        overlay = canvas.copy()
        for x1, y1, x2, y2 in anchors[cls >= 0].round().astype(int):
            cv2.rectangle(overlay, (x1, y1), (x2, y2), POSITIVE_COLOUR, 1)
        canvas = cv2.addWeighted(overlay, 0.45, canvas, 0.55, 0)
        for x1, y1, x2, y2 in anchors[cls == aug.IGNORE_CLASS]:
            cv2.circle(canvas, (int((x1 + x2) / 2), int((y1 + y2) / 2)), 1, IGNORED_COLOUR, -1)
        for x1, y1, x2, y2 in anchors[cls >= 0]:
            cv2.circle(canvas, (int((x1 + x2) / 2), int((y1 + y2) / 2)), 2, POSITIVE_COLOUR, -1)
        for box, c in zip(np.asarray(boxes), np.asarray(classes), strict=True):
            if c == aug.PADDING_CLASS:
                continue
            x1, y1, x2, y2 = box.round().astype(int)
            colour = IGNORE_GT_COLOUR if c == aug.IGNORE_CLASS else GT_COLOUR
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
            label = "ignore" if c == aug.IGNORE_CLASS else dataset.class_names[int(c)]
            _text(canvas, label, (x1 + 2, max(y1 - 3, 10)), colour)
        legend = {
            "ground truth": GT_COLOUR,
            "positive anchor": POSITIVE_COLOUR,
            "ignored anchor": IGNORED_COLOUR,
        }
        for k, (text, colour) in enumerate(legend.items()):
            _text(canvas, text, (5, size[0] - 8 - 14 * k), colour)
        name = os.path.splitext(os.path.basename(dataset.examples[index]["image_path"]))[0]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        path = os.path.join(args.out, f"{index:04d}_{name[:60]}.png")
        if not cv2.imwrite(path, canvas):
            raise ValueError(f"cannot write {path} (OpenCV could not write the PNG there)")
        written += 1
        positives, ignored = int((cls >= 0).sum()), int((cls == aug.IGNORE_CLASS).sum())
        print(
            f"{path}: {int((np.asarray(classes) >= 0).sum())} boxes, {positives} positive, "
            f"{ignored} ignored anchors"
        )
    print(f"wrote {written} image(s) to {args.out}")
    return 0
