"""Phase `secrets`: each host's private keys and tokens, delivered over SSH (role `secrets`).

Boot configs carry certificates, CA bundles and units only (Typhoon's model): nothing a host,
its cloud's metadata service or a pod on it fetches at boot holds a key. Right after `wait`
and `hosts` (every host answers SSH and resolves the cluster's names), this phase writes each
host's secret files (what its role templates mark `secret: true`: the etcd member's server and
peer keys, the etcd client keys, the control plane's keys, the bootstrap token, and the host
agent's own etcd certificate and key, issued here when state has none yet) root-owned,
0600, in 0700 directories. The services that read them retry until they are there.

Targeted like the other bootstrap phases: a host's convergence record for this phase carries
the sha256 of its secret files (`secrets`), so `scale` delivers to new hosts only, a no-op `up`
to none, and a changed key (after `pki rotate`) is delivered again, restarting its reader.
"""
from __future__ import annotations

import hashlib
import posixpath
from typing import TYPE_CHECKING, Any, Collection, Mapping, Sequence

from .. import bootstrap, pki, pki_agents
from ..files import batched_sync
from ..render import render_secrets
from ..render.machine import File
from . import RunContext

if TYPE_CHECKING:
    from ..plan import HostPlan

# Directories that hold secrets and nothing another user needs: kept 0700, root's.
PRIVATE_DIRS = ("/etc/kubernetes/addons", "/etc/kubernetes/pki", "/etc/ssl/etcd")


def bundle_digest(files: Mapping[str, File]) -> str:
    """sha256 over the paths, modes and contents of a host's secret files (what its record keeps)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        f = files[path]
        digest.update(f"{path}\0{f.mode:o}\0".encode())
        digest.update(hashlib.sha256(f.data or b"").digest())
    return digest.hexdigest()


def role_data(files: Mapping[str, File]) -> dict[str, Any]:
    """The role's host data: [path, mode, bytes] of each file, and the private directories."""
    return {"secret_files": [[path, files[path].mode, files[path].data or b""] for path in sorted(files)],
            "secret_dirs": sorted({posixpath.dirname(p) for p in files} & set(PRIVATE_DIRS))}


def deliverable(ctx: RunContext, desired: Sequence[HostPlan],
                names: Sequence[str]) -> tuple[dict[str, dict[str, File]], list[str]]:
    """(the secret files of each of `names` (see `render_secrets`), the agent certificates issued):
    the hosts' agents' etcd certificates are issued first where state has none fit for use
    (`pki_agents`: made as a host is bootstrapped, not at render), written with one durable
    sync. In dry-run nothing is issued: a host still without its certificate is said and left out."""
    issued: list[str] = []
    if ctx.dry_run:
        lacking = pki_agents.missing(ctx.store, names)
        if lacking:
            ctx.log("secrets", pki.summarize("would issue the agent certificate of", lacking)
                    + " and deliver their keys")
        names = [name for name in names if name not in lacking]
    else:
        with batched_sync():
            made = pki_agents.ensure(ctx.spec, ctx.store, names, log=lambda message: ctx.log("secrets", message))
        issued = made["created"]
    return render_secrets(ctx.spec, ctx.state, ctx.store, desired, names), issued


def run(ctx: RunContext, names: Collection[str] | None = None) -> dict:
    """Deliver every planned host's secret files (or only those of `names`: an in-place update
    delivers a batch's renewed keys before it restarts anything)."""
    hosts = bootstrap.cluster_hosts(ctx.state)
    desired = ctx.plan().desired
    planned = {h.name for h in desired if names is None or h.name in names}
    hosts = {name: host for name, host in hosts.items() if name in planned}
    if not hosts:
        return bootstrap.apply_roles(ctx, "secrets", ("secrets",), hosts)
    secrets, issued = deliverable(ctx, desired, sorted(hosts))
    hosts = {name: host for name, host in hosts.items() if name in secrets}
    host_only = {name: role_data(files) for name, files in secrets.items()}
    digests = {name: {"secrets": bundle_digest(files)} for name, files in secrets.items()}
    result = bootstrap.apply_roles(ctx, "secrets", ("secrets",), hosts, host_only=host_only,
                                   record_extra=digests)
    # Paths only: a phase result reaches --output json and logs, and never holds a secret.
    return {**result, "files": {name: sorted(files) for name, files in sorted(secrets.items())
                                if name in result["hosts"]}, "agent_certificates_issued": issued}
