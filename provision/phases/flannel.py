"""Phase `flannel`: write the flannel network config into etcd only if it is absent (the way
coreos-kubernetes did: create-only, "already exists" is success), with the v2 or v3 API the
spec's flannel speaks; then check each node's flannel pieces over SSH (role `flannel`)."""
from __future__ import annotations

from .. import bootstrap
from .. import cluster_etcd
from .. import faults
from . import RunContext


def run(ctx: RunContext) -> dict:
    spec = ctx.spec
    api = spec.network.flannel.etcd_api
    want = cluster_etcd.flannel_config(spec)
    nodes = bootstrap.cluster_hosts(ctx.state, roles=("master", "worker"))
    if ctx.dry_run:
        ctx.log("flannel", f"would create {cluster_etcd.FLANNEL_KEY} ({api}) = {want} if absent")
        return {"dry_run": True, "config": want}
    access = cluster_etcd.etcd_access(ctx.store, ctx.state)
    create = cluster_etcd.v3_create if api == "v3" else cluster_etcd.v2_create
    get = cluster_etcd.v3_get if api == "v3" else cluster_etcd.v2_get
    created = create(access, cluster_etcd.FLANNEL_KEY, want)
    faults.point(faults.FIRST_WRITE)
    current = want if created else get(access, cluster_etcd.FLANNEL_KEY)
    if created:
        ctx.log("flannel", f"created {cluster_etcd.FLANNEL_KEY} ({api}): {want}")
    elif current == want:
        ctx.log("flannel", f"{cluster_etcd.FLANNEL_KEY} ({api}) already holds the spec's network: no change")
    else:
        # Changing the pod network under running flanneld breaks every lease: never overwrite.
        ctx.ui.warn(f"{cluster_etcd.FLANNEL_KEY} holds {current}, the spec asks {want}; left unchanged")
    result = bootstrap.apply_roles(ctx, "flannel", ("flannel",), nodes)
    return {**result, "created": created, "config": current}
