"""The user-data budget: make a config fit a cloud's limit, or say where it must be served.

Steps, first that fits wins: the config as is; the config with every inline file gzip
compressed (Ignition `compression: gzip` data URLs) and compact JSON; the whole config gzip
compressed inside a small config that replaces itself with it (`ignition.config.replace` from a
`data:` URL with `compression: gzip`, spec 3.1+), which needs no server; a small pointer config
(`ignition.config.replace` with the URL and sha512 of the full config), which only works when
the caller says where the full config will be served. Never a silent truncation.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ActionError
from .ignition import IGNITION_VERSION


class SizeLimit(Protocol):
    """A cloud's user-data limit as rendering needs it (`providers.base.UserDataLimit` is one;
    render does not import providers)."""

    @property
    def max_bytes(self) -> int: ...

    @property
    def counted(self) -> str: ...

    def size_of(self, data: bytes) -> int: ...

    def fits(self, data: bytes) -> bool: ...

# Inline files smaller than this stay uncompressed: gzip+base64 would make them bigger.
MIN_COMPRESS = 128


@dataclass(frozen=True)
class FittedUserData:
    """What to hand the cloud (`data`), how it was made to fit (`method`: plain | gzip |
    embedded | pointer) and, for a pointer, the full config that must be served at `serve_url`."""

    data: bytes
    method: str
    full_config: bytes | None = None
    serve_url: str | None = None


def _gzip(data: bytes) -> bytes:
    import gzip  # here: a config that fits as it is (most) needs no compression
    return gzip.compress(data, compresslevel=9, mtime=0)  # mtime=0: same bytes every time


def compress_ignition(config: dict[str, Any]) -> bytes:
    """The config with inline file contents gzip compressed, as compact deterministic JSON."""
    out = json.loads(json.dumps(config))
    for entry in out.get("storage", {}).get("files", []):
        contents = entry.get("contents") or {}
        source = contents.get("source", "")
        if not source.startswith("data:;base64,") or contents.get("compression"):
            continue
        raw = base64.b64decode(source[len("data:;base64,"):])
        if len(raw) < MIN_COMPRESS:
            continue
        contents["source"] = "data:;base64," + base64.b64encode(_gzip(raw)).decode()
        contents["compression"] = "gzip"
    return json.dumps(out, sort_keys=True, separators=(",", ":")).encode()


def pointer_config(url: str, full: bytes) -> bytes:
    digest = hashlib.sha512(full).hexdigest()
    pointer = {"ignition": {"version": IGNITION_VERSION,
                            "config": {"replace": {"source": url, "verification": {"hash": f"sha512-{digest}"}}}}}
    return json.dumps(pointer, sort_keys=True, separators=(",", ":")).encode()


def embedded_config(config: dict[str, Any]) -> bytes:
    """A config whose only content is `config`, gzip compressed as a whole in a data URL:
    Ignition fetches it from itself and replaces the outer config with it. The whole document
    compresses far better than file by file (units, JSON and certificates share a lot)."""
    full = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    source = "data:;base64," + base64.b64encode(_gzip(full)).decode()
    outer = {"ignition": {"version": IGNITION_VERSION,
                          "config": {"replace": {"source": source, "compression": "gzip"}}}}
    return json.dumps(outer, sort_keys=True, separators=(",", ":")).encode()


def fit_user_data(config_bytes: bytes, limit: SizeLimit | None, serve_url: str | None = None,
                  name: str = "config") -> FittedUserData:
    """Make `config_bytes` (Ignition JSON or `#cloud-config`) fit `limit`
    (`provision.providers.base.UserDataLimit`, or None for no limit).

    `serve_url` is where the caller will serve the full config if a pointer is needed.
    Raises ActionError naming the sizes and what to do when nothing fits.
    """
    if limit is None or limit.fits(config_bytes):
        return FittedUserData(config_bytes, "plain")
    budget = f"{limit.max_bytes} bytes ({limit.counted})"
    if config_bytes.startswith(b"#cloud-config"):
        raise ActionError(f"{name}: cloud-config is {limit.size_of(config_bytes)} bytes, over the user-data "
                          f"limit of {budget}; cloud-config has no pointer mechanism: use os.config: ignition")
    try:
        config = json.loads(config_bytes)
    except ValueError:
        raise ActionError(f"{name}: not an Ignition config; cannot fit it into {budget}") from None
    compressed = compress_ignition(config)
    if limit.fits(compressed):
        return FittedUserData(compressed, "gzip")
    embedded = embedded_config(config)
    if limit.fits(embedded):
        return FittedUserData(embedded, "embedded")
    if not serve_url:
        raise ActionError(f"{name}: config is {limit.size_of(compressed)} bytes even compressed, over the "
                          f"user-data limit of {budget}; it must be served over https/s3 and referenced by a "
                          "pointer config: give the URL where the full config will be served")
    pointer = pointer_config(serve_url, compressed)
    if not limit.fits(pointer):
        raise ActionError(f"{name}: even the pointer config ({limit.size_of(pointer)} bytes) exceeds {budget}")
    return FittedUserData(pointer, "pointer", full_config=compressed, serve_url=serve_url)
