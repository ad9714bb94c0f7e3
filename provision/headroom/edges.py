"""Headroom's edges on a real cluster: the observer and actuator `reconcile` drives.

Hosts come from the provider's tagged list, load from etcd (the agents' reports) or from
Kubernetes (nodes and pods), and changes go through `up`'s phases (add) and the provider
(destroy); draining is the drain key (etcd) or cordon and the Eviction API (Kubernetes).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import ActionError, UserError
from ..etcd.client import Etcd
from ..etcd.keys import drain_key, hosts_key, load_key
from .policy import Observation

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api

    from ..providers.base import Provider
    from ..providers.pools import PoolProviders
    from ..spec import Spec
    from ..spec.model import HeadroomSpec
    from ..state import StateStore
    from ..ui import Progress
    from .observe import KubeObject


def headroom_of(spec: Spec) -> HeadroomSpec:
    """The spec's headroom section (what runs here runs only for a spec that has one)."""
    if spec.headroom is None:
        raise UserError("headroom: the spec has no headroom section; add one to scale a pool automatically")
    return spec.headroom


class ClusterEdges:
    """Observer and actuator for a real cluster: hosts from the provider's tagged list, load
    from etcd or Kubernetes, machines through the provider."""

    def __init__(self, spec: Spec, store: StateStore, log: Callable[[str], None] = lambda m: None, provider: Provider | PoolProviders | None = None,
                 ui: Progress | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.spec, self.store, self.log, self.ui = spec, store, log, ui
        self.clock, self.sleep = clock, sleep
        if provider is None:
            from ..providers.pools import providers_of
            # a burst pool's hosts live with its own provider: listed and destroyed there
            provider = providers_of(spec, store.workdir, log=log)
        self.provider: Provider | PoolProviders = provider
        self._etcd: Etcd | None = None
        self._kube: CoreV1Api | None = None
        self._nodes: dict[str, str] = {}  # host -> its Kubernetes node (observe finds them)

    def etcd(self, state: dict[str, Any] | None = None) -> Etcd:
        """The cluster's etcd as provision reaches it (over SSH), connected once."""
        if self._etcd is None:
            state = self.store.read() if state is None else state
            from ..etcd import cluster
            if not cluster.member_addresses(state):
                raise ActionError("headroom: state records no etcd member address yet: run `provision up` first")
            self._etcd = cluster.connect(self.spec, self.store, state, log=self.log)
        return self._etcd

    def kube(self) -> CoreV1Api:
        if self._kube is None:
            from .observe import kubernetes_api
            kubeconfig = headroom_of(self.spec).kubeconfig
            if kubeconfig:  # the user's own kubeconfig: the user's own route
                self._kube = kubernetes_api(kubeconfig)
            else:  # the admin kubeconfig: to the API servers over SSH, like all operator traffic
                from .. import tunnel
                state = self.store.read()
                self._kube = kubernetes_api(str(self.store.blob_path("kubeconfig")), route=lambda host, port: tunnel.reach(
                    self.spec, self.store, state, [(host, port)], log=self.log)[0])
        return self._kube

    # -- observer --------------------------------------------------------------------------
    def observe(self, state: dict[str, Any], now: float) -> Observation:
        from .observe import inventory, match_nodes, observe_etcd, observe_kubernetes, read_etcd_loads
        hosts = inventory(self.provider.list_hosts(), state)
        added = ((state.get("headroom") or {}).get("memory") or {}).get("added") or {}
        if headroom_of(self.spec).source == "kubernetes":
            nodes, pods = self.read_kubernetes_batched()
            self._nodes = match_nodes(hosts, nodes)
            record_nodes(state, self._nodes)
            pool = headroom_of(self.spec).pool
            return observe_kubernetes(hosts, nodes, pods, now, pool=pool, labels=dict(self.spec.pool(pool).labels),
                                      added=added)
        loads = read_etcd_loads(self.etcd(state), self.spec.name)
        # A live key is fresh (its TTL / lease says so): the agent's clock is not judged.
        return observe_etcd(hosts, loads, now, added=added)

    def read_kubernetes_batched(self, idle: float = 1.0,
                                longest: float = 10.0) -> tuple[Sequence[KubeObject], Sequence[KubeObject]]:
        """Nodes and pods once unschedulable pods stop arriving (Karpenter: 1 s idle, 10 s
        at most), so one burst makes one batched decision."""
        from .observe import batch_done, pending_names, read_kubernetes
        nodes, pods = read_kubernetes(self.kube())
        seen = pending_names(pods)
        if not seen:
            return nodes, pods
        first = last = self.clock()
        while not batch_done(first, last, self.clock(), idle, longest):
            self.sleep(min(idle, 0.5))
            nodes, pods = read_kubernetes(self.kube())
            now_seen = pending_names(pods)
            if now_seen - seen:
                last = self.clock()
            seen = now_seen
        return nodes, pods

    # -- actuator --------------------------------------------------------------------------
    def add(self, state: dict[str, Any], sizes: Mapping[str, int]) -> list[str]:
        """Converge the cluster to the recorded sizes (`sizes`, already in state) with one run
        of `up`'s phases (certificates and configs for the new hosts, machines in one batch per
        pool by the pool's provider, then their checks); each phase is idempotent, so only the
        new hosts see changes."""
        from ..phases import RunContext, converge
        before = set(state.get("hosts", {}))
        ctx = RunContext(spec=self.spec, store=self.store, state=state, ui=self.ui or _LogUI(self.log),
                         options={"yes": True, "from": "headroom"})
        converge(ctx)
        return sorted(set(state.get("hosts", {})) - before)

    def stop_new_work(self, host: str) -> None:
        """Kubernetes: cordon, then ask the Eviction API for each workload pod (a budget may
        refuse some for now: `drained` asks again). etcd: the drain key tells the host's fleet
        units to stop taking work; its agent keeps reporting, so the drain can be seen."""
        if headroom_of(self.spec).source == "kubernetes":
            from .observe import cordon
            cordon(self.kube(), self.node_name(host))
            self._evict_all(host)
        else:
            self.etcd().put(drain_key(self.spec.name, host), "1")

    def node_name(self, host: str) -> str:
        """The Kubernetes node of `host` (found by observe), else the host's own name."""
        return self._nodes.get(host, host)

    def _evict_all(self, host: str) -> int:
        """Evict the workload pods left on `host`; returns how many remain."""
        from .observe import evict, node_pods
        left = 0
        for pod in node_pods(self.kube(), self.node_name(host)):
            if evict(self.kube(), pod) == "wait":
                left += 1  # 429: a PodDisruptionBudget says not now
        return left

    def resume_work(self, host: str) -> None:
        if headroom_of(self.spec).source == "kubernetes":
            from .observe import uncordon
            uncordon(self.kube(), self.node_name(host))
        else:
            self.etcd().delete(drain_key(self.spec.name, host))

    def drained(self, host: str) -> bool:
        if headroom_of(self.spec).source == "kubernetes":
            from .observe import node_pods
            self._evict_all(host)
            return not node_pods(self.kube(), self.node_name(host))
        from .observe import drained_by_report
        # A missing key (silent agent) proves nothing: its containers may still run.
        return drained_by_report(self.etcd().get(load_key(self.spec.name, host)))

    def destroy(self, state: dict[str, Any], hosts: Sequence[str]) -> None:
        self.provider.destroy_hosts(list(hosts))
        for name in hosts:
            state.get("hosts", {}).pop(name, None)
            if self._etcd is not None:
                try:
                    self._etcd.delete(f"{hosts_key(self.spec.name)}/{name}/", prefix=True)
                except Exception:  # noqa: BLE001 - keys on a lease go by themselves anyway
                    pass
        try:  # the hosts' own etcd identities go with them (etcd/host_identity.py)
            from .. import pki
            from ..etcd import host_identity
            root = self.etcd(state).as_identity(pki.client_tls(self.store, "root"))
            host_identity.forget_hosts(root, self.store, state, hosts)
        except Exception as err:  # noqa: BLE001 - state still lists them: the next etcd phase removes them
            self.log(f"etcd identities of {', '.join(hosts)} left to the next `up`: {err}")


def record_nodes(state: dict[str, Any], nodes: Mapping[str, str]) -> None:
    """Record each host's Kubernetes node name in state (`hosts.<host>.node`), so `status`
    shows it and the node is found again after its addresses change."""
    for host, node in nodes.items():
        entry = state.get("hosts", {}).get(host)
        if entry is not None and entry.get("node") != node:
            entry["node"] = node


class _LogUI:
    """The little of UI that phases use, forwarding to a log function."""

    json = False

    def __init__(self, log: Callable[[str], None]):
        self._log = log

    def log(self, prefix: str, message: str) -> None:
        self._log(f"[{prefix}] {message}")

    def debug(self, prefix: str, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        self._log(f"warning: {message}")
