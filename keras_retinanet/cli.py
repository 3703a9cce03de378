"""The ``retinanet`` command: ``retinanet SUBCOMMAND ...``.

Each subcommand lives in ``keras_retinanet/commands/NAME.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. The slow parts (model building, data loading) happen inside ``run``; importing the
package itself imports Keras and TensorFlow, so even ``--help`` takes the few seconds of that import.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS = {
    "train": "train a RetinaNet on a dataset",
    "evaluate": "COCO metrics (pycocotools) of a .keras, SavedModel or .tflite model on a dataset",
    "predict": "detect objects in images, folders or videos and draw them",
    "export": "export a SavedModel (TF Serving) and builtin-op TFLite files (float32, float16, int8)",
    "data": "check a dataset (statistics, problems, anchor coverage) or show its ground truth and anchors",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retinanet",
        description="RetinaNet object detection for Keras 3. Datasets are named by a spec: voc:DIR[:SPLIT], "
        "coco:ANNOTATIONS.json[:IMAGE_DIR], csv:ANNOTATIONS.csv:CLASSES.csv, tfds:NAME[:SPLIT].",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"keras_retinanet.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"keras_retinanet.commands.{name}":
                raise
            continue
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
