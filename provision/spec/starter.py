"""`provision init`: a commented spec to start from, generated from the field docs."""
from __future__ import annotations

import json
from types import MappingProxyType

from . import schema
from .schema import SpecModel
from .json_schema import MODELINE, SCHEMA_FILE
from .load import API_VERSION
from .model import PROVIDER_OPTIONS, HeadroomSpec, PoolSpec, Reserve, Spec

EXAMPLE_POOLS = [
    {"name": "masters", "role": "master", "count": 3},
    {"name": "workers", "role": "worker", "count": 2, "min": 1, "max": 10},
]
SKIP = {"name", "provider", "pools", "headroom"}


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, Reserve):
        return json.dumps(str(value)) if value.percent is not None else str(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, (dict, MappingProxyType)):
        return "{}" if not value else json.dumps(dict(value))
    text = str(value)
    needs_quotes = any(c in text for c in ":#{}[],&*!|>'\"%@`") or text.replace(".", "").isdigit()
    return json.dumps(value) if needs_quotes else text


def _block(cls: type[SpecModel], indent: int) -> list[str]:
    lines = []
    pad = "  " * indent
    for name, default, doc in schema.docs(cls):
        if cls is Spec and name in SKIP:
            continue
        info = cls.model_fields[name]
        example = schema.example_of(info)
        hint = info.annotation
        if isinstance(hint, type) and issubclass(hint, SpecModel) and schema.converter_of(info) is None:
            lines.append(f"{pad}{name}:{' ' * max(1, 30 - len(pad) - len(name))}# {doc}")
            lines.extend(_block(hint, indent + 1))
            continue
        shown = example if example is not schema.MISSING else default
        value = _scalar(shown)
        head = f"{pad}{name}: {value}"
        lines.append(f"{head}{' ' * max(1, 32 - len(head))}# {doc}")
    return lines


POOL_DOCS = {name: doc for name, _, doc in schema.docs(PoolSpec)}
POOL_DOCS["name"] = ("pool name: 1 to 20 lowercase letters, digits and hyphens, starting with a letter; "
                     "host names are <cluster>-<pool>-<n>")


# Pool keys whose null default means "not set": left out of the starter pools unless set.
OPTIONAL_POOL_KEYS = {"provider"}


def _pool_lines(pool: dict) -> list[str]:
    """One example pool with every field of a pool, each with its description."""
    lines: list[str] = []
    for key, default, _ in schema.docs(PoolSpec):
        if key in ("min", "max") and pool.get("role") != "worker":
            continue  # only worker pools are resized
        value = pool.get(key, default)
        if value is schema.MISSING:
            continue
        if value is None and key in OPTIONAL_POOL_KEYS:
            # left out unless set (`provider: null` reads as a setting); a worker pool names it
            # in a comment so the field stays discoverable
            if pool.get("role") == "worker":
                head = f"    # {key}: ..."
                lines.append(f"{head}{' ' * max(1, 32 - len(head))}# {POOL_DOCS[key]}")
            continue
        head = f"  {'- ' if not lines else '  '}{key}: {_scalar(value)}"
        lines.append(f"{head}{' ' * max(1, 32 - len(head))}# {POOL_DOCS[key]}")
    return lines


def starter_spec(provider: str = "local", name: str = "demo") -> str:
    """YAML text of a commented spec for `provider` that shows every field and default."""
    out = [MODELINE,
           f"# provision cluster spec (version 1) for provider {provider}.",
           "# Every key below is shown with its default; delete what you do not change.",
           f"# Editors check it as it is typed after: provision schema > {SCHEMA_FILE}",
           f"apiVersion: {API_VERSION}        # the spec contract this file follows",
           f"{f'name: {name}':<32}# cluster name: 1 to 31 lowercase letters, digits and hyphens, "
           "starting with a letter; prefixes host names and tags",
           "provider:                       # where hosts are created, with the provider's own keys",
           f"{f'  name: {provider}':<32}# {' | '.join(PROVIDER_OPTIONS)}; the keys below are this provider's"]
    out.extend(_block(PROVIDER_OPTIONS[provider], 1))
    out.extend(_block(Spec, 0))
    if provider != "local":
        out.append("# ssh.authorized_keys needs at least one public key for this provider, e.g.")
        out.append("#   authorized_keys: [\"ssh-ed25519 AAAA... you@example\"]")
    out.append("pools:                          # host pools; at least one master pool")
    for pool in EXAMPLE_POOLS:
        out.extend(_pool_lines(pool))
    out.append("headroom:                       # automatic sizing of one worker pool; delete to turn off")
    out.extend(_block(HeadroomSpec, 1))
    return "\n".join(out) + "\n"
