"""Phase `workers`: each worker has what it needs to join and runs the host-load agent (role
`workers`)."""
from __future__ import annotations

from .. import bootstrap
from . import RunContext


def run(ctx: RunContext) -> dict:
    hosts = bootstrap.cluster_hosts(ctx.state, roles=("worker",))
    if ctx.dry_run and hosts:
        ctx.log("workers", f"would check {len(hosts)} workers: {', '.join(hosts)}")
    return bootstrap.apply_roles(ctx, "workers", ("workers",), hosts)
