"""Phase `validate`: the spec was loaded and checked before any phase runs; report it, and
refuse (nothing made yet) a pool of another provider whose needs the rules provision makes
certainly block (cloud bursting: `providers.burst_reach`)."""
from __future__ import annotations

from ..errors import UserError
from . import RunContext


def run(ctx: RunContext) -> dict:
    spec = ctx.spec
    hosts = sum(p.count for p in spec.pools)
    ctx.log("validate", f"spec {spec.name!r}: provider {spec.provider.name}, {len(spec.pools)} pools, "
                        f"{hosts} hosts at start, etcd x{spec.etcd.count} ({spec.etcd.placement})")
    if not any(p.provider is not None for p in spec.pools):
        return {"valid": True}
    from ..providers.burst_reach import blocked_lines
    from ..providers.pools import pool_providers_needs
    own = pool_providers_needs(spec, ctx.state)
    blocked = blocked_lines(own)
    if blocked:
        raise UserError(blocked)
    for entry in own:
        for reach in entry["reach"]:
            ctx.log("validate", f"pool {entry['pool']} on {entry['provider']}: {reach['what']}: {reach['status']}")
    return {"valid": True, "pool_providers": [{"pool": e["pool"], "reach": {r["need"]: r["status"] for r in e["reach"]}}
                                              for e in own]}
