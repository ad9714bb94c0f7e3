"""In-place updates: a running host gets the files and units of its newly rendered config over
SSH, and the units those files belong to are restarted. Generic on purpose: whatever the render
puts in a host's config (certificates, flags, environment files, kubeconfigs, manifests) is
delivered the same way, so any change `provision.changes` calls an `update` reaches the host.

What a config holds is read from its Ignition JSON (`storage.files`, `systemd.units`); only
what differs on the host is written (role `inplace` compares digests first), and a unit is
restarted when its own file changed or when a changed path, or a directory holding it, is named
in the unit or in an environment file the unit reads. Hosts are changed as `provision.rollout`
batches them; an etcd member's batch waits until etcd is healthy with every member again.
"""
from __future__ import annotations

import base64
import gzip
import json
import posixpath
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .errors import ActionError

if TYPE_CHECKING:
    from .phases import RunContext
    from .plan import HostPlan
    from .providers.base import Provider
    from .providers.pools import PoolProviders

UNIT_DIR = "/etc/systemd/system"
# Directories too general to tie a unit to every file under them.
TOO_GENERAL = frozenset({"/", "/etc", "/opt", "/usr", "/var", "/var/lib", "/run", "/home", "/etc/systemd",
                         "/etc/systemd/system", "/opt/bin", "/usr/bin", "/usr/local", "/usr/local/bin"})


@dataclass
class Payload:
    """What one host's config puts on it: files ({path: (mode, bytes)}), downloaded files
    ({path: (mode, url, "sha512-<hex>")}) and unit files ({name: text})."""

    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    downloads: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        """As pyinfra host data (JSON-able): each file's bytes base64, unit files under UNIT_DIR."""
        files = {path: {"mode": mode, "data": base64.b64encode(data).decode()}
                 for path, (mode, data) in self.files.items()}
        for name, text in self.units.items():
            files[unit_path(name)] = {"mode": 0o644, "data": base64.b64encode(text.encode()).decode()}
        downloads = {path: {"mode": mode, "url": url, "hash": digest}
                     for path, (mode, url, digest) in self.downloads.items()}
        return {"files": dict(sorted(files.items())), "downloads": dict(sorted(downloads.items()))}


def unit_path(name: str) -> str:
    return f"{UNIT_DIR}/{name}"


def decode_data_url(url: str, where: str) -> bytes:
    """The bytes of a `data:` URL (base64 or percent-encoded), as Ignition reads it."""
    if not url.startswith("data:") or "," not in url:
        raise ActionError(f"in-place update: {where}: not a data URL")
    meta, _, body = url[5:].partition(",")
    if meta.endswith(";base64"):
        return base64.b64decode(body)
    return urllib.parse.unquote_to_bytes(body)


def payload_of(config: bytes) -> Payload:
    """What an Ignition config writes: its files (inline or downloaded) and its units."""
    try:
        doc = json.loads(config)
    except ValueError:
        raise ActionError("in-place update: the host's config is not Ignition JSON (cloud-config hosts are "
                          "changed by replacement only)") from None
    if not isinstance(doc, dict) or "ignition" not in doc:
        raise ActionError("in-place update: the host's config is not an Ignition config")
    out = Payload()
    for entry in (doc.get("storage") or {}).get("files") or []:
        path, mode = entry["path"], int(entry.get("mode", 0o644))
        contents = entry.get("contents") or {}
        source = contents.get("source") or "data:,"
        if source.startswith("data:"):
            data = decode_data_url(source, path)
            if contents.get("compression") == "gzip":
                data = gzip.decompress(data)
            elif contents.get("compression"):
                raise ActionError(f"in-place update: {path}: compression {contents['compression']!r} is not "
                                  "one Ignition writes")
            out.files[path] = (mode, data)
        else:
            out.downloads[path] = (mode, source, (contents.get("verification") or {}).get("hash", ""))
    for unit in (doc.get("systemd") or {}).get("units") or []:
        if unit.get("contents") is not None:
            out.units[unit["name"]] = unit["contents"]
    return out


def _ancestors(path: str) -> list[str]:
    out: list[str] = []
    while True:
        path = posixpath.dirname(path)
        if path in TOO_GENERAL or path in ("", "/"):
            return out
        out.append(path)


def environment_files(unit_text: str) -> list[str]:
    """Paths of the unit's `EnvironmentFile=` lines (a leading `-` means optional)."""
    out = []
    for line in unit_text.splitlines():
        key, _, value = line.strip().partition("=")
        if key.strip() == "EnvironmentFile":
            out.append(value.strip().lstrip("-"))
    return out


