"""Export a trained RetinaNet: ``python tools/export.py MODEL.keras --output saved_models/NAME``.

The same command as ``retinanet export`` (options: ``retinanet export --help``), for a checkout without the
``retinanet`` entry point on the PATH.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from keras_retinanet.cli.retinanet import main as retinanet

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = ["--verbose"] if "--verbose" in argv else []  # retinanet takes it before the command
    return retinanet([*verbose, "export", *(a for a in argv if a != "--verbose")])


if __name__ == "__main__":
    sys.exit(main())
