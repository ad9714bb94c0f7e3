"""Read a spec file into a `Spec`, or fail with every problem named by field path.

Whatever the file holds (nothing, a list, binary junk, a huge file, a directory) the result is
a `SpecError` with readable lines, never a traceback.
"""
from __future__ import annotations

import os
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from . import grammar, schema
from .model import PROVIDER_OPTIONS, ProviderSpec, Spec
from .rules import check_rules
from .schema import Problems, did_you_mean

MAX_SPEC_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
API_VERSION = "provision/v1"  # the contract a spec follows (`apiVersion:`, optional)
STDIN = "-"


class SpecError(UserError):
    """The spec is invalid; `lines` holds one `SPEC: path: message` line per problem."""


def read_yaml(path: str | os.PathLike, label: str | None = None) -> Any:
    """Parse a YAML file defensively; errors name the file, and line and column for syntax."""
    label = label or str(path)
    if str(path) == STDIN:
        label = "<stdin>" if label == STDIN else label
        raw = sys.stdin.buffer.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(f"{label}: too large (a spec is at most {MAX_SPEC_BYTES} bytes)")
        return _parse_text(raw, label)
    p = Path(path)
    try:
        if p.is_dir():
            raise SpecError(f"{label}: is a directory, not a spec file")
        size = p.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{label}: file is too large ({size} bytes; a spec is at most {MAX_SPEC_BYTES} bytes)")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{label}: no such file") from None
    except PermissionError:
        raise SpecError(f"{label}: permission denied") from None
    except OSError as err:
        raise SpecError(f"{label}: cannot read ({err.strerror})") from None
    return _parse_text(raw, label)


def _parse_text(raw: bytes, label: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{label}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
    if "\x00" in text:
        raise SpecError(f"{label}: not a text file (contains NUL bytes)")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(f"{label}: YAML syntax error: {where}{err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{label}: YAML syntax error: {err}") from None
    if node is None:
        raise SpecError(f"{label}: empty file; a spec is a mapping with at least `name`, `provider` and `pools`")
    counter = [0]
    return _to_python(node, counter, label)


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _to_python(node: yaml.Node, counter: list[int], label: str) -> Any:
    counter[0] += 1
    if counter[0] > MAX_YAML_NODES:
        raise SpecError(f"{label}: too many YAML nodes (more than {MAX_YAML_NODES}; aliases expand too)")
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        line = node.start_mark.line + 1
        raise SpecError(f"{label}: line {line}: unsupported YAML tag {node.tag!r}")
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = _to_python(key_node, counter, label)
            if isinstance(key, (dict, list)):
                line = key_node.start_mark.line + 1
                raise SpecError(f"{label}: line {line}: a mapping key must be a scalar")
            if key in out:
                line = key_node.start_mark.line + 1
                raise SpecError(f"{label}: line {line}: duplicate key {key!r}")
            out[key] = _to_python(value_node, counter, label)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(n, counter, label) for n in node.value]
    try:
        return _SCALARS.construct_object(node)
    except yaml.constructor.ConstructorError as err:
        line = node.start_mark.line + 1
        raise SpecError(f"{label}: line {line}: {err.problem}") from None


class _ScalarConstructor(yaml.SafeLoader):
    def __init__(self) -> None:  # constructs scalars only; no stream
        yaml.constructor.SafeConstructor.__init__(self)


_SCALARS = _ScalarConstructor()


def parse_spec(data: object, label: str = "SPEC") -> Spec:
    """Build and check a `Spec` from parsed YAML; raise SpecError listing every problem."""
    problems = Problems()
    if not isinstance(data, dict):
        raise SpecError(f"{label}: the top level must be a mapping (got {schema.describe(data)})")
    data = dict(data)
    if "apiVersion" in data:
        version = data.pop("apiVersion")
        if version != API_VERSION:
            problems.add("apiVersion", f"must be {API_VERSION} (the spec contract this provision reads; "
                                       f"got {version!r})")
    provider_raw = data.pop("provider", None)
    provider = _parse_provider(provider_raw, problems)
    failed: set[str] = set() if provider is not None else {"provider"}
    index_map: list[int] = []
    spec = _build_spec(data, provider, problems, failed, index_map)
    if spec is None:  # nothing could stand in: the problems say why
        raise SpecError([f"{label}: {line}" for line in problems.lines()] or [f"{label}: invalid"])
    if failed:  # check the rest too (one pass), but not rules that read what failed
        rules = Problems()
        check_rules(spec, rules)
        for path, message in rules.items:
            if not _depends_on(path, message, failed):
                problems.add(_file_index(path, index_map), message)
    else:
        check_rules(spec, problems)
    grammar.check(spec, problems)  # every string against the grammar of where it lands
    if problems:
        raise SpecError([f"{label}: {line}" for line in problems.lines()])
    return spec


