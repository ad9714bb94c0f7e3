"""Phase `flannel`: write the flannel network config into etcd only if it is absent (the way
coreos-kubernetes did: create-only, "already exists" is success), with the v2 or v3 API the
spec's flannel speaks; then check each node's flannel pieces over SSH (role `flannel`)."""
from __future__ import annotations

from .. import bootstrap
from .. import faults
from ..etcd import cluster, v2
from ..etcd.keys import FLANNEL_KEY, flannel_config
from . import RunContext


def run(ctx: RunContext) -> dict:
    spec = ctx.spec
    api = spec.network.flannel.etcd_api
    want = flannel_config(spec)
    nodes = bootstrap.cluster_hosts(ctx.state, roles=("master", "worker"))
    if ctx.dry_run:
        ctx.log("flannel", f"would create {FLANNEL_KEY} ({api}) = {want} if absent")
        return {"dry_run": True, "config": want}
    etcd = cluster.connect(spec, ctx.store, ctx.state, log=lambda m: ctx.ui.debug("flannel", m))
    if api == "v3":
        created = etcd.create(FLANNEL_KEY, want)
    else:
        created = v2.create(etcd, FLANNEL_KEY, want)
    faults.point(faults.FIRST_WRITE)
    current = want if created else (etcd.get(FLANNEL_KEY) if api == "v3" else v2.get(etcd, FLANNEL_KEY))
    if created:
        ctx.log("flannel", f"created {FLANNEL_KEY} ({api}): {want}")
    elif current == want:
        ctx.log("flannel", f"{FLANNEL_KEY} ({api}) already holds the spec's network: no change")
    else:
        # Changing the pod network under running flanneld breaks every lease: never overwrite.
        ctx.ui.warn(f"{FLANNEL_KEY} holds {current}, the spec asks {want}; left unchanged")
    result = bootstrap.apply_roles(ctx, "flannel", ("flannel",), nodes)
    return {**result, "created": created, "config": current}
