"""Phase `pki`: create or reuse the CAs, the cluster's certificates and keys, the bootstrap
token and provision's SSH key pair, stored as secrets in the state store. Each host agent's own
etcd certificate is not made here but as the host is bootstrapped (phase `secrets`, `pki_agents`):
a render of 1,000 workers makes only the cluster's."""
from __future__ import annotations

from .. import pki
from ..files import batched_sync
from . import RunContext
from .endpoint import spec_with_endpoint


def run(ctx: RunContext) -> dict:
    hosts = ctx.plan().desired
    spec = spec_with_endpoint(ctx.spec, ctx.state)  # the API load balancer's name in the certificate
    if ctx.dry_run:
        wanted = pki.wanted_certs(spec, hosts)
        missing = [w.name for w in wanted if ctx.store.read_blob(f"{pki.PREFIX}{w.name}.crt") is None]
        ctx.log("pki", f"would check {len(wanted)} certificates for {len(hosts)} hosts; "
                       f"{len(missing)} not made yet")
        return {"dry_run": True, "missing": missing}
    with batched_sync():  # a new PKI is some fifty new files: synced together, not one by one
        summary = pki.ensure_pki(spec, ctx.store, hosts, log=lambda message: ctx.log("pki", message))
    return {"created": summary["created"], "reused": len(summary["reused"])}
