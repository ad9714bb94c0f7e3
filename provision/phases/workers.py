"""Phase `workers`: each worker has what it needs to join and runs the host-load agent (role
`workers`)."""
from __future__ import annotations

from .. import bootstrap
from . import RunContext
from .masters import retired_removal


def run(ctx: RunContext) -> dict:
    hosts = bootstrap.cluster_hosts(ctx.state, roles=("worker",))
    if ctx.dry_run and hosts:
        ctx.log("workers", f"would check {len(hosts)} workers: {', '.join(hosts)}")
    # kube-proxy's retired static pod and key go once the addons are applied (phase `masters`)
    data, extra = retired_removal(ctx, hosts)
    return bootstrap.apply_roles(ctx, "workers", ("workers",), hosts, data=data, record_extra=extra)
