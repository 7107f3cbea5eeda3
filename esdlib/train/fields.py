"""Field validation and parsing for frozen dataclasses: the engine behind :class:`RunConfig`.

Field-agnostic: every function takes the dataclass (or one field's name, value and
constraints) as an argument, so any dataclass whose fields carry their constraints in
``metadata`` (:func:`spec`) can be validated and parsed the same way.

- :func:`spec`: a field whose validation constraints live next to its default;
- :func:`field_types`, :func:`check_keys`, :func:`coerce_type`, :func:`check_constraints`:
  the checks ``RunConfig.__post_init__`` runs;
- :func:`parse_override`: one ``"key=value"`` string into a typed value;
- :func:`did_you_mean`: the one "did you mean" hint of every error message that names an
  unknown choice (config keys, paper tables, notebook parameters).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import os
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ConfigError", "check_constraints", "check_keys", "coerce_type", "did_you_mean",
           "field_names", "field_types", "is_bool", "parse_override", "spec"]


class ConfigError(ValueError):
    """An invalid run configuration: unknown key, bad type, value out of range or choice.

    The message names every offending key and lists the valid keys or choices.
    """


def spec(default: Any, **constraints: Any) -> Any:
    """A dataclass field whose validation constraints live next to its default.

    Args:
        default: The field's default value.
        **constraints: Any of ``choices`` (tuple), ``ge``/``gt``/``le``/``lt``
            (numeric bounds), ``pattern`` (compiled regex the whole value must match)
            with ``pattern_doc`` (what the pattern accepts, for the error message),
            ``nonempty`` (strings) and ``max_len`` (longest string).
    """
    return dataclasses.field(default=default, metadata=constraints)


def did_you_mean(name: Any, options: Iterable[str]) -> str:
    """The hint appended to an error about an unknown ``name``: ``" (did you mean 'x'?)"``.

    Up to three close matches among ``options`` (``difflib``, cutoff 0.6) joined by "or";
    ``""`` when none is close.
    """
    close = difflib.get_close_matches(str(name), list(options), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


@functools.cache
def field_types(cls: type) -> dict[str, tuple[type, bool]]:
    """``{field name: (base type, accepts None)}`` of dataclass ``cls``, read from annotations."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[type, bool]] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        optional = False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = len(args) < len(typing.get_args(tp))
            (tp,) = args
        out[f.name] = (tp, optional)
    return out


