"""One machine's configuration, independent of the format it is written in.

A role template in `ignition/` (jinja2) renders to a flat YAML list of items:
`file` (with `template`, `blob` or `text`), `unit`, `directory` and `binary`. `build_machine`
turns that list into a `Machine`: file contents read from templates and PKI blobs, units and
directories. A file item with `secret: true` (private keys, tokens) goes to `Machine.secrets`,
never into the boot config: the `secrets` phase delivers those over SSH. Certificates (PKI blobs
not marked secret) are in the boot config and in `Machine.secrets` too, so a renewed key is
never delivered without its certificate. `binary` items name downloads; the renderer resolves them before building, since
templates name the install units those downloads get.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from ..errors import ActionError, UserError


@dataclass(frozen=True)
class File:
    path: str
    mode: int
    data: bytes | None = None  # inline contents
    url: str | None = None  # remote contents ...
    hash: str | None = None  # ... verified by this hash


@dataclass(frozen=True)
class Unit:
    name: str
    contents: str
    enabled: bool = False


@dataclass
class Machine:
    """Files, directories and units of one config."""

    files: dict[str, File] = field(default_factory=dict)
    directories: dict[str, int] = field(default_factory=dict)
    units: dict[str, Unit] = field(default_factory=dict)
    secrets: dict[str, File] = field(default_factory=dict)  # delivered over SSH (keys: only so)

    def add_file(self, f: File) -> None:
        if f.path in self.files and self.files[f.path] != f:
            raise ActionError(f"render: two different contents for {f.path}")
        self.files[f.path] = f

    def add_unit(self, u: Unit) -> None:
        if u.name in self.units and self.units[u.name] != u:
            raise ActionError(f"render: two different units named {u.name}")
        self.units[u.name] = u


# libyaml's safe loader when PyYAML was built with it: the role templates render to thousands of
# lines per machine and the pure-Python parser was most of a render (P1, issue 11).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_items(text: str, where: str) -> list[dict[str, Any]]:
    """The items of a rendered role template, as a new list of new dicts (the caller's to change)."""
    return [dict(item) for item in _parsed_items(text, where)]


@functools.lru_cache(maxsize=32)
def _parsed_items(text: str, where: str) -> tuple[dict[str, Any], ...]:
    # Parsed once per distinct text: the worker pools of a cluster mostly render the same role
    # text (4 distinct of 13 configs for 10 pools), and parsing was a third of rendering each.
    try:
        items = yaml.load(text, Loader=_SAFE_LOADER) or []
    except yaml.YAMLError as err:
        raise ActionError(f"render: role template {where} is not valid YAML after rendering: {err}") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ActionError(f"render: role template {where} must render to a list of items")
    return tuple(items)


PRIVATE_KEY_MARK = b"PRIVATE KEY"
PKI_PREFIX = "pki/"


def secret_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The file items the `secrets` phase delivers: those marked `secret: true`, and the
    certificates (PKI blobs) that go with them."""
    return [i for i in items if "file" in i and (i.get("secret") or str(i.get("blob", "")).startswith(PKI_PREFIX))]


def build_machine(items: list[dict[str, Any]], render_template: Callable[[str], str],
                  read_blob: Callable[[str], bytes | None]) -> Machine:
    machine = Machine()
    for item in items:
        if "file" in item and item.get("secret"):
            machine.secrets[item["file"]] = _file(item, render_template, read_blob)
        elif "file" in item:
            f = _file(item, render_template, read_blob)
            # A key that a template forgot to mark secret must not reach a boot config.
            if f.data is not None and PRIVATE_KEY_MARK in f.data:
                raise ActionError(f"render: {item['file']} holds a private key but is not marked secret")
            machine.add_file(f)
            if str(item.get("blob", "")).startswith(PKI_PREFIX):
                machine.secrets[item["file"]] = f  # a certificate goes with its key
        elif "unit" in item:
            machine.add_unit(Unit(name=item["unit"], contents=render_template(item["template"]),
                                  enabled=bool(item.get("enabled", False))))
        elif "directory" in item:
            machine.directories[item["directory"]] = int(item.get("mode", 0o755))
        elif "binary" in item:
            pass  # resolved by the renderer before building (see the module docstring)
        else:
            raise UserError(f"render: unknown item in role template: {sorted(item)}")
    return machine


def _file(item: dict[str, Any], render_template: Callable[[str], str],
          read_blob: Callable[[str], bytes | None]) -> File:
    mode = int(item.get("mode", 0o644))
    data: bytes | None
    if "template" in item:
        data = render_template(item["template"]).encode()
    elif "blob" in item:
        blob = read_blob(item["blob"])
        if blob is None:
            raise ActionError(f"render: state has no {item['blob']}; run `provision up SPEC --until pki` "
                              "(or the pki phase) first")
        data = blob
    elif "text" in item:
        data = str(item["text"]).encode()
    else:
        raise ActionError(f"render: file {item['file']} has no template, blob or text")
    return File(path=item["file"], mode=mode, data=data)