def _parse_provider(raw: object, problems: Problems) -> ProviderSpec | None:
    if raw is None:
        problems.add("provider", "required (a mapping with at least `name`)")
        return None
    if not isinstance(raw, dict):
        problems.add("provider", f"must be a mapping (got {schema.describe(raw)})")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or name not in PROVIDER_OPTIONS:
        problems.add("provider.name", f"must be one of {' | '.join(PROVIDER_OPTIONS)} (got {name!r})")
        return None
    options_raw = {k: v for k, v in raw.items() if k != "name"}
    options_cls = PROVIDER_OPTIONS[name]
    options = schema.build(options_cls, options_raw, "provider", problems)
    if options is schema.MISSING:
        return None
    return ProviderSpec(name=name, options=options)


# What a field that failed to build is replaced with, so the rules about the other fields still
# run in the same pass (their problems about the failed field are then left out).
_STAND_INS = {"name": "x", "pools": ()}
# Rules that count or look up pools: left out when a pool failed (what they see is short). Their
# messages speak of pools or of a number of hosts; the same fields' other rules still run.
_POOL_RULES = ("pools", "etcd.count", "headroom.pool", "headroom.burst_pool", "provider.subnet", "provider.subnet_cidr")


def _depends_on(path: str, message: str, failed: set[str]) -> bool:
    top = path.split(".", 1)[0]  # pools[2].name stays: that pool did build
    if top in failed or any(f"{key}." in message or f"{key}:" in message for key in failed):
        return True
    return "pools" in failed and path in _POOL_RULES and ("pool" in message or "number of" in message)


def _build_spec(rest: dict, provider: ProviderSpec | None, problems: Problems,
                failed: set[str] | None = None, index_map: list[int] | None = None) -> Spec | None:
    """Build every field but `provider` (parsed apart: its keys depend on its name). A field
    that fails is recorded in `failed` and stood in for (its default; the pools that did build),
    so the rules still check everything else; None when nothing sensible can stand in."""
    failed = set() if failed is None else failed
    index_map = [] if index_map is None else index_map
    fields = Spec.model_fields
    for key in rest:
        if key not in fields:
            problems.add(str(key), did_you_mean(str(key), sorted(fields)))
    values: dict[str, Any] = {}
    for name, info in fields.items():
        if name == "provider":
            continue
        if name not in rest:
            if info.is_required():
                problems.add(name, "required")
                failed.add(name)
                values[name] = _STAND_INS[name]
            continue
        if name == "pools" and isinstance(rest[name], list):
            value, index_map[:] = _build_pools(rest[name], info.annotation, problems, failed)
        else:
            value = schema.convert(info.annotation, rest[name], name, problems)
        if value is schema.MISSING:
            failed.add(name)
            if name in _STAND_INS:
                values[name] = _STAND_INS[name]
        else:
            values[name] = value
    stand_in = provider or ProviderSpec(name="local", options=PROVIDER_OPTIONS["local"]())
    try:
        return Spec(provider=stand_in, **values)
    except (TypeError, ValueError):
        return None


def _build_pools(items: list[object], hint: object, problems: Problems, failed: set[str]) -> tuple[tuple, list[int]]:
    """Each pool on its own: the pools that build are kept (a bad one does not hide the rest),
    with the index each had in the file."""
    item_type = typing.get_args(hint)[0]
    built, indices = [], []
    for i, item in enumerate(items):
        value = schema.convert(item_type, item, f"pools[{i}]", problems)
        if value is schema.MISSING:
            failed.add("pools")
        else:
            built.append(value)
            indices.append(i)
    return tuple(built), indices


def _file_index(path: str, index_map: list[int]) -> str:
    """`pools[j]...` of the pools that built, as `pools[i]...` of the file."""
    if not path.startswith("pools[") or not index_map:
        return path
    j, rest = path[6:].split("]", 1)
    return f"pools[{index_map[int(j)]}]{rest}" if j.isdigit() and int(j) < len(index_map) else path


def load_spec(path: str | os.PathLike, label: str | None = None) -> Spec:
    """Read, parse and validate the spec at `path` (`-`: standard input, named <stdin>)."""
    label = label or ("<stdin>" if str(path) == STDIN else str(path))
    return parse_spec(read_yaml(path, label), label)
