"""Registers the package's Keras classes: ``keras.saving.load_model`` finds them after ``import keras_retinanet``.

Keras 3 finds a saved class by its registered name (``"keras_retinanet>RetinaNet"``), which the defining module's
decorator fills in; it imports the config's ``module`` only for its own packages. Our modules import TensorFlow
(seconds), which ``retinanet --help`` must not wait for: so ``import keras_retinanet`` registers at once only when
Keras is imported, else installs :class:`_RegisterWithKeras`, which registers once Keras has been imported and
none of our modules is half-way through its import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings

# Every module that defines a class registered with @keras.saving.register_keras_serializable
# (tests/test_keras_conventions.py checks that the list is complete).
KERAS_OBJECT_MODULES = (
    "keras_retinanet.backbones.batchnorm",
    "keras_retinanet.backbones.normalization",
    "keras_retinanet.backbones.registry",
    "keras_retinanet.backbones.torchvision.resnet",
    "keras_retinanet.model.anchors",
    "keras_retinanet.model.box_coder",
    "keras_retinanet.model.decode",
    "keras_retinanet.model.layers",
    "keras_retinanet.model.losses",
    "keras_retinanet.model.matching",
    "keras_retinanet.model.retinanet",
    "keras_retinanet.training.schedules",
)


def register_keras_objects() -> None:
    """Imports every module of :data:`KERAS_OBJECT_MODULES` (their decorators register the classes)."""
    for module in KERAS_OBJECT_MODULES:
        importlib.import_module(module)


class _RegisterWithKeras(importlib.abc.MetaPathFinder):
    """An import hook that wraps the loaders of ``keras`` and ``keras_retinanet.*`` to count our modules being
    executed; once ``keras`` has executed and that count is zero, it removes itself and registers."""

    def __init__(self):
        self.keras_imported = False
        self.executing = 0  # keras_retinanet modules whose code is running now

    def find_spec(self, fullname, path=None, target=None):
        ours = fullname.startswith("keras_retinanet.")
        if fullname != "keras" and not ours:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            self.executing += ours
            try:
                execute(module)
            finally:
                self.executing -= ours
            self.keras_imported |= not ours
            self.register_if_ready()

        spec.loader.exec_module = exec_module  # the loader object is this module's own
        return spec

    def register_if_ready(self) -> None:
        if not self.keras_imported or self.executing or self not in sys.meta_path:
            return
        sys.meta_path.remove(self)
        try:
            register_keras_objects()
        except Exception as error:  # noqa: BLE001 - a failure here must not break the user's `import keras`
            warnings.warn(
                f"keras_retinanet could not register its Keras classes ({type(error).__name__}: {error}); "
                "keras.saving.load_model will not find them",
                stacklevel=2,
            )


def register_when_keras_is_imported() -> None:
    """Registers now if Keras is imported, else installs the hook that registers right after it is."""
    if "keras" in sys.modules:
        register_keras_objects()
    elif not any(isinstance(finder, _RegisterWithKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWithKeras())
