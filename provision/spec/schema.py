"""The spec's typed models: pydantic v2, frozen, strict, every field documented.

`field()` declares a spec field with its one-line description and, where the YAML form differs
from the stored one (durations, CIDRs, reserves), a converter. `build()` validates a mapping
against a model and records one problem per bad field, under its dotted path and in the
project's own wording (never pydantic's), so `validate` reports every problem in one pass.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Annotated, Any, Callable, Literal, Mapping, TypeGuard

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      model_validator)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined

MISSING: Any = dataclasses.MISSING  # "no value": a field that failed, or one without default

# A mapping that stays read-only once built (labels, hashes), sorted so rendering is stable.
FrozenMap = Annotated[Mapping[str, str],
                      AfterValidator(lambda m: types.MappingProxyType(dict(sorted(m.items()))))]


class SpecModel(BaseModel):
    """Base of every spec section: immutable, no unknown keys, no silent coercion
    (`count: "3"` is refused, as YAML users expect from a typed file)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_section(cls, data: object) -> Any:
        return {} if data is None else data  # `os:` with nothing under it: every default


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


def field(doc: str, default: object = MISSING, *, convert: Callable[[Any], Any] | None = None,
          example: object = MISSING, factory: Callable[[], Any] | None = None,
          accepts: object = None) -> Any:
    """Declare a spec field with its one-line documentation.

    `convert` turns the raw YAML value into the stored value, raising ValueError with a
    message on bad input; `accepts` is the YAML form it takes, for the JSON Schema (default:
    what the converter is known to take, see `_ACCEPTS`). `example` is what `provision init`
    shows when it differs from the default.
    """
    extra: dict[str, Any] = {} if example is MISSING else {"examples": [example]}
    if convert is not None and default is not MISSING and not isinstance(default, (str, int, float, bool, tuple)):
        extra["default"] = yaml_form(default)  # the stored form (a Reserve) is not what a file holds
    if factory is not None:
        info: FieldInfo = Field(default_factory=factory, description=doc, json_schema_extra=extra or None)
    elif default is MISSING:
        info = Field(description=doc, json_schema_extra=extra or None)
    else:
        # Field() is typed as returning its default (for model class bodies); it is a FieldInfo
        info = typing.cast(FieldInfo, Field(default=default, description=doc, json_schema_extra=extra or None))
    if convert is not None:
        wanted = accepts if accepts is not None else _ACCEPTS.get(convert.__name__, PydanticUndefined)
        info.metadata.append(BeforeValidator(convert, json_schema_input_type=wanted))
    return info


# The YAML form each shared converter takes (for the JSON Schema editors check against).
_ACCEPTS: dict[str, Any] = {
    "parse_duration": float | str,
    "cidr": str,
    "cidr_list": list[str],
    "string_list": list[str] | None,
    "ip_list": list[str] | None,
    "policies": list[Literal["containers", "utilization", "predictive"]],
    "fraction": float,
    "parse_reserve": int | str,
    "artifact_hashes": dict[str, str] | None,
    "scalar_map": dict[str, str | int | float | bool] | None,
}


def yaml_form(value: object) -> Any:
    """How a stored default is written in a spec file (`str()` of a converted value)."""
    if value is None:
        return None
    text = str(value)
    return int(text) if text.isdigit() else text


def example_of(info: FieldInfo) -> Any:
    """The example `field()` recorded (what `init` shows instead of the default), or MISSING."""
    extra = info.json_schema_extra
    examples = extra.get("examples") if isinstance(extra, dict) else None
    return examples[0] if isinstance(examples, list) and examples else MISSING


def converter_of(info: FieldInfo) -> Callable[[Any], Any] | None:
    """The converter `field()` attached, if any."""
    for item in info.metadata:
        if isinstance(item, BeforeValidator):
            return item.func  # type: ignore[return-value]
    return None


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


def describe(value: object) -> str:
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


def in_words(allowed: str, value: object) -> str:
    """The one wording of a grammar problem: what is allowed, said in words (never a regular
    expression), then the value given. Every pattern check words its message through here."""
    return f"must be {allowed} (got {value!r})"


