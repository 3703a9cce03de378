"""Typed option dataclasses: the machinery under ``ModelConfig`` and ``TrainConfig``.

:class:`Options` checks every value against its field's type hint (``coerce``: lists become tuples, ``"none"``
is ``None`` for optional fields, ``"1e-4"`` a number); a wrong type or an unknown key is an error naming the
option. Standard library and PyYAML only (no TensorFlow): the CLI builds its flags from these types.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import yaml

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null", "~")


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    target: tuple[str, str] | None = None,
    group: str | None = None,
) -> Any:
    """A dataclass field with its CLI help, the ``(class, argument)`` it sets and its help group."""
    metadata = {"help": help, "target": target, "group": group}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Options:
    """Base of the option dataclasses: each value checked against its field's type, ``to_dict``."""

    def __post_init__(self) -> None:
        hints = field_types(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            object.__setattr__(self, field.name, coerce(value, hints[field.name], field.name))

    def to_dict(self) -> dict:
        """Plain YAML/JSON values: tuples become lists, a nested config a nested dict."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a config dataclass's fields (``Literal``, ``X | None``, ``tuple[float, ...]``)."""
    hints = typing.get_type_hints(cls)
    return {field.name: hints[field.name] for field in dataclasses.fields(cls)}


@functools.cache
def field_names(cls: type) -> frozenset[str]:
    return frozenset(field.name for field in dataclasses.fields(cls))


def check_keys(values: Mapping[str, Any], names: frozenset[str], what: str) -> None:
    """``ValueError`` for keys of ``values`` (dashes count as underscores) not in ``names``, each with the
    closest known name; ``what`` names an option in the message (``"model option"``)."""
    if not isinstance(values, Mapping):
        raise ValueError(f"expected a mapping of {what}s, got {values!r}")
    unknown = sorted(str(k) for k in values if str(k).replace("-", "_") not in names)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key.replace("-", "_"), sorted(names), n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise ValueError(f"unknown {what}(s): {', '.join(hints)}")


def optional_inner(hint: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, ``(hint, False)`` otherwise."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return hint, False


def is_none_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in _NONE


def split_list(text: str) -> list[str]:
    """``"1,2,3"``, ``"1 2 3"`` and ``"1, 2, 3"`` -> ``["1", "2", "3"]``."""
    return [part for part in text.replace(",", " ").split() if part]


def describe(hint: Any) -> str:
    """A reader's name for a type hint, for error messages and help."""
    inner, optional = optional_inner(hint)
    if optional:
        return f"none or {describe(inner)}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple:
        plural = _PLURALS.get(args[0], str(args[0]))
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {plural}"
        return f"{len(args)} {plural}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}
    return names.get(hint, names.get(origin, str(hint)))


_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _number(value: Any, kind: type) -> int | float | None:
    """``value`` as ``kind`` (int or float): numbers and numeric text, an int only from a whole number; None
    for anything else (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            return None
    if isinstance(value, int) or (isinstance(value, float) and (kind is float or value.is_integer())):
        return kind(value)
    return None


def coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the type ``hint`` describes, or a ``ValueError`` that names the option ``name``."""
    inner, optional = optional_inner(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    wrong = f"option {name}: expected {describe(hint)}, got {value!r}"
    if optional:
        if value is None or is_none_text(value):
            return None
        try:
            return coerce(value, inner, name)
        except ValueError:
            raise ValueError(wrong) from None
    if origin in (Union, types.UnionType):
        for alternative in args:
            with contextlib.suppress(ValueError):
                return coerce(value, alternative, name)
    elif origin is Literal:
        if value in args:
            return value
    elif origin is tuple:
        items = split_list(value) if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            variadic = len(args) == 2 and args[1] is Ellipsis
            if not variadic and len(items) != len(args):
                raise ValueError(f"option {name}: expected {describe(hint)}, got {len(items)}: {value!r}")
            kinds = [args[0]] * len(items) if variadic else args
            return tuple(
                coerce(item, kind, f"{name}[{i}]") for i, (item, kind) in enumerate(zip(items, kinds))
            )
    elif hint is dict or origin is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                raise ValueError(f"option {name}: expected a JSON/YAML mapping, got {value!r}") from None
        if isinstance(value, Mapping):
            return dict(value)
        wrong = f"option {name}: expected a mapping, got {value!r}"
    elif hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif hint in (int, float):
        number = _number(value, hint)
        if number is not None:
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
    elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return hint.from_dict(value)
        wrong = f"option {name}: expected a mapping of options, got {value!r}"
    else:
        raise TypeError(f"option {name}: unsupported type {hint!r}")
    raise ValueError(wrong)


def _plain(value: Any) -> Any:
    if isinstance(value, Options):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
