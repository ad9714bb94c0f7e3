"""Where headroom's observations come from: the hosts from the provider's tagged list, their
load from etcd keys the host agents publish, or from the Kubernetes API.

Reading (etcd, Kubernetes) is at the edges (`read_*`); turning what was read into an
`Observation` is pure (`observe_*`), so both are tested apart.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ActionError, UserError
from ..state_etcd import etcd_client  # noqa: F401  (re-exported: the load source uses it)
from .policy import READY, UNKNOWN, UNREADY, HostLoad, Observation


@dataclass(frozen=True)
class InventoryHost:
    """A host the provider lists for the cluster, with what decides whether it may go."""

    name: str
    pool: str
    role: str
    etcd: bool = False
    # The host's private address: a node that registered under another name (a worker pool's
    # config sets no host name, so kubelet takes the cloud's DHCP name) is found by its InternalIP.
    address: str | None = None


def inventory(records: Iterable[Any], state: Mapping[str, Any]) -> list[InventoryHost]:
    """Hosts from the provider's tagged list (HostRecord-like objects). A host state does not
    know is still counted; an etcd member is known from state, or by its role."""
    recorded = state.get("hosts", {})
    out = []
    for r in records:
        if getattr(r, "state", "running") == "terminated":
            continue
        etcd_member = bool(recorded.get(r.name, {}).get("etcd")) or r.role in ("master", "etcd")
        address = (getattr(r, "private_address", None) or recorded.get(r.name, {}).get("address")
                   or getattr(r, "public_address", None))
        out.append(InventoryHost(r.name, r.pool, r.role, etcd_member, address))
    return sorted(out, key=lambda h: h.name)


# ---- source etcd -------------------------------------------------------------------------

def hosts_key(cluster: str) -> str:
    return f"/provision/{cluster}/hosts"


def load_key(cluster: str, host: str) -> str:
    """The key a host agent publishes its load under (spec-v1)."""
    return f"{hosts_key(cluster)}/{host}/load"


def drain_key(cluster: str, host: str) -> str:
    """The key that tells a host's agent and fleet units to stop taking work."""
    return f"{hosts_key(cluster)}/{host}/drain"


def read_etcd_loads(client: Any, cluster: str) -> dict[str, str]:
    """Raw load documents by host name; hosts whose key expired are simply absent."""
    import etcd
    try:
        result = client.read(hosts_key(cluster), recursive=True)
    except etcd.EtcdKeyNotFound:
        return {}
    except etcd.EtcdException as err:
        raise ActionError(f"etcd: cannot read {hosts_key(cluster)}: {err}") from None
    out = {}
    prefix = hosts_key(cluster) + "/"
    for node in result.leaves:
        key = node.key or ""
        if key.startswith(prefix) and key.endswith("/load") and node.value is not None:
            out[key[len(prefix):-len("/load")]] = node.value
    return out


def parse_load(raw: str | None, now: float, max_age: float) -> dict[str, float] | None:
    """A load document if it is well formed and fresh (`at` within `max_age`), else None."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        containers = doc["containers"]
        cpu, memory, at = float(doc["cpu"]), float(doc["memory"]), float(doc["at"])
    except (ValueError, TypeError, KeyError):
        return None
    if isinstance(containers, bool) or not isinstance(containers, int) or containers < 0:
        return None
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in (cpu, memory)) or not math.isfinite(at):
        return None
    if now - at > max_age or at - now > max_age:  # stale, or from a clock far ahead
        return None
    return {"containers": containers, "cpu": cpu, "memory": memory}


def observe_etcd(hosts: Sequence[InventoryHost], loads: Mapping[str, str], now: float, max_age: float) -> Observation:
    """Every listed host with its fresh load; a host without one is unknown, never idle."""
    out = []
    for h in hosts:
        load = parse_load(loads.get(h.name), now, max_age)
        if load is None:
            out.append(HostLoad(h.name, h.pool, h.role, UNKNOWN, etcd=h.etcd))
        else:
            out.append(HostLoad(h.name, h.pool, h.role, READY, etcd=h.etcd, **load))
    return Observation(at=now, hosts=tuple(out), source="etcd")


# ---- source kubernetes -------------------------------------------------------------------

def kubernetes_api(kubeconfig: str):
    """CoreV1Api for a kubeconfig file."""
    from kubernetes import client, config
    try:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
    except (config.ConfigException, OSError) as err:
        raise UserError(f"headroom.kubeconfig: cannot use {kubeconfig}: {err}") from None
    return client.CoreV1Api(api_client)


def read_kubernetes(api: Any) -> tuple[list[Any], list[Any]]:
    """Nodes and pods (every namespace) from the API server."""
    from kubernetes.client.exceptions import ApiException
    try:
        return api.list_node().items, api.list_pod_for_all_namespaces().items
    except (ApiException, OSError) as err:
        raise ActionError(f"kubernetes: cannot list nodes and pods: {err}") from None
    except Exception as err:  # urllib3 connection errors
        raise ActionError(f"kubernetes: cannot reach the API server: {err}") from None


def quantity(value: Any) -> float:
    from kubernetes.utils.quantity import parse_quantity
    return float(parse_quantity(value)) if value not in (None, "") else 0.0


def pod_requests(pod: Any) -> tuple[float, float]:
    cpu = mem = 0.0
    for c in pod.spec.containers or []:
        req = (c.resources.requests if c.resources else None) or {}
        cpu += quantity(req.get("cpu"))
        mem += quantity(req.get("memory"))
    return cpu, mem


def counts_as_work(pod: Any) -> bool:
    """Pods a host runs for the workload: not DaemonSet or mirror pods, not finished."""
    if pod.status and pod.status.phase in ("Succeeded", "Failed"):
        return False
    owners = pod.metadata.owner_references or []
    if any(o.kind == "DaemonSet" for o in owners):
        return False
    return "kubernetes.io/config.mirror" not in (pod.metadata.annotations or {})


def node_status(node: Any) -> str:
    for cond in (node.status.conditions or []) if node.status else []:
        if cond.type == "Ready":
            return {"True": READY, "False": UNREADY}.get(cond.status, UNKNOWN)
    return UNKNOWN


def node_internal_ips(node: Any) -> set[str]:
    addresses = (node.status.addresses or []) if node.status else []
    return {a.address for a in addresses if a.type == "InternalIP"}


def node_names(hosts: Sequence[InventoryHost], nodes: Sequence[Any]) -> dict[str, str]:
    """{host name: the name its node registered under}: the same name, else the node whose
    InternalIP is the host's address."""
    names = {n.metadata.name for n in nodes}
    by_ip = {ip: n.metadata.name for n in nodes for ip in node_internal_ips(n)}
    out = {}
    for h in hosts:
        if h.name in names:
            out[h.name] = h.name
        elif h.address and h.address in by_ip:
            out[h.name] = by_ip[h.address]
    return out


