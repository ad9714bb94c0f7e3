"""`provision doctor`: what is wrong with this machine or a cluster, each with what to do.

Machine checks: the tools and Python modules the spec's provider needs, and the permissions of
the local state (0700 directories, 0600 secrets). Cluster checks, from state: certificates
expiring within `EXPIRY_DAYS`, etcd health and quorum (when members are recorded), hosts in
the cloud but not in state and the reverse, drift between what a host booted with and what
would render now, and the API server's /healthz (when a master is recorded).

Each check returns `Check` results; I/O stays in the check functions, the verdict is pure.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import ssl
import stat
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from . import tunnel
from .errors import ActionError
from .providers.base import UNIT_STATES

if TYPE_CHECKING:
    from .providers.base import Provider
    from .providers.pools import PoolProviders
    from .spec import Spec
    from .state import StateStore

EXPIRY_DAYS = 30
API_TIMEOUT = 3.0
API_PORT = 6443
API_UNITS = ("kubelet.service", "kube-apiserver.service")  # the API server is a static pod of kubelet

# What each provider runs on this machine: executables (name or absolute path) and Python modules.
IGNITION_ENGINE = "/usr/lib/dracut/modules.d/30ignition/ignition"
PROVIDER_TOOLS: dict[str, tuple[str, ...]] = {
    "local": ("ip", "unshare", "ssh-keygen", "ssh", IGNITION_ENGINE),
    "vagrant": ("vagrant", "ssh"),
    "aws": ("ssh",),
    "openstack": ("ssh",),
    "libcloud": ("ssh",),
}
PROVIDER_MODULES: dict[str, tuple[str, ...]] = {
    "aws": ("boto3",),
    "openstack": ("openstack",),
    "libcloud": ("libcloud",),
}
PUBLIC_SUFFIXES = (".crt", ".pub")  # everything else in state is a secret
STATE_AREAS = ("pki", "rendered", "cache")  # blob trees of the local state backend


@dataclass(frozen=True)
class Finding:
    """A problem: which check found it, what it is, and what to do about it."""

    check: str
    problem: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """One check run: `ok`, a one-line `detail`, and its findings (empty when ok)."""

    name: str
    ok: bool
    detail: str
    findings: tuple[Finding, ...] = ()
    skipped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "skipped": self.skipped, "detail": self.detail,
                "findings": [f.to_json() for f in self.findings]}


def _result(name: str, findings: list[Finding], ok_detail: str) -> Check:
    if findings:
        return Check(name, False, f"{len(findings)} finding(s)", tuple(findings))
    return Check(name, True, ok_detail)


def skipped(name: str, why: str) -> Check:
    return Check(name, True, why, skipped=True)


# ---- machine ---------------------------------------------------------------------------------

def check_tools(provider: str, with_etcd: bool, which: Callable[[str], str | None] = shutil.which,
                has_module: Callable[[str], bool] | None = None) -> Check:
    """Executables and Python modules the provider (and etcd checks) need on this machine."""
    has_module = has_module or (lambda name: importlib.util.find_spec(name) is not None)
    findings = []
    tools = PROVIDER_TOOLS.get(provider, ()) + (("etcdctl",) if with_etcd else ())
    for tool in tools:
        present = os.access(tool, os.X_OK) if tool.startswith("/") else which(tool) is not None
        if not present:
            findings.append(Finding("tools", f"{tool} is not installed; provider {provider} needs it",
                                    f"install it (see the README's set-up for provider {provider})"))
    for module in PROVIDER_MODULES.get(provider, ()):
        if not has_module(module):
            findings.append(Finding("tools", f"Python module {module} is not installed; provider {provider} needs it",
                                    f"pip install {module} into provision's environment"))
    return _result("tools", findings, f"{len(tools)} tool(s) and {len(PROVIDER_MODULES.get(provider, ()))} "
                                      "module(s) present")


def state_paths(root: Path) -> list[Path]:
    """What provision keeps in a local cluster state directory: the directory, the files in it
    (state.json and its backups, lock, kubeconfig) and the blob trees (PKI, rendered configs,
    their cache). Provider scratch (the local provider's host roots) is not state."""
    paths = [root] + sorted(p for p in root.iterdir() if p.is_file())
    for area in STATE_AREAS:
        if (root / area).is_dir():
            paths += [root / area] + sorted((root / area).rglob("*"))
    return paths


def permission_findings(root: Path) -> list[Finding]:
    """State directories must be 0700, secret files 0600, and no file writable by others."""
    findings: list[Finding] = []
    if not root.is_dir():
        return findings
    paths = state_paths(root)
    for path in paths:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        shown = f"{mode:04o}"
        if path.is_dir():
            if mode & 0o077:
                findings.append(Finding("permissions", f"{path} is mode {shown}, not 0700",
                                        f"chmod 700 {path}"))
        elif not path.name.endswith(PUBLIC_SUFFIXES):
            if mode & 0o077:
                findings.append(Finding("permissions", f"{path} holds a secret and is mode {shown}, not 0600",
                                        f"chmod 600 {path}; if others could read it, rotate what it holds "
                                        "(provision pki rotate SPEC)"))
        elif mode & 0o022:
            findings.append(Finding("permissions", f"{path} is writable by others (mode {shown})",
                                    f"chmod 644 {path}"))
    return findings


def check_permissions(store: StateStore) -> Check:
    root = getattr(store, "root", None)
    if root is None:
        return skipped("permissions", f"state backend {store.backend}: no local files to check")
    if not Path(root).exists():
        return skipped("permissions", "no state directory yet")
    return _result("permissions", permission_findings(Path(root)), f"{root}: 0700 directories, 0600 secrets")


# ---- cluster ---------------------------------------------------------------------------------

def certificate_findings(certs: Sequence[Mapping[str, Any]], within_days: int = EXPIRY_DAYS) -> list[Finding]:
    """Certificates that expire within `within_days`, are expired, unreadable or do not verify.
    One leaf expiring: renew that one; several: renew every leaf in one go."""
    def expiring(cert: Mapping[str, Any]) -> bool:
        return cert.get("days_left") is not None and cert["days_left"] < within_days

    from .pki_ca import ROTATABLE
    rotate_ca_option = {ca: option for option, ca in ROTATABLE.items()}  # CA blob name -> `--ca` value
    leaves = [c for c in certs if not c.get("error") and not c.get("ca") and expiring(c)]
    renew = (f"provision pki rotate SPEC --leaf {leaves[0]['name']}" if len(leaves) == 1
             else "provision pki rotate SPEC (renews every leaf)")
    renew += "; then provision up SPEC rolls them onto the running hosts"
    findings = []
    for cert in certs:
        name = cert["name"]
        if cert.get("error"):
            findings.append(Finding("certificates", f"certificate {name}: {cert['error']}",
                                    f"make it again: provision pki rotate SPEC --leaf {name}"))
            continue
        fix = renew
        if cert.get("ca"):  # every CA provision makes is rotatable (provision.pki_ca)
            fix = (f"provision pki rotate-ca SPEC --ca {rotate_ca_option.get(name, name)}, then provision up SPEC; "
                   "three times (one phase each)")
        if expiring(cert) and cert["days_left"] < 0:
            findings.append(Finding("certificates", f"certificate {name} expired on {cert['not_after']}", fix))
        elif expiring(cert):
            findings.append(Finding("certificates", f"certificate {name} expires in {cert['days_left']} day(s), on "
                                                     f"{cert['not_after']}", fix))
        if not cert.get("verified"):
            findings.append(Finding("certificates", f"certificate {name} does not verify against the cluster's CA",
                                    f"make it again: provision pki rotate SPEC --leaf {name}"))
    return findings


def check_certificates(spec: Spec, store: StateStore) -> Check:
    from . import pki
    certs = pki.show(spec, store)
    if not certs:
        return skipped("certificates", "no certificates in state yet")
    return _result("certificates", certificate_findings(certs),
                   f"{len(certs)} certificate(s), none expiring within {EXPIRY_DAYS} days")


def quorum_findings(health: Mapping[str, Mapping[str, Any]], members: int) -> list[Finding]:
    """Unhealthy endpoints, and lost quorum (fewer than a majority of `members` healthy)."""
    findings = []
    healthy = sum(1 for h in health.values() if h.get("healthy"))
    needed = members // 2 + 1
    for endpoint, h in sorted(health.items()):
        if not h.get("healthy"):
            findings.append(Finding("etcd", f"etcd member {endpoint} is not healthy: {h.get('error') or '?'}",
                                    "look at its etcd unit on that host (provision status SPEC shows the units)"))
    if members and healthy < needed:
        findings.append(Finding("etcd", f"etcd has no quorum: {healthy} of {members} members healthy, "
                                        f"{needed} needed; the cluster cannot change anything",
                                "bring members back first; do not remove or replace members while quorum is lost"))
    return findings


def check_etcd(spec: Spec, store: StateStore, state: Mapping[str, Any]) -> Check:
    from .status import etcd_picture
    picture = etcd_picture(spec, store, state)
    if not picture["endpoints"]:
        return skipped("etcd", "no etcd member recorded in state")
    findings = quorum_findings(picture["health"], len(picture["endpoints"]))
    if picture.get("error") and not findings:
        findings.append(Finding("etcd", f"etcd: {picture['error']}", "provision status SPEC shows more"))
    return _result("etcd", findings, f"{len(picture['endpoints'])} member(s) healthy, quorum held")


def check_inventory(state: Mapping[str, Any], provider: Provider | PoolProviders) -> Check:
    from .providers.base import compare
    try:
        listed = provider.list_hosts()
    except Exception as err:  # a cloud that cannot answer is a finding, not a crash
        return Check("inventory", False, "cannot list hosts",
                     (Finding("inventory", f"the provider cannot list hosts: {err}",
                              "check the provider's credentials and reachability"),))
    diff = compare(state.get("hosts") or {}, listed)
    findings = [Finding("inventory", f"host {name} is in the cloud but not in state",
                        "remove it with provision down SPEC, or it keeps costing money") for name in diff["orphans"]]
    findings += [Finding("inventory", f"host {name} is in state but gone from the cloud",
                         "provision up SPEC re-creates it") for name in diff["missing"]]
    return _result("inventory", findings, f"{len(listed)} host(s) in the cloud, all in state")


def drift_findings(changes: Mapping[str, Any], digests: Mapping[str, tuple[str | None, str | None]]) -> list[Finding]:
    """Hosts whose recorded spec fields or config digest differ from what would render now.
    `changes`: changes.host_changes; `digests`: host -> (recorded sha256, would-render sha256)."""
    findings = []
    for name, change in sorted(changes.items()):
        if change.action in ("update", "replace"):
            findings.append(Finding("drift", f"host {name} needs {'replacement' if change.action == 'replace' else 'an in-place update'}: "
                                             f"{change.reason}",
                                    "`provision up SPEC` applies it (its rollout phase; `provision plan SPEC` shows it first)"))
    for name, (recorded, now) in sorted(digests.items()):
        if recorded and now and recorded != now and changes.get(name) is not None \
                and changes[name].action == "keep":
            findings.append(Finding("drift", f"host {name} booted with a config that differs from what renders now "
                                             "(certificates or templates changed, no spec field did)",
                                    "`provision up SPEC` updates it in place (its rollout phase)"))
    return findings


def check_drift(spec: Spec, store: StateStore, state: Mapping[str, Any], provider: Provider | PoolProviders) -> Check:
    from .changes import BOOT, config_digest, host_changes
    from .plan import plan
    hosts = state.get("hosts") or {}
    if not any(BOOT in (h or {}) for h in hosts.values()):
        return skipped("drift", "no host with a recorded boot config in state")
    current = plan(spec, state)
    changes = host_changes(spec, state, current)
    digests: dict[str, tuple[str | None, str | None]] = {}
    try:
        from .render import render_cluster
        served = None if state.get("artifacts") else provider.artifacts()
        view = dict(state, artifacts=served) if served else state  # as the render phase sees state
        rendered = render_cluster(spec, view, store, current.desired)
        for host in current.keep:
            recorded = (hosts[host.name].get(BOOT) or {}).get("config_sha256")
            digests[host.name] = (recorded, config_digest(rendered.config_for(host.name)))
    except Exception as err:  # noqa: BLE001 - a config that cannot render is reported, spec drift still is
        return Check("drift", False, "cannot render", tuple(drift_findings(changes, {})) + (
            Finding("drift", f"cannot render the current configs to compare: {err}",
                    "provision up SPEC --until render says why"),))
    return _result("drift", drift_findings(changes, digests), f"{len(changes)} host(s) match what would render")


def check_api(spec: Spec, store: StateStore, state: Mapping[str, Any], provider: Provider | PoolProviders) -> Check:
    """GET https://<master>:6443/healthz with the admin certificate, for each recorded master."""
    masters = {n: h for n, h in sorted((state.get("hosts") or {}).items())
               if h.get("role") == "master" and (h.get("ssh_address") or h.get("address"))}
    if not masters:
        return skipped("api", "no master recorded in state")
    findings, reachable = [], 0
    for name, host in masters.items():
        units = provider.unit_states(name) if UNIT_STATES in provider.optional_capabilities else {}
        if any((units.get(unit) or {}).get("state") == "skipped" for unit in API_UNITS):
            continue  # the provider could not run it here (no binary): nothing to reach
        address = host.get("address") or host.get("ssh_address")
        try:
            from .pki_ca import trusted_blob  # the old and the new CA while a rotation has both
            context = ssl.create_default_context(cafile=str(store.blob_path(trusted_blob(store, "pki/ca.crt"))))
            context.load_cert_chain(str(store.blob_path("pki/admin.crt")), str(store.blob_path("pki/admin.key")))
            # over SSH through a master, like every other operator connection (see tunnel)
            [(via, port)] = tunnel.reach(spec, store, state, [(address, API_PORT)])
            with urllib.request.urlopen(f"https://{via}:{port}/healthz", timeout=API_TIMEOUT,
                                        context=context) as response:
                body = response.read(100).decode(errors="replace").strip()
            if body == "ok":
                reachable += 1
                continue
            problem = f"the API server on {name} answers /healthz with {body!r}"
        except (OSError, urllib.error.URLError, ssl.SSLError, ActionError) as err:
            problem = f"the API server on {name} ({address}:{API_PORT}) is not reachable: {getattr(err, 'reason', err)}"
        findings.append(Finding("api", problem, "look at kube-apiserver on that host (provision status SPEC)"))
    if not findings and not reachable:
        return skipped("api", "no API server runs here: the provider skipped kubelet, which runs it as a static pod")
    return _result("api", findings, f"{reachable} API server(s) answer /healthz")


def run_checks(spec: Spec, store: StateStore, state: Mapping[str, Any], provider: Provider | PoolProviders) -> list[Check]:
    """Every check, machine first, then cluster."""
    from .etcd.cluster import member_urls
    checks = [check_tools(spec.provider.name, bool(member_urls(state))), check_permissions(store),
              check_certificates(spec, store), check_etcd(spec, store, state), check_inventory(state, provider),
              check_drift(spec, store, state, provider), check_api(spec, store, state, provider)]
    return checks


def findings_of(checks: Sequence[Check]) -> list[Finding]:
    return [f for c in checks for f in c.findings]
