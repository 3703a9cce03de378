"""The ``retinanet`` command: ``retinanet [--verbose] [--debug] SUBCOMMAND ...``.

Each subcommand lives in ``keras_retinanet/cli/NAME.py`` with ``add_arguments(parser)`` and ``run(args) -> int``;
building the parser imports no TensorFlow, so ``--help`` answers at once. Every command's errors take one path
(:func:`run_command`): a known problem prints one line ``retinanet COMMAND: error: MESSAGE``, any other error
its traceback as a bug. Exit codes: :data:`EXIT_CODES` (70 is BSD's ``EX_SOFTWARE``, 130 is 128 + SIGINT).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from keras_retinanet._quiet import VERBOSE_HELP, quiet_tensorflow

SUBCOMMANDS = {
    "train": "train a RetinaNet on a dataset",
    "evaluate": "COCO metrics (pycocotools) of a .keras, SavedModel or .tflite model on a dataset",
    "predict": "detect objects in images, folders or videos and draw them",
    "export": "export a SavedModel (TF Serving) and builtin-op TFLite files (float32, float16, int8)",
    "data": "check a dataset (statistics, problems, anchor coverage) or show its ground truth and anchors",
    "convert": "torchvision RetinaNets (v1, v2) and TF Model Garden mobile RetinaNets (MediaPipe Model Maker's "
    "COCO starts) to .keras models; state dicts to torch-free .npz",
}

EXIT_OK, EXIT_FAILED_ITEMS, EXIT_BAD_INPUT, EXIT_NAN_STOP, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 70, 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED_ITEMS: "some items failed (predict inputs, data check problems); each reported on stderr",
    EXIT_BAD_INPUT: "bad input or usage (arguments, data, model file, config, unreadable or unwritable file)",
    EXIT_NAN_STOP: "train stopped because the loss became NaN or inf",
    EXIT_BUG: "unexpected error: a bug (traceback shown)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


def build_parser() -> argparse.ArgumentParser:
    """The full ``retinanet`` parser with every subcommand's flags; imports no TensorFlow or Keras."""
    from keras_retinanet import __version__

    parser = argparse.ArgumentParser(
        prog="retinanet",
        description="RetinaNet object detection for Keras 3. Datasets are named by a spec: voc:DIR[:SPLIT], "
        "coco:ANNOTATIONS.json[:IMAGE_DIR], csv:ANNOTATIONS.csv:CLASSES.csv, yolo:DATA.yaml[:SPLIT], "
        "tfds:NAME[:SPLIT].",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--verbose",
        dest="show_tensorflow_logs",
        action="store_true",
        help=f"{VERBOSE_HELP}; give it before the command: retinanet --verbose train ...",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of an error too (normally one line); also taken after the command: "
        "retinanet train ... --debug",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"keras_retinanet.cli.{name}")
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run)
    return parser


# OSErrors about a path or a resource the user controls (not a bug): one line, no traceback.
_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raised_in_package(error: BaseException) -> bool:
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep)


def _out_of_memory(error: BaseException) -> bool:
    # TensorFlow's OOM, matched by name: importing TensorFlow here to check would cost seconds.
    return isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError"


def is_known_error(error: BaseException) -> bool:
    """A problem with the user's input or environment, reported in one line: an error type of this package, a
    ``ValueError`` raised by its own code (one raised inside Keras or NumPy is a bug our checks missed), an
    ``OSError`` about a path or with an errno (disk full), or running out of memory."""
    if type(error).__module__.split(".")[0] == "keras_retinanet":
        return True
    if isinstance(error, _USER_OS_ERRORS) or (isinstance(error, OSError) and error.errno is not None):
        return True
    return (isinstance(error, ValueError) and _raised_in_package(error)) or _out_of_memory(error)


def error_message(error: BaseException) -> str:
    """The error's message on one line (no "[Errno N]" prefix)."""
    if _out_of_memory(error) and "No space left on device" in str(error):
        # TensorFlow reports a full disk while writing (a SavedModel, a checkpoint) as ResourceExhausted.
        first = str(error).strip().splitlines()[0]
        text = f"the disk is full ({first[:200]}); free space where the output is written, or write elsewhere"
    elif isinstance(error, OSError) and error.errno is not None and error.strerror:
        text = error.strerror + (f": {error.filename}" if error.filename is not None else "")
        text += f" -> {error.filename2}" if error.filename2 is not None else ""
    elif _out_of_memory(error):
        first = str(error).strip().splitlines()[0] if str(error).strip() else "MemoryError"
        text = f"out of memory ({first[:200]}); lower --batch-size or the image size"
    else:
        text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def command_name(args: argparse.Namespace) -> str:
    """``retinanet train``, ``retinanet data check``: the prefix of every error line."""
    words = ["retinanet", getattr(args, "command", None) or ""]
    sub = getattr(args, f"{args.command}_command", None) if getattr(args, "command", None) else None
    return " ".join(w for w in [*words, sub] if w)


def run_command(args: argparse.Namespace) -> int:
    """Runs ``args.run(args)``: the one error path of every command."""
    name = command_name(args)
    debug = getattr(args, "debug", False)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        sys.stdout.flush()
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the one place that turns every error into an exit code
        sys.stdout.flush()
        if is_known_error(error):
            if debug:
                traceback.print_exc()
            print(f"{name}: error: {error_message(error)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        traceback.print_exc()
        print(
            f"{name}: internal error ({type(error).__name__}): this is a bug, not a problem with your input; "
            "please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_BUG


def main(argv: Sequence[str] | None = None) -> int:
    """``retinanet [--verbose] [--debug] COMMAND ...``; returns the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # --debug is global, but also taken where it is usually typed: at the end (retinanet train ... --debug).
    if "--debug" in unknown:
        args.debug = True
        unknown = [item for item in unknown if item != "--debug"]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # argparse's own message, exit code 2
    if not args.show_tensorflow_logs:
        quiet_tensorflow()
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
