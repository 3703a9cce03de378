"""The ``retinanet`` command (``retinanet.py``), one module per subcommand; ``main`` and ``build_parser`` here."""

from keras_retinanet._lazy import lazy_namespace

__getattr__, __dir__ = lazy_namespace(__name__, {"build_parser": "retinanet", "main": "retinanet"})
__all__ = sorted(__dir__())
