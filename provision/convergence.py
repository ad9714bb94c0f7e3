"""Per-host convergence records: what each bootstrap phase last converged on each host, so a
re-run acts only on the hosts whose record differs (new, replaced or changed).

`state["convergence"][HOST][PHASE]` is recorded after the phase's roles succeeded on HOST:

- `config`: sha256 of the host's rendered config (its machine config: certificates, units,
  files), so a changed spec, a renewed certificate or a re-render is seen;
- `roles`: the role version, sha256 of every file of the `roles/` folder (a role change
  re-runs it everywhere);
- what the roles read about the host: its addresses, provider id, pinned host key, role,
  pool, etcd membership and the SSH user.

A host whose record is missing or differs in anything is always bootstrapped; `up --verify`
(and a dry run) re-checks every host regardless of its record.
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .resources import data_dir

if TYPE_CHECKING:
    from .render.machine import File

RECORDS = "convergence"
RENDERED_INDEX = "rendered/index.json"
RENDERED = "rendered/"

_role_version: str | None = None


def role_version() -> str:
    """sha256 over the names and bytes of every file in `roles/` (computed once per process)."""
    global _role_version
    if _role_version is None:
        digest = hashlib.sha256()
        folder = data_dir("roles")
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        _role_version = digest.hexdigest()
    return _role_version


def config_digests(store, names: Iterable[str]) -> dict[str, str | None]:
    """sha256 of each host's rendered config as the render phase stored it (None when state
    holds no rendered config for the host: such a record never matches a later one that has)."""
    names = list(names)
    raw = store.read_blob(RENDERED_INDEX)
    try:
        index = json.loads(raw)["hosts"] if raw is not None else {}
    except (ValueError, KeyError, TypeError):
        index = {}
    by_file: dict[str, str | None] = {}
    out: dict[str, str | None] = {}
    for name in names:
        file_name = (index.get(name) or {}).get("config")
        if not file_name:
            out[name] = None
            continue
        if file_name not in by_file:
            data = store.read_blob(RENDERED + file_name)
            by_file[file_name] = hashlib.sha256(data).hexdigest() if data is not None else None
        out[name] = by_file[file_name]
    return out


def wanted_records(spec, store, hosts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The record each of `hosts` ({name: state host}) gets once a phase converged on it now."""
    configs = config_digests(store, hosts)
    version = role_version()
    return {name: {"config": configs[name], "roles": version,
                   "address": host.get("address"), "ssh_address": host.get("ssh_address") or host.get("address"),
                   "provider_id": host.get("provider_id"), "host_key": host.get("host_key"),
                   "role": host.get("role"), "pool": host.get("pool"), "etcd": bool(host.get("etcd")),
                   "ssh_user": spec.ssh.user}
            for name, host in sorted(hosts.items())}


def phase_record(state: Mapping[str, Any], record: Mapping[str, Any], phase: str) -> dict[str, Any]:
    """`record` (from wanted_records) as `phase` records it: the node phases add what the addons
    ask of them (see addons.record_fields)."""
    from .addons import record_fields
    return {**record, **record_fields(state, phase)}


def recorded(state: Mapping[str, Any], name: str, phase: str) -> dict[str, Any] | None:
    return ((state.get(RECORDS) or {}).get(name) or {}).get(phase)


def stale_hosts(state: Mapping[str, Any], phase: str, wanted: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Names of the hosts whose record for `phase` is missing or differs from `wanted`."""
    return sorted(name for name, record in wanted.items() if recorded(state, name, phase) != dict(record))


def record(state: dict[str, Any], phase: str, records: Mapping[str, Mapping[str, Any]]) -> None:
    """Record that `phase` converged on each host of `records` (in memory; the caller saves)."""
    book = state.setdefault(RECORDS, {})
    for name, entry in records.items():
        book.setdefault(name, {})[phase] = dict(entry)


def forget(state: dict[str, Any], names: Iterable[str]) -> None:
    """Drop the records of hosts that were destroyed or (re-)created: they start from nothing."""
    book = state.get(RECORDS) or {}
    for name in names:
        book.pop(name, None)


def forget_phase(state: dict[str, Any], phase: str, names: Iterable[str]) -> None:
    """Drop `phase`'s record of each of `names` (it found a problem there)."""
    book = state.get(RECORDS) or {}
    for name in names:
        (book.get(name) or {}).pop(phase, None)


def never_converged(state: Mapping[str, Any], hosts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Hosts no phase recorded yet, or whose recorded SSH address or host key is not the
    host's now (the hosts whose SSH login is not proven by an earlier run)."""
    book = state.get(RECORDS) or {}
    out = []
    for name, host in sorted(hosts.items()):
        phases = book.get(name) or {}
        ssh = host.get("ssh_address") or host.get("address")
        if not phases or any(r.get("ssh_address") != ssh or r.get("host_key") != host.get("host_key")
                             for r in phases.values()):
            out.append(name)
    return out


def bootstrap_phases(spec, host: Mapping[str, Any]) -> list[str]:
    """The bootstrap phases whose roles run on `host` (the hosts each phase module selects)."""
    role = host.get("role")
    phases = ["etcd"] if host.get("etcd") else []
    if role in ("master", "worker"):
        phases.append("flannel")
    if spec.fleet.enabled:
        phases.append("fleet")
    if role == "master":
        phases.append("masters")
    elif role == "worker":
        phases.append("workers")
    return phases


def hosts_to_bootstrap(spec, store, state: Mapping[str, Any], hosts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Hosts on which some bootstrap phase will run its roles: a phase of the host has no
    record or one that differs from what it would record now (new, replaced, changed), or the
    host's SSH login is not proven. The `wait` phase checks these and leaves the others alone."""
    wanted = wanted_records(spec, store, hosts)
    out = set(never_converged(state, hosts))
    for name, host in hosts.items():
        if any(recorded(state, name, phase) != phase_record(state, wanted[name], phase)
               for phase in bootstrap_phases(spec, host)):
            out.add(name)
    return sorted(out)


def checked_files(phase: str) -> list[str]:
    """The files the role of bootstrap `phase` checks (its `FILES`), in the order it lists them."""
    from .bootstrap import load_role
    return list(getattr(load_role(phase), "FILES", ()))


def changed_files(spec, store, state: Mapping[str, Any], provider, names: Iterable[str]) -> dict[str, list[str]]:
    """{host: [paths]} of the files the bootstrap roles check whose mode, owner or contents on
    the host differ from its boot config's (root-owned, that mode and those bytes), read by a
    provider that sees a host's files without SSH (FILE_STATES); {} from any other provider.
    A host is left out when none differs."""
    from .plan import plan
    from .providers.base import FILE_STATES
    from .render import render_files
    if FILE_STATES not in provider.optional_capabilities:
        return {}
    desired = plan(spec, state).desired
    hosts = {h.name: h for h in desired}
    names = sorted(set(names) & set(hosts))
    if not names:
        return {}
    rendered = render_files(spec, state, store, desired, names)
    live = state.get("hosts") or {}
    out: dict[str, list[str]] = {}
    for name in names:
        paths = sorted({p for phase in bootstrap_phases(spec, live.get(name) or {}) for p in checked_files(phase)
                        if p in rendered[name] and rendered[name][p].data is not None})
        seen = provider.file_states(name, paths)
        differ = [p for p in paths if seen.get(p) is not None and seen[p] != _wanted_state(rendered[name][p])]
        if differ:
            out[name] = differ
    return out


def _wanted_state(f: "File") -> str:
    return f"{f.mode:o}:0:0 {hashlib.sha256(f.data or b'').hexdigest()}"