def observe_kubernetes(hosts: Sequence[InventoryHost], nodes: Sequence[Any], pods: Sequence[Any],
                       now: float) -> Observation:
    """Hosts with their share of allocatable CPU and memory requested, pod counts, readiness,
    and pending pods (in hosts of the average allocatable). A host's node is the one of its
    name, else the one whose InternalIP is the host's address (`node_names`)."""
    by_node = {n.metadata.name: n for n in nodes}
    registered = node_names(hosts, nodes)
    work: dict[str, list[Any]] = {}
    pending = []
    for p in pods:
        if not counts_as_work(p):
            continue
        node_name = p.spec.node_name
        if node_name:
            work.setdefault(node_name, []).append(p)
        elif p.status and p.status.phase == "Pending":
            pending.append(p)
    out, alloc_cpu, alloc_mem = [], [], []
    for h in hosts:
        node_name = registered.get(h.name)
        node = by_node.get(node_name) if node_name else None
        if node is None:
            out.append(HostLoad(h.name, h.pool, h.role, UNKNOWN, etcd=h.etcd))
            continue
        allocatable = node.status.allocatable or {}
        cpu_cap, mem_cap = quantity(allocatable.get("cpu")), quantity(allocatable.get("memory"))
        cpu_req = sum(pod_requests(p)[0] for p in work.get(node_name, []))
        mem_req = sum(pod_requests(p)[1] for p in work.get(node_name, []))
        if cpu_cap > 0 and mem_cap > 0:
            alloc_cpu.append(cpu_cap)
            alloc_mem.append(mem_cap)
        out.append(HostLoad(h.name, h.pool, h.role, node_status(node), etcd=h.etcd,
                            containers=len(work.get(node_name, [])),
                            cpu=min(1.0, cpu_req / cpu_cap) if cpu_cap else 1.0,
                            memory=min(1.0, mem_req / mem_cap) if mem_cap else 1.0))
    mean_cpu = sum(alloc_cpu) / len(alloc_cpu) if alloc_cpu else 0.0
    mean_mem = sum(alloc_mem) / len(alloc_mem) if alloc_mem else 0.0
    pcpu = sum(pod_requests(p)[0] for p in pending)
    pmem = sum(pod_requests(p)[1] for p in pending)
    return Observation(at=now, hosts=tuple(out), pending=len(pending),
                       pending_cpu=pcpu / mean_cpu if mean_cpu else 0.0,
                       pending_memory=pmem / mean_mem if mean_mem else 0.0, source="kubernetes")


def node_pods(api: Any, node: str) -> list[Any]:
    """Workload pods still on `node` (what a drain waits for)."""
    pods = api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    return [p for p in pods if counts_as_work(p)]


def cordon(api: Any, node: str) -> None:
    """Mark `node` unschedulable: no new pods land on it."""
    api.patch_node(node, {"spec": {"unschedulable": True}})


def uncordon(api: Any, node: str) -> None:
    """Let pods land on `node` again (its drain was abandoned)."""
    api.patch_node(node, {"spec": {"unschedulable": False}})
