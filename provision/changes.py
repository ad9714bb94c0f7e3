"""What a spec change does to hosts that already run. Pure functions, no I/O.

A host boots once with its rendered config (Ignition runs once). When the `machines` phase
creates a host it records, under `state["hosts"][name]["boot"]`, the spec fields that went
into that config (`boot_fields`) and the sha256 of the rendered config. `host_changes`
compares that record with what the current spec would give the host and classifies each host:

- `keep`: nothing the host's config depends on changed;
- `update`: only fields that reach the host as files and restarts changed (certificate SANs,
  flags, versions of binaries, kubeconfigs): the host can be updated in place;
- `replace`: a field only the boot config can set changed (OS, machine size or image, the
  login user, the host's networks, whether it carries etcd): the host must be replaced
  (Terraform's "forces replacement");
- `unknown`: state was written before provision recorded boot fields, so it cannot tell.

Field names are the spec's dotted paths; a pool's fields are `pools[<pool name>].<field>`.
`cluster.masters`, `cluster.api_endpoint` and `cluster.etcd_members` are derived from the plan
(the API server's certificate, the workers' kubeconfig and every host's etcd endpoints name them).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .plan import HostPlan, Plan
from .spec import Spec
from .spec.schema import field_names, is_section

BOOT = "boot"  # key of the boot record in a host's state entry

KEEP, UPDATE, REPLACE, UNKNOWN = "keep", "update", "replace", "unknown"

# How a host is replaced. A worker is surged: a new worker (a new name in its pool) is made and
# healthy before the old one goes. A master or etcd member keeps its name and address (other
# hosts' configs name them): it goes first and comes back.
CREATE_BEFORE_DESTROY, DESTROY_BEFORE_CREATE = "create before destroy", "destroy before create"


def replacement_strategy(role: str, etcd: bool) -> str:
    """`create before destroy` for a worker that carries no etcd, else `destroy before create`."""
    return CREATE_BEFORE_DESTROY if role == "worker" and not etcd else DESTROY_BEFORE_CREATE

# First match wins: (field or field prefix, forces replacement?). A field nobody listed is an
# in-place update: everything not set at first boot reaches the host as files and restarts.
FORCES_REPLACEMENT: tuple[tuple[str, bool | None], ...] = (
    ("provider.", True),               # machine image, size, region, network of the host
    ("os.", True),                     # the OS itself and how it reads its first config
    ("ssh.user", True),                # Ignition creates the login user at first boot
    ("network.pod_cidr", True),        # the host's pod subnet lease and CNI set-up
    ("network.service_cidr", True),    # the API service IP, cluster DNS and every kubelet's flags
    ("network.flannel.backend", True),  # the host's overlay interface
    ("host.etcd", True),               # an etcd member's data directory and peer identity
    ("pools[", None),                  # decided by the pool field below
)
POOL_FIELDS_FORCING_REPLACEMENT = ("size",)
# Pool fields that do not reach the host's config (sizes are the plan's business).
POOL_FIELDS_IGNORED = ("name", "role", "count", "min", "max")


def _plain(value: object) -> Any:
    """A spec value as JSON (tuples to lists, mappings to sorted dicts)."""
    if is_section(value):
        return {name: _plain(getattr(value, name)) for name in field_names(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _flatten(prefix: str, value: object, out: dict[str, Any]) -> None:
    """Dataclasses become dotted paths; mappings and lists stay whole values (a new key in
    `labels` is a change of `labels`, not a new field that older records lack)."""
    if is_section(value):
        for name in field_names(value):
            _flatten(f"{prefix}.{name}", getattr(value, name), out)
    else:
        out[prefix] = _plain(value)


def boot_fields(spec: Spec, host: HostPlan, desired: Iterable[HostPlan]) -> dict[str, Any]:
    """The spec fields that go into `host`'s config, by dotted name, as JSON values."""
    out: dict[str, Any] = {"provider.name": spec.provider.name}
    _flatten("provider", spec.provider.options, out)
    for section in ("os", "ssh", "etcd", "network", "fleet", "kubernetes", "artifacts", "pki"):
        _flatten(section, getattr(spec, section), out)
    out.pop("etcd.count", None)  # membership: cluster.etcd_members says what it changes
    out.pop("etcd.placement", None)  # likewise, through host.etcd and cluster.etcd_members
    if spec.headroom is not None:  # the host agent's key TTL is in every config
        out["headroom.load_ttl"] = spec.headroom.load_ttl
    pool = spec.pool(host.pool)
    for name in field_names(pool):
        if name not in POOL_FIELDS_IGNORED:
            out[f"pools[{pool.name}].{name}"] = _plain(getattr(pool, name))
    desired = list(desired)
    out["host.etcd"] = bool(host.etcd)
    out["cluster.etcd_members"] = sorted(h.name for h in desired if h.etcd)  # every host's etcd endpoints
    masters = [h for h in desired if h.role == "master"]  # plan order, as render takes the first
    if host.role == "master":  # the API server certificate names every master
        out["cluster.masters"] = [h.name for h in masters]
    else:  # where kubelet finds the API: the first extra name, else the first master
        first = masters[0] if masters else None
        out["cluster.api_endpoint"] = (spec.kubernetes.api_server_names[0] if spec.kubernetes.api_server_names
                                       else (first.address or first.name) if first else None)
    return out


