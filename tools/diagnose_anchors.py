"""Where a class is lost: anchors matched per ground-truth box, and (with a model) the scores it gives them.

    python tools/diagnose_anchors.py --data voc:BCCD:trainval --image-size 384 [--anchors FILE] [--matching atss]
    python tools/diagnose_anchors.py --model runs/bccd_quick/model.keras --data voc:BCCD:test

Per class: boxes, boxes with a positive anchor, with only ignored anchors, with none; positive anchors per box
and the class's share of all positives (its weight in the loss). Without ``--model`` the anchors and matcher are
the training options given here (``retinanet train``'s names); with it, the model's own. With a model, also: the
median of each box's best score for its class over the anchors that overlap it (IoU >= 0.3), how many boxes have
such a score above the decoder's threshold, and how many the decoded detections find (IoU >= 0.5, same class).
Images are letterboxed to the network size as evaluation does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from keras_retinanet._quiet import parse_args_quietly
from keras_retinanet.conventions import DEFAULT_IMAGE_SIZE


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset spec, e.g. voc:DIR:test")
    parser.add_argument("--model", help="a trained .keras model (its anchors, matcher, decoder)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        help=f"without --model (default {DEFAULT_IMAGE_SIZE})",
    )
    parser.add_argument(
        "--anchors", default="given", help="without --model: given, auto or a JSON file (train's --anchors)"
    )
    parser.add_argument("--matching", choices=("iou", "atss"), default="iou", help="without --model")
    parser.add_argument(
        "--atss-topk", type=int, default=9, help="without --model: ATSS candidate locations per level"
    )
    parser.add_argument("--allow-low-quality-matches", action="store_true", help="without --model")
    return parse_args_quietly(parser, argv)


def _parts(args: argparse.Namespace, dataset):
    """(anchor generator, matcher, model or None, network size)."""
    if args.model:
        from keras_retinanet.detectors import load_retinanet

        model = load_retinanet(args.model)
        return model.anchor_generator, model.matcher, model, model.input_size
    from keras_retinanet.training import TrainConfig
    from keras_retinanet.training.anchors import resolve_anchors

    config = TrainConfig(anchors=args.anchors).update(
        {"image_size": args.image_size, "matching": args.matching, "atss_topk": args.atss_topk,
         "allow_low_quality_matches": args.allow_low_quality_matches}
    )  # fmt: skip
    model_config = resolve_anchors(config, dataset)[0].model
    size = (args.image_size, args.image_size)
    return model_config.build_anchor_generator(), model_config.build_matcher(), None, size


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    from keras_retinanet.boxes import pairwise_iou
    from keras_retinanet.data import load_dataset
    from keras_retinanet.imaging import letterbox, read_image
    from keras_retinanet.model.matching import IGNORED, POSITIVE
    from keras_retinanet.model.targets import LabelEncoder

    dataset = load_dataset(args.data, skip_bad=True)
    generator, matcher, model, size = _parts(args, dataset)
    encoder = LabelEncoder(generator, matcher=matcher)  # training's own matching
    rows = {
        name: {"positives": [], "ignored_only": 0, "scores": [], "found": 0} for name in dataset.class_names
    }
    for example in dataset.examples:
        keep = ~example["ignore"]
        if not keep.any():
            continue
        image = read_image(example["image_path"], example["orientation"])
        canvas, (scale_y, scale_x) = letterbox(image, size)
        boxes = (example["boxes"][keep] * np.array([scale_x, scale_y, scale_x, scale_y])).astype("float32")
        classes = example["classes"][keep]
        _, iou, matched, state = (
            np.asarray(a) for a in encoder.match(size, boxes, np.ones(len(boxes), bool))
        )
        if model is not None:
            logits = np.asarray(model(canvas[None].astype("float32"), training=False)["classification"][0])
            scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            found = model.detect(canvas[None])
            kept = np.asarray(found["scores"][0]) > 0
            found_boxes = np.asarray(found["boxes"][0])[kept]
            found_classes = np.asarray(found["classes"][0])[kept]
        for j, (box, cls) in enumerate(zip(boxes, classes, strict=True)):
            row = rows[dataset.class_names[cls]]
            positives = int(((state == POSITIVE) & (matched == j)).sum())
            row["positives"].append(positives)
            row["ignored_only"] += positives == 0 and bool(((state == IGNORED) & (matched == j)).any())
            if model is not None:
                near = iou[:, j] >= 0.3
                row["scores"].append(float(scores[near, cls].max()) if near.any() else 0.0)
                same = found_classes == cls
                row["found"] += bool(same.any()) and bool(
                    (np.asarray(pairwise_iou(box[None], found_boxes[same])) >= 0.5).any()
                )
    total = sum(sum(row["positives"]) for row in rows.values()) or 1
    shapes = [
        [round(v, 3) for v in values]
        for values in (generator.sizes, generator.scales, generator.aspect_ratios)
    ]
    print(f"{args.data} at {size[0]}x{size[1]}: anchor sizes {shapes[0]}, scales {shapes[1]}, ratios {shapes[2]}; "
          f"matcher {matcher.get_config()}")  # fmt: skip
    header = "| class | boxes | with a positive anchor | only ignored | none | positives per box | share of positives |"
    if model is not None:
        threshold = model.decoder.score_threshold
        header += f" best score, IoU >= 0.3 (median) | boxes scoring >= {threshold:g} | found (IoU >= 0.5) |"
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    for name, row in rows.items():
        counts = np.array(row["positives"])
        if not len(counts):
            continue
        with_positive = int((counts > 0).sum())
        line = (
            f"| {name} | {len(counts)} | {with_positive} ({100 * with_positive / len(counts):.1f}%) | "
            f"{row['ignored_only']} | {len(counts) - with_positive - row['ignored_only']} | {counts.mean():.1f} | "
            f"{100 * counts.sum() / total:.1f}% |"
        )
        if model is not None:
            scores = np.array(row["scores"])
            line += f" {np.median(scores):.3f} | {int((scores >= threshold).sum())} | {row['found']} |"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
