"""Phase `flannel`: write the flannel network config into etcd only if it is absent (the way
coreos-kubernetes did: create-only, "already exists" is success), with the v2 or v3 API the
spec's flannel speaks; then check each node's flannel pieces over SSH (role `flannel`).

The config found or written is recorded in state (`state["etcd"]["flannel_config"]`): with the
same config recorded and no etcd member new or changed in this run (phase `etcd`), the etcd
round trips are skipped (`scale`, a no-op `up`); `up --verify` asks etcd again."""
from __future__ import annotations

import hashlib
import json

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
    record = config_record(api, want)
    if not must_ask_etcd(ctx, record):
        ctx.log("flannel", f"{FLANNEL_KEY} ({api}) holds the spec's network, as recorded in state")
        result = bootstrap.apply_roles(ctx, "flannel", ("flannel",), nodes)
        return {**result, "created": False, "config": want, "etcd_checked": False}
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
    if current == want:
        ctx.state.setdefault("etcd", {})[RECORD] = record
    else:  # left unchanged and warned about: asked again next time
        (ctx.state.get("etcd") or {}).pop(RECORD, None)
    ctx.save()
    result = bootstrap.apply_roles(ctx, "flannel", ("flannel",), nodes)
    return {**result, "created": created, "config": current, "etcd_checked": True}


RECORD = "flannel_config"  # state["etcd"][RECORD]: digest of the config last found in etcd


def config_record(api: str, config: object) -> str:
    """sha256 of the etcd API and the config (what the record keeps)."""
    return hashlib.sha256(json.dumps([api, config], sort_keys=True).encode()).hexdigest()


def must_ask_etcd(ctx: RunContext, record: str) -> bool:
    """Whether etcd is asked: when verifying, when state records another config (or none), or
    when the `etcd` phase of this run acted on a member (a new member may be a new cluster)."""
    etcd_result = ctx.results.get("etcd") or {}
    return (bootstrap.verifying(ctx) or (ctx.state.get("etcd") or {}).get(RECORD) != record
            or bool(etcd_result.get("hosts")))
