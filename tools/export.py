"""Export a trained RetinaNet: ``python tools/export.py MODEL.keras --output saved_models/NAME``.

Same options as ``retinanet export`` (see ``keras_retinanet/commands/export.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keras_retinanet.commands.export import add_arguments, run  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/export.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
