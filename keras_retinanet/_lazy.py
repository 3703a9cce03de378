"""Lazy package namespaces (PEP 562): ``package.Name`` imports its module on first use, so that importing a
package whose modules import TensorFlow stays fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_namespace(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """``(__getattr__, __dir__)`` for a package whose public ``names`` map to the modules defining them.

    Args:
        package: the package's ``__name__``.
        names: public name -> module path relative to the package (e.g. ``{"export_model": "writer"}``; a
            leading dot climbs a level: ``".model.config"`` from ``keras_retinanet.training``).
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module attribute PEP 562 looks up
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{names[name]}", package), name)

    def __dir__() -> list:  # noqa: N807 - the module attribute PEP 562 looks up
        return sorted(names)

    return __getattr__, __dir__