def name_problem(extra: int, value: object) -> str:
    return in_words(f"1 to {extra + 1} characters: lowercase letters (a-z), digits and hyphens, "
                    "starting with a letter", value)


def did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return f"unknown key (known keys: {', '.join(sorted(known))})"


def is_model(tp: object) -> TypeGuard[type[BaseModel]]:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def is_section(value: object) -> bool:
    """A built spec section (a model or the dataclass values some fields hold), not a scalar."""
    return isinstance(value, BaseModel) or (dataclasses.is_dataclass(value) and not isinstance(value, type))


def field_names(obj: object) -> list[str]:
    """The field names of a spec model (class or instance) or of a dataclass, in order."""
    cls = obj if isinstance(obj, type) else type(obj)
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return []


@functools.lru_cache(maxsize=None)
def _adapter(tp: Any) -> TypeAdapter:  # Any: a type expression (a model, `int | str`, ...), what TypeAdapter takes
    return TypeAdapter(tp)


def _strip_optional(tp: object) -> object:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return _strip_optional(rest[0])
    return tp


def _type_at(tp: object, loc: tuple) -> object:
    """The annotation found by following a pydantic error location from type `tp`."""
    for key in loc:
        tp = _strip_optional(tp)
        if is_model(tp) and isinstance(key, str) and key in tp.model_fields:
            tp = tp.model_fields[key].annotation
        elif typing.get_origin(tp) is tuple and isinstance(key, int):
            tp = typing.get_args(tp)[0]
        else:
            return None
    return _strip_optional(tp)


def _message(error: ErrorDetails, root: object) -> tuple[tuple, str]:
    """A pydantic error as (location, message in the project's words)."""
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    if kind == "missing":
        return loc, "required"
    if kind == "extra_forbidden":
        return loc, did_you_mean(str(loc[-1]), field_names(_type_at(root, loc[:-1])))
    if kind == "value_error":
        return loc, str(error["ctx"]["error"])
    if kind == "literal_error":
        choices = " | ".join(str(a) for a in typing.get_args(_type_at(root, loc)) or ())
        return loc, f"must be one of {choices or error['ctx'].get('expected')} (got {value!r})"
    if kind.startswith("string"):
        hint = "; quote it, as in \"1.33\"" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        return loc, f"must be a string (got {describe(value)}{hint})"
    if kind.startswith("int"):
        return loc, f"must be an integer (got {describe(value)})"
    if kind.startswith("float"):
        return loc, f"must be a number (got {describe(value)})"
    if kind.startswith("bool"):
        return loc, f"must be true or false (got {describe(value)})"
    if kind in ("model_type", "model_attributes_type", "dict_type", "dataclass_type", "mapping_type"):
        return loc, f"must be a mapping (got {describe(value)})"
    if kind in ("tuple_type", "list_type", "iterable_type"):
        return loc, f"must be a list (got {describe(value)})"
    return loc, error["msg"]


def convert(tp: object, value: object, path: str, problems: Problems) -> Any:
    """Validate `value` against annotation `tp`; on problems, record each under its path (in
    the order of the fields) and return MISSING."""
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as err:
        for error in err.errors(include_url=False):
            loc, message = _message(error, tp)
            where = path
            for key in loc:
                where = path_join(where, key)
            inner = (error.get("ctx") or {}).get("error")
            if isinstance(inner, FieldProblems):  # a converter's problems inside its field
                for sub, text in inner.problems:
                    problems.add(path_join(where, sub) if sub else where, text)
            else:
                problems.add(where, message)
        return MISSING


_convert = convert  # the name load.py has always used


def build(cls: type, data: object, path: str, problems: Problems) -> Any:
    """Build model `cls` from `data`; returns MISSING when any field had a problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(path, f"must be a mapping (got {describe(data)})")
        return MISSING
    return convert(cls, data, path, problems)


def docs(cls: type[BaseModel]) -> list[tuple[str, Any, str]]:
    """(name, default, doc) for each field of a spec model, in declaration order."""
    out = []
    for name, info in cls.model_fields.items():
        default = MISSING if info.is_required() else info.get_default(call_default_factory=True)
        out.append((name, default, info.description or ""))
    return out
