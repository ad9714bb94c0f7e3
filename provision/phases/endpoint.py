"""Phase `endpoint`: the cloud load balancer in front of every master's kube-apiserver (AWS: a
Network Load Balancer; OpenStack: an Octavia load balancer; libcloud: the driver's load
balancer), found or made before the PKI so that the API server certificate and the workers'
configs carry its name (or address); recorded in `state["api_endpoint"]` ({"kind", "dns_name",
...}). Providers without one, and clouds that offer none, record none: workers then reach the
masters through the node-local proxy."""
from __future__ import annotations

from typing import Any, Mapping

from .. import faults
from ..spec import Spec
from . import RunContext

PHASE = "endpoint"


def endpoint_name(state: Mapping[str, Any]) -> str | None:
    """The load balancer's DNS name recorded in state, if the cluster has one."""
    return (state.get("api_endpoint") or {}).get("dns_name") or None


def spec_with_endpoint(spec: Spec, state: Mapping[str, Any]) -> Spec:
    """`spec` whose API server names also carry the load balancer's (for the certificate)."""
    name = endpoint_name(state)
    if not name or name in spec.kubernetes.api_server_names:
        return spec
    kubernetes = spec.kubernetes.model_copy(update={"api_server_names": (*spec.kubernetes.api_server_names, name)})
    return spec.model_copy(update={"kubernetes": kubernetes})


def run(ctx: RunContext) -> dict[str, Any]:
    from ..providers import get_provider
    log = lambda message: ctx.log(PHASE, message)  # noqa: E731
    provider = get_provider(ctx.spec, ctx.store.workdir, log=log)
    if not provider.api_load_balancer:
        log("no cloud load balancer: workers reach every master through the node-local proxy")
        return {"endpoint": None}
    if ctx.dry_run:
        log(f"would find or create the API load balancer (recorded: {endpoint_name(ctx.state) or 'none'})")
        return {"dry_run": True}
    endpoint = provider.ensure_api_endpoint()
    before = ctx.state.get("api_endpoint")
    if endpoint is None:
        ctx.state.pop("api_endpoint", None)
    else:
        ctx.state["api_endpoint"] = endpoint
        log(f"API load balancer {endpoint['dns_name']}:6443")
    if ctx.state.get("api_endpoint") != before:  # a run that changes nothing writes nothing
        ctx.save()
    faults.point(faults.FIRST_WRITE)
    return {"endpoint": endpoint}
