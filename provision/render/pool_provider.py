"""The config of a worker pool with a provider of its own (cloud bursting, `pools[].provider`):
shaped for the pool's provider, not the cluster's.

- One config per host or per pool as the pool's provider needs (a Vagrant pool names each
  node's private address; an AWS pool beside a Vagrant cluster shares one config).
- The API endpoint as seen from the pool's network: the cluster's load balancer when it has a
  public address, else the node-local proxy to the masters' public addresses (their recorded
  ones, when state has them; the cluster's own addresses otherwise, which the pool reaches only
  through the VPN `validate` asks for).
- Its nodes say where they run: the node label `provision.io/provider` and fleet's metadata
  `provider=`, so workloads can keep off (or go to) the burst hosts.
- kube-proxy reaches the API as the node's kubelet does. Its kubeconfig is a ConfigMap, one per
  DaemonSet, so when burst nodes reach the API another way than the cluster's workers (the
  cluster's load balancer is private), they get a DaemonSet and ConfigMap of their own
  (`kube-proxy-burst`, on nodes with the label) and the cluster's DaemonSet keeps off them.
  When the split ends (no pool of another provider left, or the burst nodes reach the API as
  the cluster's do), the first master's addon apply deletes those two objects again: state
  records that they were applied (`addons.record_applied`), and from then on the addons carry
  a `prune` file naming them while the spec makes none (deleting what is gone is success).

Pools without a provider of their own render exactly as before (the same bytes).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from ..plan import HostPlan
    from ..spec import PoolSpec, Spec

PROVIDER_LABEL = "provision.io/provider"
# The addons of burst nodes' kube-proxy, applied right after the cluster's kube-proxy DaemonSet.
KUBE_PROXY_BURST_ADDONS = ("kube-proxy-burst-configmap.yaml", "kube-proxy-burst-daemonset.yaml")
# Their objects, as the addons' prune file names them (API collection path, name).
KUBE_PROXY_BURST_OBJECTS = (("/api/v1/namespaces/kube-system/configmaps", "kube-proxy-burst"),
                            ("/apis/apps/v1/namespaces/kube-system/daemonsets", "kube-proxy-burst"))
PRUNE_ADDON = "prune"
# state["addons"][BURST_APPLIED]: the burst kube-proxy was applied to this cluster once
BURST_APPLIED = "burst_kube_proxy"


def provider_name(spec: Spec, pool: PoolSpec) -> str:
    """The name of the provider that makes `pool`'s hosts."""
    return pool.provider.name if pool.provider is not None else spec.provider.name


def per_host_pools(spec: Spec, node_address_providers: Sequence[str]) -> frozenset[str]:
    """The worker pools whose hosts get a config each (their provider needs the node's address)."""
    return frozenset(p.name for p in spec.worker_pools if provider_name(spec, p) in node_address_providers)


def outside_view(state: Mapping[str, Any], masters: Sequence[HostPlan]) -> dict[str, Any]:
    """How a host outside the cluster's network reaches the API: whether the recorded load
    balancer is public (an OpenStack one whose address is its private VIP is not), and the
    node-local proxy's backends at the masters' public addresses where state records them."""
    endpoint = state.get("api_endpoint") or {}
    public_lb = bool(endpoint.get("dns_name")) and endpoint.get("dns_name") != endpoint.get("vip_address")
    hosts = state.get("hosts") or {}
    backends = []
    for m in masters:
        entry = hosts.get(m.name) or {}
        address = entry.get("public_address") or m.address or entry.get("address")
        backends.append({"name": m.name, "address": address or m.name, "is_address": bool(address)})
    return {"public_lb": public_lb, "backends": backends}


def shape(ctx: dict[str, Any], spec: Spec, pool: PoolSpec) -> dict[str, Any]:
    """The machine context `ctx` of a worker of `pool`, shaped for the pool's own provider."""
    if pool.provider is None:
        return ctx
    name = pool.provider.name
    ctx["node_labels"] = ",".join(sorted([*ctx["node_labels"].split(","), f"{PROVIDER_LABEL}={name}"]))
    ctx["fleet_metadata"] = f"{ctx['fleet_metadata']},provider={name}"
    outside = ctx["outside"]
    if not outside["public_lb"]:
        ctx.update({"api_proxy": True, "worker_api_url": f"https://127.0.0.1:{ctx['api_proxy_port']}",
                    "api_proxy_backends": outside["backends"]})
        ctx["node_api_url"] = ctx["worker_api_url"]
    return ctx


def burst_api_url(base: Mapping[str, Any]) -> str:
    """The API URL a burst worker's kubelet is configured with (`shape`), from the cluster's
    render context `base`."""
    if base["outside"]["public_lb"]:
        return str(base["worker_api_url"])
    return f"https://127.0.0.1:{base['api_proxy_port']}"


def with_burst_kube_proxy(spec: Spec, state: Mapping[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The cluster's render context with `kube_proxy_burst_url` set: the API URL of burst nodes'
    kube-proxy when it differs from the cluster's workers' (None otherwise), and then the
    addons that run it. With none, the addons are the same bytes as without any burst pool,
    unless `state` records them applied once: then `addons_prune` names their objects and the
    `prune` addon file lists them for the first master's apply to delete."""
    own = any(p.provider is not None for p in spec.worker_pools)
    url = burst_api_url(base) if own else None
    base["kube_proxy_burst_url"] = url if url != base["worker_api_url"] else None
    base["provider_label"] = PROVIDER_LABEL
    base["addons_prune"] = ()
    if base["kube_proxy_burst_url"] is not None:
        addons = list(base["addons"])
        at = addons.index("kube-proxy-daemonset.yaml") + 1
        base["addons"] = (*addons[:at], *KUBE_PROXY_BURST_ADDONS, *addons[at:])
    elif (state.get("addons") or {}).get(BURST_APPLIED):
        base["addons_prune"] = KUBE_PROXY_BURST_OBJECTS
        base["addons"] = (*base["addons"], PRUNE_ADDON)
    return base
