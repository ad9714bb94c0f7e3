"""A small typed-schema engine: build frozen dataclasses from plain YAML data.

Every field declares its documentation and, where needed, a converter, with `field()`.
`build()` walks a dataclass type, converts values, and collects one problem per bad field
(with its dotted path) instead of stopping at the first, so `validate` can report them all.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from typing import Any, Callable, Literal

MISSING = dataclasses.MISSING


class Problems:
    """Collects `path: message` problems in the order they are found."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def lines(self) -> list[str]:
        return [f"{path}: {message}" if path else message for path, message in self.items]


def field(doc: str, default: Any = MISSING, *, convert: Callable[[Any], Any] | None = None,
          example: Any = MISSING, factory: Callable[[], Any] | None = None) -> Any:
    """Declare a spec field with its one-line documentation.

    `convert` turns the raw YAML value into the stored value, raising ValueError with a
    message on bad input. `example` is what `provision init` shows when it differs from the
    default.
    """
    metadata = {"doc": doc, "convert": convert, "example": example}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class FieldProblems(ValueError):
    """A converter's problems inside its field, as (sub-path, message) pairs (e.g. a pool's
    own `provider:`, whose keys depend on its name)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))
        self.problems = problems


def path_join(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def in_words(allowed: str, value: Any) -> str:
    """The one wording of a grammar problem: what is allowed, said in words (never a regular
    expression), then the value given. Every pattern check words its message through here."""
    return f"must be {allowed} (got {value!r})"


def name_problem(extra: int, value: Any) -> str:
    return in_words(f"1 to {extra + 1} characters: lowercase letters (a-z), digits and hyphens, "
                    "starting with a letter", value)


def did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return f"unknown key (known keys: {', '.join(sorted(known))})"


def _convert(tp: Any, value: Any, path: str, problems: Problems) -> Any:
    """Convert `value` to annotation `tp`; on a problem, record it and return MISSING."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, path, problems)
        raise TypeError(f"unsupported union {tp}")
    if origin is Literal:
        if value in args and type(value) is type(args[0]):
            return value
        choices = " | ".join(str(a) for a in args)
        problems.add(path, f"must be one of {choices} (got {value!r})")
        return MISSING
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, problems)
    if origin is tuple:
        if not isinstance(value, list):
            problems.add(path, f"must be a list (got {describe(value)})")
            return MISSING
        items = [_convert(args[0], item, path_join(path, i), problems) for i, item in enumerate(value)]
        return MISSING if any(i is MISSING for i in items) else tuple(items)
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, dict):
            problems.add(path, f"must be a mapping (got {describe(value)})")
            return MISSING
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
                problems.add(path_join(path, str(k)), "must map a string to a scalar")
                return MISSING
            out[k] = str(v).lower() if isinstance(v, bool) else str(v)
        return types.MappingProxyType(dict(sorted(out.items())))
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.add(path, f"must be true or false (got {describe(value)})")
        return MISSING
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.add(path, f"must be an integer (got {describe(value)})")
        return MISSING
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        problems.add(path, f"must be a number (got {describe(value)})")
        return MISSING
    if tp is str:
        if isinstance(value, str):
            return value
        hint = "; quote it, as in \"1.33\"" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        problems.add(path, f"must be a string (got {describe(value)}{hint})")
        return MISSING
    if tp is Any:
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def build(cls: type, data: Any, path: str, problems: Problems) -> Any:
    """Build dataclass `cls` from `data`; returns MISSING when any field had a problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(path, f"must be a mapping (got {describe(data)})")
        return MISSING
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if not isinstance(key, str) or key not in fields:
            problems.add(path_join(path, str(key)), did_you_mean(str(key), list(fields)))
    kwargs: dict[str, Any] = {}
    ok = True
    for name, f in fields.items():
        fpath = path_join(path, name)
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                problems.add(fpath, "required")
                ok = False
            continue
        converter = f.metadata.get("convert")
        if converter is not None:
            try:
                value = converter(data[name])
            except ValueError as err:
                for sub, message in getattr(err, "problems", None) or [("", str(err))]:
                    problems.add(path_join(fpath, sub) if sub else fpath, message)
                ok = False
                continue
        else:
            value = _convert(hints[name], data[name], fpath, problems)
        if value is MISSING:
            ok = False
        else:
            kwargs[name] = value
    if not ok:
        return MISSING
    try:
        return cls(**kwargs)
    except ValueError as err:
        problems.add(path, str(err))
        return MISSING


def docs(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, doc) for each field of a spec dataclass, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        out.append((f.name, default, f.metadata.get("doc", "")))
    return out
