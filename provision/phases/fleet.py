"""Phase `fleet`: every host's fleet configuration publishes its metadata (role=<role>,pool=<pool>)
and fleetd is enabled (role `fleet`). Off when `fleet.enabled` is false."""
from __future__ import annotations

from .. import bootstrap
from . import RunContext


def run(ctx: RunContext) -> dict:
    if not ctx.spec.fleet.enabled:
        ctx.log("fleet", "fleet.enabled is false: nothing to do")
        return {"enabled": False}
    hosts = bootstrap.cluster_hosts(ctx.state)
    if ctx.dry_run:
        ctx.log("fleet", f"would check fleet metadata on {len(hosts) or len(bootstrap.planned_names(ctx))} hosts")
        return {"dry_run": True}
    return bootstrap.apply_roles(ctx, "fleet", ("fleet",), hosts)
