"""Compares ``retinanet convert model-garden`` with real TF Model Garden, on what Model Garden itself wrote.

The side-environment half of issue 35's check: ``tools/model_garden_reference.py`` (run in an environment with
``tf-models-official``, see its docstring) builds Model Maker's model, writes its checkpoint and saves Model
Garden's raw outputs on real photos; this script (run in the project's environment) converts that checkpoint
and compares our model's raw per-level class logits and box deltas with Model Garden's, one number at a time.

    python tools/model_garden_parity.py /work/notes/mg_ref/mobilenet_v2 [--tolerance 1e-4]

Prints the largest difference per level and output, and exits 1 when one is above the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from keras_retinanet._quiet import parse_args_quietly

IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def pixels_and_normalization(folder: Path, reference) -> tuple[np.ndarray, str]:
    """The [0, 255] pixels behind the normalised input Model Garden was fed, and our matching normalisation."""
    summary = json.loads((folder / "summary.json").read_text())
    fed = reference["input"].astype("float64")
    if summary["preprocess"] == "modelmaker":  # x / 127.5 - 1
        return ((fed + 1.0) * 127.5).astype("float32"), "tf"
    return ((fed * IMAGENET_STD + IMAGENET_MEAN) * 255.0).astype("float32"), "torch"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "folder", type=Path, help="a folder tools/model_garden_reference.py wrote for one --spec"
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest absolute difference allowed")
    args = parse_args_quietly(parser, argv)

    from keras_retinanet.convert.model_garden import (
        BOX_ORDER,
        anchor_permutation,
        convert_model_garden_retinanet,
    )

    reference = np.load(args.folder / "reference.npz")
    pixels, normalization = pixels_and_normalization(args.folder, reference)
    spec = json.loads((args.folder / "summary.json").read_text())["spec"]
    model, report = convert_model_garden_retinanet(
        args.folder / "ckpt-277200", spec=spec, keep_unused_slots=True, input_normalization=normalization
    )
    outputs = model(pixels, training=False)
    ours = {"cls": np.asarray(outputs["classification"]), "box": np.asarray(outputs["box_regression"])}
    perm = anchor_permutation(model.anchor_generator)
    worst, start = 0.0, 0
    print(
        f"{spec}: {report['variables']} variables, {len(pixels)} images, input normalisation {normalization}"
    )
    for level in model.anchor_generator.levels:
        theirs_cls, theirs_box = reference[f"cls_outputs_{level}"], reference[f"box_outputs_{level}"]
        batch, height, width, _ = theirs_cls.shape
        rows = height * width * 9
        expected = {
            "cls": theirs_cls.reshape(batch, height * width, 9, -1)[:, :, perm].reshape(batch, rows, -1),
            "box": theirs_box.reshape(batch, height * width, 9, 4)[:, :, perm][..., list(BOX_ORDER)].reshape(
                batch, rows, 4
            ),
        }
        line = []
        for kind in ("cls", "box"):
            difference = float(np.abs(ours[kind][:, start : start + rows] - expected[kind]).max())
            worst = max(worst, difference)
            line.append(f"{kind} {difference:.2e} (largest value {float(np.abs(expected[kind]).max()):.2f})")
        print(f"  P{level}: " + ", ".join(line))
        start += rows
    print(
        f"largest difference {worst:.2e} ({'within' if worst <= args.tolerance else 'ABOVE'} {args.tolerance:g})"
    )
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
