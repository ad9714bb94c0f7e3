"""Where headroom's observations come from: the hosts from the provider's tagged list, their
load from etcd keys the host agents publish, or from the Kubernetes API.

Reading (etcd, Kubernetes) is at the edges (`read_*`); turning what was read into an
`Observation` is pure (`observe_*`), so both are tested apart.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence

from ..errors import ActionError, UserError
from ..etcd.client import Etcd
from ..etcd.keys import drain_key, hosts_key, load_key  # noqa: F401  (the layout the agents publish)
from .policy import BOOTING, CLAMPED, PROVISIONING_BOUND, READY, UNKNOWN, UNREADY, Observation
from .policy_model import HostColumns, observed

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api

    from ..providers.base import HostRecord


class KubeObject(Protocol):
    """A node or pod as the Kubernetes client returns it (KubeObject, KubeObject). The client types
    metadata, spec and status as optional; the API server always fills them for these kinds,
    and observe reads them as such."""

    @property
    def metadata(self) -> Any: ...

    @property
    def spec(self) -> Any: ...

    @property
    def status(self) -> Any: ...


@dataclass(frozen=True)
class InventoryHost:
    """A host the provider lists for the cluster, with what decides whether it may go."""

    name: str
    pool: str
    role: str
    etcd: bool = False
    pending: bool = False  # the provider still reports it as starting
    # what finds its Kubernetes node when the node is not named after the host (worker pool
    # configs set no host name: kubelet registers the cloud's DHCP name): its addresses and
    # the node name state recorded for it
    addresses: tuple[str, ...] = ()
    node: str | None = None


def silent_status(host: InventoryHost, added: Mapping[str, float], now: float,
                  bound: float = PROVISIONING_BOUND) -> str:
    """A host with nothing to report: booting while the provider says it is starting or
    headroom added it less than `bound` ago (cluster-autoscaler's provisioning time), else
    unknown. Neither is capacity nor idle."""
    since = added.get(host.name)
    if host.pending or (since is not None and now - since <= bound):
        return BOOTING
    return UNKNOWN


def inventory(records: Iterable[HostRecord], state: Mapping[str, Any]) -> list[InventoryHost]:
    """Hosts from the provider's tagged list (HostRecord-like objects). A host state does not
    know is still counted; an etcd member is known from state, or by its role."""
    recorded = state.get("hosts", {})
    out = []
    for r in records:
        if getattr(r, "state", "running") == "terminated":
            continue
        entry = recorded.get(r.name, {})
        etcd_member = bool(entry.get("etcd")) or r.role in ("master", "etcd")
        addresses = (entry.get("address"), getattr(r, "private_address", None), getattr(r, "public_address", None))
        out.append(InventoryHost(r.name, r.pool, r.role, etcd_member,
                                 pending=getattr(r, "state", "running") == "pending",
                                 addresses=tuple(dict.fromkeys(a for a in addresses if a)),
                                 node=entry.get("node")))
    return sorted(out, key=lambda h: h.name)


def node_addresses(node: KubeObject) -> set[str]:
    """The InternalIP and ExternalIP addresses a node's kubelet reports."""
    return {a.address for a in ((node.status.addresses or []) if node.status else [])
            if a.type in ("InternalIP", "ExternalIP")}


def match_nodes(hosts: Sequence[InventoryHost], nodes: Sequence[KubeObject]) -> dict[str, str]:
    """Host name -> the name of its Kubernetes node: the node named after the host, else the
    node state recorded for it, else the one node reporting one of the host's addresses. A node
    belongs to one host at most; a host with no node is absent."""
    names = {n.metadata.name for n in nodes}
    out: dict[str, str] = {}
    for h in hosts:
        if h.name in names:
            out[h.name] = h.name
    for h in hosts:
        if h.name not in out and h.node is not None and h.node in names and h.node not in out.values():
            out[h.name] = h.node
    taken = set(out.values())
    for h in hosts:
        if h.name in out or not h.addresses:
            continue
        found = [n.metadata.name for n in nodes
                 if n.metadata.name not in taken and node_addresses(n) & set(h.addresses)]
        if len(found) == 1:
            out[h.name] = found[0]
            taken.add(found[0])
    return out


# ---- source etcd -------------------------------------------------------------------------

def read_etcd_loads(client: Etcd, cluster: str) -> dict[str, str]:
    """Raw load documents by host name from etcd's v3 keyspace; a key
    lives as long as its lease, so a host whose agent stopped is simply absent."""
    prefix = hosts_key(cluster) + "/"
    try:
        found = client.get_prefix(prefix)
    except ActionError as err:
        raise ActionError(f"etcd: cannot read {hosts_key(cluster)}: {err}") from None
    return {key[len(prefix):-len("/load")]: value for key, (value, _lease) in sorted(found.items())
            if key.endswith("/load") and "/" not in key[len(prefix):-len("/load")]}


def parse_load(raw: str | None, now: float, max_age: float | None = None) -> dict[str, Any] | None:
    """A load document if it is well formed, else None. Fractions outside 0..1 (a saturated
    host may report cpu above 1) are clamped and flagged, never dropped: the host's containers
    still count. The key's lease says it is fresh, so the agent's own clock (`at`) is only
    checked when `max_age` is given (a document read without a lease)."""
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
    if not all(math.isfinite(v) for v in (cpu, memory, at)):
        return None
    if max_age is not None and (now - at > max_age or at - now > max_age):
        return None
    flags: tuple[str, ...] = ()
    if not (0 <= cpu <= 1 and 0 <= memory <= 1):
        flags = (CLAMPED,)
        cpu, memory = min(1.0, max(0.0, cpu)), min(1.0, max(0.0, memory))
    return {"containers": containers, "cpu": cpu, "memory": memory, "flags": flags}


def observe_etcd(hosts: Sequence[InventoryHost], loads: Mapping[str, str], now: float,
                 max_age: float | None = None, added: Mapping[str, float] | None = None) -> Observation:
    """Every listed host with its load; a host without a live key is booting or unknown,
    never idle. Read into columns (`observed`), which the decision sums and records."""
    columns = HostColumns()
    for h in hosts:
        load = parse_load(loads.get(h.name), now, max_age)
        if load is None:
            columns.add(h.name, h.pool, h.role, silent_status(h, added or {}, now), h.etcd)
        else:
            columns.add(h.name, h.pool, h.role, READY, h.etcd, load["containers"], load["cpu"], load["memory"],
                        load["flags"])
    return observed(now, columns.lists, source="etcd")


def drained_by_report(raw: str | None) -> bool:
    """Whether a host's load report says it runs nothing. Only a report of zero containers
    counts: a missing key (agent stopped, lease expired, host cut off) proves nothing."""
    load = parse_load(raw, 0.0)
    return load is not None and load["containers"] == 0


# ---- source kubernetes -------------------------------------------------------------------

def kubernetes_api(kubeconfig: str, route: Callable[[str, int], tuple[str, int]] | None = None) -> CoreV1Api:
    """CoreV1Api for a kubeconfig file. `route(host, port)` says where this machine connects to
    reach the kubeconfig's server (a port forwarded over SSH); TLS still checks the server's
    own name."""
    from urllib.parse import urlsplit

    from kubernetes import client, config
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    except (config.ConfigException, OSError) as err:
        raise UserError(f"headroom.kubeconfig: cannot use {kubeconfig}: {err}") from None
    if route is not None:
        server = urlsplit(configuration.host)
        host, port = route(server.hostname or "", server.port or (443 if server.scheme == "https" else 80))
        configuration.tls_server_name = server.hostname
        configuration.host = f"{server.scheme}://{host}:{port}{server.path}"
    return client.CoreV1Api(client.ApiClient(configuration))


def read_kubernetes(api: CoreV1Api) -> tuple[Sequence[KubeObject], Sequence[KubeObject]]:
    """Nodes and pods (every namespace) from the API server."""
    from kubernetes.client.exceptions import ApiException
    try:
        return api.list_node().items, api.list_pod_for_all_namespaces().items
    except (ApiException, OSError) as err:
        raise ActionError(f"kubernetes: cannot list nodes and pods: {err}") from None
    except Exception as err:  # urllib3 connection errors
        raise ActionError(f"kubernetes: cannot reach the API server: {err}") from None


def quantity(value: str | int | float | None) -> float:
    from kubernetes.utils.quantity import parse_quantity
    return float(parse_quantity(value)) if value not in (None, "") else 0.0


def pod_requests(pod: KubeObject) -> tuple[float, float]:
    cpu = mem = 0.0
    for c in pod.spec.containers or []:
        req = (c.resources.requests if c.resources else None) or {}
        cpu += quantity(req.get("cpu"))
        mem += quantity(req.get("memory"))
    return cpu, mem


def counts_as_work(pod: KubeObject) -> bool:
    """Pods a host runs for the workload: not DaemonSet or mirror pods, not finished."""
    if pod.status and pod.status.phase in ("Succeeded", "Failed"):
        return False
    owners = pod.metadata.owner_references or []
    if any(o.kind == "DaemonSet" for o in owners):
        return False
    return "kubernetes.io/config.mirror" not in (pod.metadata.annotations or {})


def node_status(node: KubeObject) -> str:
    for cond in (node.status.conditions or []) if node.status else []:
        if cond.type == "Ready":
            return {"True": READY, "False": UNREADY}.get(cond.status, UNKNOWN)
    return UNKNOWN


def unschedulable(pod: KubeObject) -> bool:
    """The scheduler tried and found no node: PodScheduled False with reason Unschedulable."""
    for cond in (pod.status.conditions or []) if pod.status else []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return True
    return False


@dataclass(frozen=True)
class NewWorker:
    """What a new worker of the pool would offer: its labels and allocatable CPU / memory."""

    labels: Mapping[str, str]
    cpu: float
    memory: float


def new_worker(hosts: Sequence[InventoryHost], nodes: Sequence[KubeObject], pool: str,
               labels: Mapping[str, str] | None = None) -> NewWorker | None:
    """A new worker of `pool` as its existing nodes show it: the labels all of them carry plus
    the pool's spec labels, and the largest allocatable among them. None without a pool node."""
    matched = match_nodes(hosts, nodes)
    names = {matched[h.name] for h in hosts if h.pool == pool and h.name in matched}
    pool_nodes = [n for n in nodes if n.metadata.name in names and n.status and n.status.allocatable]
    if not pool_nodes:
        return None
    common: dict[str, str] | None = None
    for n in pool_nodes:
        node_labels = dict(n.metadata.labels or {})
        common = node_labels if common is None else {k: v for k, v in common.items() if node_labels.get(k) == v}
    common = {k: v for k, v in (common or {}).items() if k != "kubernetes.io/hostname"}
    common.update(labels or {})
    return NewWorker(common, max(quantity(n.status.allocatable.get("cpu")) for n in pool_nodes),
                     max(quantity(n.status.allocatable.get("memory")) for n in pool_nodes))


def fits(pod: KubeObject, worker: NewWorker | None) -> bool:
    """Whether a new worker could run `pod`: its nodeSelector matches and its requests fit."""
    if worker is None:
        return True  # nothing to compare with: the pool's own pods are the likely demand
    selector = pod.spec.node_selector or {}
    if any(worker.labels.get(k) != v for k, v in selector.items()):
        return False
    cpu, mem = pod_requests(pod)
    return cpu <= worker.cpu and mem <= worker.memory


def observe_kubernetes(hosts: Sequence[InventoryHost], nodes: Sequence[KubeObject], pods: Sequence[KubeObject],
                       now: float, pool: str | None = None, labels: Mapping[str, str] | None = None,
                       added: Mapping[str, float] | None = None) -> Observation:
    """Hosts with their share of allocatable CPU and memory requested, pod counts, readiness,
    and pending demand (in hosts of the average allocatable): only pods the scheduler marked
    unschedulable that a new worker of `pool` could run (nodeSelector, requests)."""
    by_node = {n.metadata.name: n for n in nodes}
    node_of = match_nodes(hosts, nodes)
    worker = new_worker(hosts, nodes, pool, labels) if pool else None
    work: dict[str, list[KubeObject]] = {}
    pending = []
    for p in pods:
        if not counts_as_work(p):
            continue
        node_name = p.spec.node_name
        if node_name:
            work.setdefault(node_name, []).append(p)
        elif p.status and p.status.phase == "Pending" and unschedulable(p) and fits(p, worker):
            pending.append(p)
    columns = HostColumns()
    alloc_cpu, alloc_mem = [], []
    for h in hosts:
        node = by_node.get(node_of.get(h.name, ""))
        if node is None:
            columns.add(h.name, h.pool, h.role, silent_status(h, added or {}, now), h.etcd)
            continue
        allocatable = node.status.allocatable or {}
        cpu_cap, mem_cap = quantity(allocatable.get("cpu")), quantity(allocatable.get("memory"))
        on_node = work.get(node.metadata.name, [])
        cpu_req = sum(pod_requests(p)[0] for p in on_node)
        mem_req = sum(pod_requests(p)[1] for p in on_node)
        if cpu_cap > 0 and mem_cap > 0:
            alloc_cpu.append(cpu_cap)
            alloc_mem.append(mem_cap)
        status = node_status(node)
        if status != READY and h.name in (added or {}) and now - (added or {})[h.name] <= PROVISIONING_BOUND:
            status = BOOTING
        columns.add(h.name, h.pool, h.role, status, h.etcd, len(on_node),
                    min(1.0, cpu_req / cpu_cap) if cpu_cap else 1.0, min(1.0, mem_req / mem_cap) if mem_cap else 1.0)
    mean_cpu = sum(alloc_cpu) / len(alloc_cpu) if alloc_cpu else 0.0
    mean_mem = sum(alloc_mem) / len(alloc_mem) if alloc_mem else 0.0
    pcpu = sum(pod_requests(p)[0] for p in pending)
    pmem = sum(pod_requests(p)[1] for p in pending)
    return observed(now, columns.lists, pending=len(pending), pending_cpu=pcpu / mean_cpu if mean_cpu else 0.0,
                    pending_memory=pmem / mean_mem if mean_mem else 0.0, source="kubernetes")


def pending_names(pods: Sequence[KubeObject]) -> frozenset[str]:
    """Namespaced names of unschedulable pods (what the batching window watches)."""
    return frozenset(f"{p.metadata.namespace}/{p.metadata.name}" for p in pods
                     if counts_as_work(p) and not p.spec.node_name and unschedulable(p))


def batch_done(first_seen: float, last_change: float, now: float, idle: float = 1.0, longest: float = 10.0) -> bool:
    """Karpenter's batching: decide once no new pending pod arrived for `idle` seconds, or
    `longest` seconds after the first one, whichever is sooner."""
    return now - last_change >= idle or now - first_seen >= longest


def node_pods(api: CoreV1Api, node: str) -> list[KubeObject]:
    """Workload pods still on `node` (what a drain waits for)."""
    pods = api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    return [p for p in pods if counts_as_work(p)]


def cordon(api: CoreV1Api, node: str) -> None:
    """Mark `node` unschedulable: no new pods land on it."""
    api.patch_node(node, {"spec": {"unschedulable": True}})


def evict(api: CoreV1Api, pod: KubeObject) -> str:
    """Ask the API to evict `pod` (policy/v1 Eviction on pods/eviction): "evicted", "wait"
    when a PodDisruptionBudget refuses it now (429), or "gone" when it no longer exists."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    body = client.V1Eviction(api_version="policy/v1", kind="Eviction",
                             metadata=client.V1ObjectMeta(name=pod.metadata.name,
                                                          namespace=pod.metadata.namespace))
    try:
        api.create_namespaced_pod_eviction(pod.metadata.name, pod.metadata.namespace, body)
    except ApiException as err:
        if err.status == 429:
            return "wait"
        if err.status == 404:
            return "gone"
        raise ActionError(f"kubernetes: evicting {pod.metadata.namespace}/{pod.metadata.name} failed: "
                          f"{err.status} {err.reason}") from None
    return "evicted"


def uncordon(api: CoreV1Api, node: str) -> None:
    """Let pods land on `node` again (its drain was abandoned)."""
    api.patch_node(node, {"spec": {"unschedulable": False}})
