"""Phase `masters`: each master has its control-plane files and services (role `masters`)."""
from __future__ import annotations

from .. import bootstrap
from . import RunContext


def run(ctx: RunContext) -> dict:
    hosts = bootstrap.cluster_hosts(ctx.state, roles=("master",))
    if ctx.dry_run and hosts:
        ctx.log("masters", f"would check {len(hosts)} masters: {', '.join(hosts)}")
    return bootstrap.apply_roles(ctx, "masters", ("masters",), hosts)
