"""A quiet start: TensorFlow's C++ start-up and converter lines (``I0000 ... cuInit``, oneDNN, ...) hidden unless
``--verbose``, by ``retinanet`` and by the tools in tools/ (:func:`parse_args_quietly`)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence

VERBOSE_HELP = "show TensorFlow's C++ start-up and log lines (oneDNN, CUDA, cpu_feature_guard, converter)"

# Lines TensorFlow's C++ libraries write while `import tensorflow` loads them, mostly from static initialisers
# that log before absl::InitializeLog, so TF_CPP_MIN_LOG_LEVEL cannot hide them.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|oneDNN custom operations are on"
    r"|cudart_stub\.cc|cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc|cpu_feature_guard\.cc"
    r"|To enable the following instructions:|rebuild TensorFlow with the appropriate compiler flags"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
)

# Python loggers whose INFO lines (TensorFlow's "Assets written to", tf2onnx's per-pass lines) are hidden too. NNCF
# sets its own level on import: export/onnx.py quiets it.
CONVERTER_LOGGERS = ("tensorflow", "tf2onnx")


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = STARTUP_NOISE) -> Iterator[list[str]]:
    """Captures the process's stderr (file descriptor 2, where C++ libraries write) for the block, then writes
    back every line that ``noise`` does not find; yields the list the other lines are added to."""
    dropped: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield dropped
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = []
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                (dropped if noise.search(line) else kept).append(line)
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietTensorFlowFinder:
    """A ``sys.meta_path`` finder that wraps the first ``import tensorflow`` (wherever it happens: Keras,
    the data pipeline, a command's ``run``) in :func:`filtered_stderr`, then removes itself."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            execute = spec.loader.exec_module

            def exec_module(module):
                with filtered_stderr():
                    execute(module)

            spec.loader.exec_module = exec_module  # the loader object is this spec's own
        return spec


def quiet_tensorflow() -> None:
    """Hides TensorFlow's C++ start-up and log lines for the rest of the process, if called before it is
    imported: ``TF_CPP_MIN_LOG_LEVEL=3`` (unless set), and the lines logged before that is read are filtered.
    The INFO lines of ``CONVERTER_LOGGERS`` are hidden too."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for converter in CONVERTER_LOGGERS:
        logging.getLogger(converter).setLevel(logging.WARNING)
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


def parse_args_quietly(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` plus ``--verbose``; without it, :func:`quiet_tensorflow` (before TF loads)."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    args = parser.parse_args(argv)
    if not args.verbose:
        quiet_tensorflow()
    return args