def config_digest(config: bytes) -> str:
    return hashlib.sha256(config).hexdigest()


def boot_record(spec: Spec, host: HostPlan, desired: Iterable[HostPlan], config: bytes | None) -> dict[str, Any]:
    """What `machines` records about the config a host is created with."""
    record: dict[str, Any] = {"fields": boot_fields(spec, host, desired)}
    if config is not None:
        record["config_sha256"] = config_digest(config)
    return record


def forces_replacement(name: str) -> bool:
    for prefix, forces in FORCES_REPLACEMENT:
        if name == prefix or (prefix.endswith((".", "[")) and name.startswith(prefix)):
            if forces is None:  # pools[<pool>].<field>
                return name.rsplit(".", 1)[-1] in POOL_FIELDS_FORCING_REPLACEMENT
            return forces
    return False


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any
    forces_replacement: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class HostChange:
    name: str
    action: str  # keep | update | replace | unknown
    fields: tuple[FieldChange, ...] = ()
    because: str = ""  # why, when no spec field is the cause (its rendered config changed)
    replacement: str = ""  # replace only: create before destroy | destroy before create

    @property
    def reason(self) -> str:
        if self.action == UNKNOWN:
            return "state has no record of the config this host booted with (made by an older provision)"
        if not self.fields:
            return self.because
        forcing = [c.field for c in self.fields if c.forces_replacement]
        others = [c.field for c in self.fields if not c.forces_replacement]
        parts = [f"{', '.join(forcing)} (forces replacement)"] if forcing else []
        parts += [", ".join(others)] if others else []
        parts += [self.replacement] if self.action == REPLACE and self.replacement else []
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "because": self.reason,
                               "fields": [c.to_json() for c in self.fields],
                               "forces_replacement": [c.field for c in self.fields if c.forces_replacement]}
        if self.action == REPLACE and self.replacement:
            out["replacement"] = self.replacement
        return out


def compare_fields(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Fields whose value differs. A field the record lacks was added to provision after the
    host was made: it is not a change (the host runs with what that field's default now says)."""
    changes = []
    for name in sorted(set(recorded) | set(wanted)):
        if name not in recorded:
            continue
        old, new = recorded.get(name), wanted.get(name)
        if old != new:
            changes.append(FieldChange(name, old, new, forces_replacement(name)))
    return tuple(changes)


def host_change(spec: Spec, host: HostPlan, desired: Iterable[HostPlan], entry: Mapping[str, Any]) -> HostChange:
    record = entry.get(BOOT)
    if not isinstance(record, Mapping) or not isinstance(record.get("fields"), Mapping):
        return HostChange(host.name, UNKNOWN)
    fields = compare_fields(record["fields"], boot_fields(spec, host, desired))
    if not fields:
        return HostChange(host.name, KEEP)
    if any(c.forces_replacement for c in fields):
        return HostChange(host.name, REPLACE, fields, replacement=replacement_strategy(host.role, bool(host.etcd)))
    return HostChange(host.name, UPDATE, fields)


def host_changes(spec: Spec, state: Mapping[str, Any], current: Plan) -> dict[str, HostChange]:
    """For every host the plan keeps: keep, update in place, replace or unknown, and why."""
    recorded = state.get("hosts") or {}
    desired = current.desired
    return {h.name: host_change(spec, h, desired, recorded.get(h.name) or {}) for h in current.keep}
