"""Phase `masters`: each master has its control-plane files and services (role `masters`).

On a running cluster, the first master applies the addons again first (role `addons`) when
the addon files rendered now differ from what state records as last applied
(`provision.addons`): a cluster made by an earlier version gets kube-proxy's DaemonSet this way.
Only once the addons are recorded applied do the node roles remove kube-proxy's retired static
pod and shared key (here for masters, in `workers` for workers), so no node is left without
kube-proxy in between.
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import addons, bootstrap
from . import RunContext


def retired_removal(ctx: RunContext, hosts: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(role data, convergence record fields) for the node roles: remove the retired files once
    the addons are recorded applied; the record field makes every host run its role once then."""
    if addons.applied(ctx.state) is None:
        return {"remove_retired": False}, {}
    return {"remove_retired": True}, {name: addons.record_fields(ctx.state, "masters") for name in hosts}


def apply_addons(ctx: RunContext, hosts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """Apply the addons on the first master when they differ from what it last applied."""
    from .. import pki
    from ..render import render_files
    first = next((h.name for h in ctx.plan().desired if h.role == "master"), None)
    if first is None or first not in hosts:
        return None
    files = addons.addon_files(render_files(ctx.spec, ctx.state, ctx.store, ctx.plan().desired, [first])[first])
    if not files or not addons.needs_apply(ctx.state, first, files):
        return {"host": first, "applied": False}
    if ctx.dry_run:
        ctx.log("masters", f"{first}: would apply the addons ({len(files)} files differ from what it last applied)")
        return {"host": first, "applied": False, "dry_run": True}
    ctx.log("masters", f"{first}: the addons differ from what it last applied: applying them")
    outcomes = bootstrap.run_roles(ctx.spec, ctx.store.workdir, {first: hosts[first]}, ("addons",),
                                   pki.ssh_private_key_path(ctx.store), cluster=bootstrap.cluster_hosts(ctx.state),
                                   host_only={first: {"addon_files": [[p, f.mode, f.data] for p, f in files.items()]}})
    _, problems = bootstrap.summarize(outcomes, False)
    for note in outcomes[first].notes:
        ctx.log("masters", f"{first}: {note}")
    bootstrap.raise_problems("masters", problems)  # the retired files stay until a run applies them
    addons.record_applied(ctx.state, first, files)
    ctx.save()
    return {"host": first, "applied": True, "written": outcomes[first].extra.get("written", [])}


def run(ctx: RunContext) -> dict:
    hosts = bootstrap.cluster_hosts(ctx.state, roles=("master",))
    if ctx.dry_run and hosts:
        ctx.log("masters", f"would check {len(hosts)} masters: {', '.join(hosts)}")
    applied = apply_addons(ctx, hosts)
    data, extra = retired_removal(ctx, hosts)
    result = bootstrap.apply_roles(ctx, "masters", ("masters",), hosts, data=data, record_extra=extra)
    if applied is not None:
        result["addons"] = applied
    return result
