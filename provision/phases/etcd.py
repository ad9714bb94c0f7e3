"""Phase `etcd`: the members are configured (role `etcd` over SSH), then etcd lists every
planned member and each answers healthy, asked through the cluster's own client certificate
over SSH through a master; then each client identity gets its user and role and auth is
enabled (`etcd.auth`; a re-run changes nothing), and each host's agent its own user and role
(`etcd.host_identity`: made for hosts added since the last run, removed for hosts gone)."""
from __future__ import annotations

import hashlib
import json

from .. import bootstrap
from .. import pki
from ..etcd import auth, cluster, host_identity
from . import RunContext

HEALTH_TIMEOUT = 120.0


def run(ctx: RunContext) -> dict:
    members = bootstrap.cluster_hosts(ctx.state, etcd=True)
    if ctx.dry_run:
        names = sorted(members) or bootstrap.planned_names(ctx, etcd=True)
        ctx.log("etcd", f"would check {len(names)} members: {', '.join(names)}, then converge users, "
                        f"roles and auth ({', '.join(sorted(auth.wanted_roles(ctx.spec)))})")
        return {"dry_run": True, "members": names}
    result = bootstrap.apply_roles(ctx, "etcd", ("etcd",), members)
    etcd = cluster.connect(ctx.spec, ctx.store, ctx.state, log=lambda m: ctx.ui.debug("etcd", m))
    health = etcd.wait_healthy(len(members), HEALTH_TIMEOUT, log=lambda m: ctx.ui.debug("etcd", m))
    healthy = ", ".join(m["name"] for m in health["members"])
    ctx.log("etcd", f"{len(health['members'])} members healthy over TLS: {healthy}")
    wanted_auth = auth_digest(ctx.spec)
    recorded = (ctx.state.get("etcd") or {}).get(AUTH_RECORD)
    agents_wanted = sorted(h.name for h in ctx.plan().desired)
    # Users, roles and auth live in etcd: converged to this very spec (recorded), with no member
    # new or changed, some fifteen etcdctl round trips (seconds) are skipped on `scale` and a
    # no-op `up`; `up --verify` checks them again. Host agents' identities follow the hosts.
    check_auth = recorded != wanted_auth or bool(result.get("hosts")) or bootstrap.verifying(ctx)
    check_agents = check_auth or host_identity.recorded(ctx.state) != agents_wanted
    if not check_agents:
        ctx.log("etcd", "auth: users, roles and auth converged as recorded in state")
        return {**result, "members": health["members"], "health": health["health"], "auth_changes": [],
                "auth_checked": False}
    root = etcd.as_identity(pki.client_tls(ctx.store, "root"))
    changes: list[str] = []
    if check_auth:
        changes += auth.apply(root, etcd, ctx.spec)
        if ctx.spec.needs_etcd_v2:  # v2 has its own users and roles
            changes += auth.apply_v2(root, ctx.spec)
    new, gone, agents = host_identity.converge(root, ctx.spec.name, agents_wanted, host_identity.recorded(ctx.state))
    if new or gone or host_identity.recorded(ctx.state) != agents_wanted:
        ctx.state.setdefault("etcd", {})[host_identity.STATE_KEY] = agents_wanted
        host_identity.forget_certificates(ctx.store, gone)
        ctx.save()
        changes += [f"{len(new)} agent identities made", f"{len(gone)} removed"] if len(agents) > 4 else agents
    ctx.log("etcd", f"auth: {'; '.join(changes)}" if changes else "auth: users, roles and auth already as wanted")
    if check_auth:
        ctx.state.setdefault("etcd", {})[AUTH_RECORD] = wanted_auth
    ctx.save()
    return {**result, "members": health["members"], "health": health["health"], "auth_changes": changes,
            "auth_checked": check_auth}


AUTH_RECORD = "auth_converged"  # state["etcd"][AUTH_RECORD]: digest of the users and roles last converged


def auth_digest(spec) -> str:
    """sha256 of what etcd's auth is converged to: every role's permissions (v3, and v2 where
    a client speaks it)."""
    wanted = {name: sorted([p.key, p.prefix, p.access] for p in perms)
              for name, perms in auth.wanted_roles(spec).items()}
    v2 = {name: sorted(keys) for name, keys in auth.wanted_v2_roles(spec).items()} if spec.needs_etcd_v2 else None
    return hashlib.sha256(json.dumps([wanted, v2], sort_keys=True).encode()).hexdigest()