def is_oneshot(unit_text: str) -> bool:
    return any(line.replace(" ", "") == "Type=oneshot" for line in unit_text.splitlines())


def units_to_restart(payload: Payload, changed: Iterable[str]) -> list[str]:
    """Units touched by the changed paths: its own unit file, or a changed path (or a directory
    holding it) named in the unit's text or in an environment file the unit reads. Oneshot
    units are left alone."""
    changed = set(changed)
    out = []
    for name, text in sorted(payload.units.items()):
        if is_oneshot(text):  # its work is first-boot work; a restart would redo it
            continue
        if unit_path(name) in changed:
            out.append(name)
            continue
        texts = [text] + [payload.files[p][1].decode(errors="replace") for p in environment_files(text)
                          if p in payload.files]
        names = set(environment_files(text))
        for path in changed:
            if path in names or any(path in t or any(a in t for a in _ancestors(path)) for t in texts):
                out.append(name)
                break
    return out


def update_hosts(ctx: RunContext, provider: Provider | PoolProviders, hosts: Sequence[HostPlan], desired: Sequence[HostPlan]) -> dict[str, list[str]]:
    """Write each host's changed files over SSH, restart the units they belong to, wait until
    etcd is healthy again when a member was touched, and record the config the host now
    carries. Returns {host: units restarted}."""
    from . import bootstrap, pki
    from .etcd import cluster as etcd_cluster
    from .changes import BOOT, boot_record
    from .phases.machines import rendered_configs
    log = lambda m: ctx.log("rollout", m)  # noqa: E731
    configs = rendered_configs(ctx, hosts)
    payloads: dict[str, Payload] = {}
    for host in hosts:
        config = configs.get(host.name)
        if config is None:
            raise ActionError(f"rollout: no rendered config for {host.name}; run the render phase again")
        payloads[host.name] = payload_of(config)
    targets = {h.name: ctx.state["hosts"][h.name] for h in hosts}
    # Renewed keys first, each with its certificate in one archive (role `secrets`), so no
    # service is restarted with a new certificate and its old key; the config's copies of those
    # certificates are then the same and not written again.
    from .phases import secrets as secrets_phase
    delivered = secrets_phase.run(ctx, names=list(targets))["hosts"]
    data = {"inplace": {name: p.to_data() for name, p in payloads.items()}}
    outcomes = bootstrap.run_roles(ctx.spec, ctx.store.workdir, targets, ("inplace",),
                                   pki.ssh_private_key_path(ctx.store), cluster=bootstrap.cluster_hosts(ctx.state),
                                   data=data)
    problems = [f"{name}: {o.error}" for name, o in sorted(outcomes.items()) if o.error]
    if problems:
        raise ActionError([f"rollout: {p}" for p in problems])
    restarted: dict[str, list[str]] = {}
    for host in hosts:
        written = outcomes[host.name].extra.get("written", [])
        keys = (delivered.get(host.name) or {}).get("written", [])
        units = units_to_restart(payloads[host.name], [*written, *keys])
        restarted[host.name] = units
        if units and not provider.restart_units(host.name, units):
            restart_over_ssh(ctx, targets[host.name], host.name, units)
        log(f"{host.name}: updated in place: {len(written)} file(s) written"
            + (f" ({', '.join(written)})" if written else "")
            + (f"; {len(keys)} secret file(s) delivered ({', '.join(keys)})" if keys else "")
            + (f"; restarted {', '.join(units)}" if units else ""))
    if any(h.etcd for h in hosts):
        expected = len(bootstrap.cluster_hosts(ctx.state, etcd=True))
        etcd_cluster.connect(ctx.spec, ctx.store, ctx.state).wait_healthy(
            expected, 180.0, log=lambda m: ctx.ui.debug("rollout", m))
    for host in hosts:
        ctx.state["hosts"][host.name][BOOT] = boot_record(ctx.spec, host, desired, configs[host.name])
    ctx.save()
    return restarted


def restart_over_ssh(ctx: RunContext, host_state: Mapping[str, Any], name: str, units: Sequence[str]) -> None:
    from . import bootstrap, pki
    outcomes = bootstrap.run_roles(ctx.spec, ctx.store.workdir, {name: host_state}, ("inplace_restart",),
                                   pki.ssh_private_key_path(ctx.store), cluster=bootstrap.cluster_hosts(ctx.state),
                                   data={"restart_units": list(units)})
    if outcomes[name].error:
        raise ActionError(f"rollout: {name}: restarting {', '.join(units)} failed: {outcomes[name].error}")
