"""The spec's value types and converters: names, durations, CIDRs, reserves, lists and hashes.

Each converter takes the value as YAML gave it and returns the typed value or raises ValueError
with the message `validate` prints under the field's path.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from types import MappingProxyType

from .schema import describe

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """`30s`, `10m`, `1h`, `1d`, or a bare number of seconds, to seconds."""
    if isinstance(value, bool):
        raise ValueError(f"must be a duration like 30s, 10m or 1h (got {value!r})")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"must not be negative (got {value})")
        return float(value)
    if isinstance(value, str):
        m = DURATION_RE.match(value.strip())
        if m:
            return float(m.group(1)) * DURATION_UNITS[m.group(2)]
    raise ValueError(f"must be a duration like 30s, 10m or 1h (got {value!r})")


def cidr(value: object) -> str:
    """A CIDR network in canonical form (host bits must be zero)."""
    if not isinstance(value, str):
        raise ValueError(f"must be a CIDR like 10.2.0.0/16 (got {value!r})")
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as err:
        raise ValueError(f"must be a CIDR like 10.2.0.0/16 ({err})") from None


def cidr_list(value: object) -> tuple[str, ...]:
    """A non-empty list of CIDR networks, each in canonical form."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of CIDRs like [203.0.113.0/24]")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(cidr(item))
        except ValueError as err:
            raise ValueError(f"[{i}] {err}") from None
    return tuple(out)


@dataclass(frozen=True)
class Reserve:
    """Free container slots to keep: a count, or a percentage of capacity."""

    count: int | None = None
    percent: float | None = None

    def slots(self, capacity: int) -> int:
        if self.percent is not None:
            # Clocker: a percentage reserve is ceil(percent x possible).
            return -(-int(round(self.percent * capacity * 100)) // 10000)
        return self.count or 0

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


def parse_reserve(value: object) -> Reserve:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Reserve(count=value)
    if isinstance(value, str):
        m = re.match(r"^(\d+(?:\.\d+)?)%$", value.strip())
        if m and float(m.group(1)) <= 100:
            return Reserve(percent=float(m.group(1)))
        if value.strip().isdigit():
            return Reserve(count=int(value.strip()))
    raise ValueError(f"must be a count like 2 or a percentage like \"20%\" (got {value!r})")


def string_list(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def policies(value: object) -> tuple[str, ...]:
    known = ("containers", "utilization", "predictive")
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of: {', '.join(known)}")
    for v in value:
        if v not in known:
            raise ValueError(f"unknown policy {v!r} (known: {', '.join(known)})")
    if len(set(value)) != len(value):
        raise ValueError("lists a policy twice")
    return tuple(value)


def ip_list(value: object) -> tuple[str, ...]:
    """A list of IP addresses (DNS servers), each in canonical form."""
    items = string_list(value)
    try:
        return tuple(str(ipaddress.ip_address(v.strip())) for v in items)
    except ValueError as err:
        raise ValueError(f"must be a list of IP addresses ({err})") from None


def scalar_map(value: object) -> dict[str, str]:
    """A mapping of strings to scalars (YAML `true` becomes "true"), as Kubernetes labels are."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping (got {describe(value)})")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float, bool)):
            raise ValueError(f"{k}: must map a string to a scalar")
        out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def fraction(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    raise ValueError(f"must be a number in (0, 1] (got {value!r})")


HASH_RE = re.compile(r"^(sha512-[0-9a-f]{128}|sha256-[0-9a-f]{64})$")


def artifact_hashes(value: object) -> MappingProxyType[str, str]:
    """`{artifact: "sha512-<hex>" | "sha256-<hex>"}` for binaries without a known published hash."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of artifact name to \"sha512-<hex>\" or \"sha256-<hex>\"")
    known = ("cni-plugins", "etcd", "flanneld", "fleetd", "kubelet")  # the downloads provision knows (provision.artifacts)
    for name, digest in value.items():
        if name not in known:
            raise ValueError(f"{name}: unknown artifact (known: {', '.join(known)})")
        if not isinstance(name, str) or not isinstance(digest, str) or not HASH_RE.match(digest.lower()):
            raise ValueError(f"{name}: must be \"sha512-<128 hex digits>\" or \"sha256-<64 hex digits>\" "
                             f"(got {digest!r})")
    return MappingProxyType({k: v.lower() for k, v in sorted(value.items())})
