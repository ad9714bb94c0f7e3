"""Phase `validate`: the spec was loaded and checked before any phase runs; report it."""
from __future__ import annotations

from . import RunContext


def run(ctx: RunContext) -> dict:
    spec = ctx.spec
    hosts = sum(p.count for p in spec.pools)
    ctx.log("validate", f"spec {spec.name!r}: provider {spec.provider.name}, {len(spec.pools)} pools, "
                        f"{hosts} hosts at start, etcd x{spec.etcd.count} ({spec.etcd.placement})")
    return {"valid": True}