def field_names(cls: type) -> tuple[str, ...]:
    """The field names of dataclass ``cls``, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls))


def check_keys(keys: Iterable[str], cls: type,
               renamed: Mapping[str, str] | None = None) -> None:
    """Check that every key names a field of ``cls``.

    Args:
        keys: the names to check.
        cls: the dataclass.
        renamed: ``{former key: hint}`` for keys that were renamed (the hint replaces the
            did-you-mean).

    Raises:
        ConfigError: naming every unknown key, with a hint, and listing the valid keys.
    """
    valid = field_names(cls)
    unknown = [k for k in keys if k not in valid]
    if unknown:
        renamed = renamed or {}
        parts = [f"{k!r}{renamed.get(k) or did_you_mean(k, valid)}" for k in unknown]
        raise ConfigError(
            f"unknown config key(s) {', '.join(parts)}; valid keys: {', '.join(valid)}"
        )


def is_bool(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy bool."""
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def coerce_type(cls: type, name: str, value: Any) -> Any:
    """Check ``value`` against field ``name``'s annotated type; normalise to a plain primitive.

    int fields reject bools, floats and strings; float fields accept ints (stored as
    float) but reject bools and non-finite values; bool fields accept only bools;
    str fields also accept ``os.PathLike`` (stored as ``str``).

    Raises:
        ConfigError: the value does not fit the type.
    """
    tp, optional = field_types(cls)[name]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must not be None (expected {tp.__name__})")
    kind = f"{tp.__name__} or None" if optional else tp.__name__
    got = f"got {value!r} of type {type(value).__name__}"
    if tp is bool:
        if is_bool(value):
            return bool(value)
        raise ConfigError(f"{name} must be a bool (true/false), {got}")
    if tp is int:
        if isinstance(value, numbers.Integral) and not is_bool(value):
            return int(value)
        raise ConfigError(f"{name} must be an integer ({kind}), {got}")
    if tp is float:
        if isinstance(value, numbers.Real) and not is_bool(value):
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, {got}")
            return value
        raise ConfigError(f"{name} must be a number ({kind}), {got}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise ConfigError(f"{name} must be a string ({kind}), {got}")
    raise TypeError(f"unsupported annotation for {cls.__name__}.{name}: {tp!r}")  # pragma: no cover


_BOUNDS = (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
           ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<"))


def check_constraints(name: str, value: Any, constraints: Mapping[str, Any]) -> list[str]:
    """The violations of a field's :func:`spec` constraints by ``value`` (one line each)."""
    problems = []
    choices = constraints.get("choices")
    if choices is not None and value not in choices:
        problems.append(
            f"{name}={value!r} is not valid{did_you_mean(value, choices)}; "
            f"choose one of: {', '.join(repr(c) for c in choices)}"
        )
    pattern = constraints.get("pattern")
    if pattern is not None and not pattern.fullmatch(value):
        problems.append(f"{name}={value!r} is not valid; expected {constraints['pattern_doc']}")
    if constraints.get("nonempty") and not value:
        problems.append(f"{name} must not be empty")
    max_len = constraints.get("max_len")
    if max_len is not None and len(value) > max_len:
        problems.append(f"{name} is {len(value)} characters long; at most {max_len} allowed")
    for key, ok, word in _BOUNDS:
        bound = constraints.get(key)
        if bound is not None and not ok(value, bound):
            problems.append(f"{name}={value!r} is out of range; must be {word} {bound}")
    return problems


_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")


def coerce_fields(obj: Any) -> list[str]:
    """Coerce every field of the frozen dataclass instance ``obj`` to its declared type (in
    place) and check its :func:`spec` constraints; the problems found, one message each.

    A value that cannot be coerced is reported and not checked further; ``None`` (where the
    type allows it) has no constraints to meet.
    """
    problems: list[str] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        try:
            value = coerce_type(type(obj), f.name, value)
        except ConfigError as err:
            problems.append(str(err))
            continue
        if value is not getattr(obj, f.name):
            object.__setattr__(obj, f.name, value)
        if value is not None:
            problems.extend(check_constraints(f.name, value, f.metadata))
    return problems


def parse_override(text: str, cls: type,
                   renamed: Mapping[str, str] | None = None) -> tuple[str, Any]:
    """Parse one ``"key=value"`` string into ``(key, value)`` of the field's type.

    Conversions: int and float fields parse numbers (``"2.5"`` is rejected for an
    int field); bool fields accept ``true/false/1/0/yes/no/on/off``; fields that
    accept None map ``"none"``/``"null"`` to ``None``; strings are kept verbatim.
    Case-insensitive for the words; whitespace around key and value is stripped.

    Args:
        text: e.g. ``"T=4"``, ``"method=bptt"``, ``"data_root=none"``.
        cls: the dataclass whose field ``key`` names.
        renamed: as in :func:`check_keys`.

    Returns:
        ``(key, value)``; the value still goes through the dataclass's validation.

    Raises:
        ConfigError: No ``=``, unknown key, or a value not convertible to the type.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(
            f"override {text!r} is not of the form key=value; "
            f"valid keys: {', '.join(field_names(cls))}"
        )
    key, raw = (part.strip() for part in text.split("=", 1))
    check_keys([key], cls, renamed)
    tp, optional = field_types(cls)[key]
    word = raw.lower()
    if optional and word in _NONE_WORDS:
        return key, None
    try:
        if tp is bool:
            if word in _TRUE_WORDS:
                return key, True
            if word in _FALSE_WORDS:
                return key, False
            raise ValueError
        if tp is int:
            return key, int(raw, 10)
        if tp is float:
            return key, float(raw)
    except ValueError:
        expected = {bool: "true/false", int: "an integer", float: "a number"}[tp]
        raise ConfigError(
            f"override {text!r}: {key} expects {expected}"
            f"{' or none' if optional else ''}, got {raw!r}"
        ) from None
    return key, raw
