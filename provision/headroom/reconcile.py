"""One headroom reconcile: lock, observe, decide, act, record.

One reconciler at a time per cluster: a TTL lock key in the cluster's etcd (python-etcd,
naming its owner) when the etcd source is used, and the state-store lock; a run that finds
either held returns `busy` (the CLI exits 0: an overlapping cron run is normal).

Acting goes through an `Actuator`, so the order of effects is the same for every provider:
- add: the new size is recorded in state["pools"] first (so a crash leaves a state that
  `up` or the next run converges), then the pool is converged in one batch; with cloud
  bursting each pool the decision adds to (the managed pool up to its max, then the burst
  pool, whose hosts its own provider makes) is recorded, then converged in that order;
- replace: hosts headroom added that never reported within the provisioning bound (15 min)
  are destroyed (nothing ran there) and the next pass adds what is needed;
- remove: for each chosen host, stop new work on it (Kubernetes: cordon, then evict its pods
  through the Eviction API, which honours PodDisruptionBudgets; etcd: the drain key), wait up
  to `headroom.drain_timeout` for it to drain (only a report of zero containers or no pods
  counts, never a silent host), then destroy it and record the smaller size; a host that does
  not drain takes work again, is remembered (skipped for a scale-down window) and reported,
  and the next candidate of the decision is tried instead.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from ..errors import ActionError, LockHeld, UserError
from ..etcd.client import Etcd
from ..etcd.keys import drain_key, headroom_lock_key, hosts_key, load_key
from ..etcd.lock import EtcdLock
from .policy import Decision, Observation, Settings, decide, memory_of, remember

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api

    from ..providers.base import Provider
    from ..providers.pools import PoolProviders
    from ..spec import Spec
    from ..spec.model import HeadroomSpec
    from ..state import StateStore
    from ..ui import Progress
    from .observe import KubeObject

BUSY = "another run holds the lock"


class Actuator(Protocol):
    """How decisions become changes for one cluster."""

    def add(self, state: dict[str, Any], pool: str, size: int) -> list[str]:
        """Bring `pool` up to `size` hosts in one batch; returns the new host names."""

    def stop_new_work(self, host: str) -> None:
        """Stop new work landing on `host` and start moving its work away."""

    def drained(self, host: str) -> bool:
        """Whether `host` is known to run no workload any more (silence is not proof)."""

    def resume_work(self, host: str) -> None:
        """Undo `stop_new_work` on a host that did not drain (it stays, so let it work)."""

    def destroy(self, state: dict[str, Any], hosts: Sequence[str]) -> None:
        """Destroy `hosts` and forget them in `state`."""


@dataclass
class Outcome:
    """What one reconcile did."""

    status: str  # acted | decided | busy | dry-run
    decision: Decision | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    not_drained: list[str] = field(default_factory=list)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "added": self.added, "removed": self.removed,
                "not_drained": self.not_drained,
                "decision": self.decision.record() if self.decision else None}


def skew_refusal(spec: Spec, state: dict[str, Any], pool: str, size: int) -> str | None:
    """Why growing `pool` to `size` would break the Kubernetes version-skew policy (new
    kubelets newer than the running API servers, after a spec upgrade `up` has not rolled out),
    or None: the same rule `plan`, `up` and `scale` apply."""
    import copy

    from ..plan import plan
    from ..version_skew import check_spec
    trial = copy.deepcopy(state)
    record_size(trial, spec, pool, size)
    check = check_spec(spec, state, [(h.name, h.role) for h in plan(spec, trial).create])
    return None if check.allowed else check.reason


def record_size(state: dict[str, Any], spec: Spec, pool: str, size: int) -> None:
    """The size headroom chose; `plan.pool_sizes` honours it while the spec's count is unchanged."""
    state.setdefault("pools", {})[pool] = {"size": size, "spec_count": spec.pool(pool).count}


class EtcdReconcileLock(EtcdLock):
    """`/provision/<cluster>/headroom/lock`: one reconciler at a time per cluster."""

    def __init__(self, client: Etcd, cluster: str, command: str, ttl: float):
        super().__init__(client, headroom_lock_key(cluster), command, ttl)


def reconcile(spec: Spec, store: StateStore, observe: Callable[[dict[str, Any], float], Observation],
              actuator: Actuator, *, dry_run: bool = False, etcd_lock: EtcdReconcileLock | None = None,
              log: Callable[[str], None] = lambda m: None, clock: Callable[[], float] = time.time,
              sleep: Callable[[float], None] = time.sleep, command: str = "provision headroom") -> Outcome:
    """One reconcile of `spec`'s headroom pool. `observe(state, now)` reads the hosts' load."""
    if spec.headroom is None:
        raise UserError("headroom: the spec has no headroom section; add one to scale a pool automatically")
    if etcd_lock is not None and not dry_run and not etcd_lock.acquire():
        log(f"{BUSY} (etcd {etcd_lock.key}: {etcd_lock.holder()})")
        return Outcome("busy", message=BUSY)
    try:
        try:
            with store.lock(command):
                return _reconcile_locked(spec, store, observe, actuator, dry_run, log, clock, sleep)
        except LockHeld as err:
            log(f"{BUSY} ({err.lines[0]})")
            return Outcome("busy", message=BUSY)
    finally:
        if etcd_lock is not None and not dry_run:
            etcd_lock.release()


def _reconcile_locked(spec: Spec, store: StateStore, observe: Callable[[dict[str, Any], float], Observation],
                      actuator: Actuator, dry_run: bool, log: Callable[[str], None], clock: Callable[[], float],
                      sleep: Callable[[float], None]) -> Outcome:
    settings = Settings.from_spec(spec)
    state = store.read()
    now = clock()
    observation = observe(state, now)
    decision = decide(settings, observation, memory_of(state.get("headroom")), now)
    log(f"{decision.action}: {decision.reason}")
    if dry_run:
        return Outcome("dry-run", decision, message=decision.reason)
    outcome = Outcome("acted" if decision.action in ("add", "remove") else "decided", decision,
                      message=decision.reason)
    state["headroom"] = remember(state.get("headroom") or {}, decision)
    pool = settings.pool
    # Hosts of each pool headroom sizes (two with cloud bursting), as observed.
    sizes = dict(decision.inputs.get("pool_sizes") or {pool: decision.current})
    pool_of = {h.name: h.pool for h in observation.hosts}
    if decision.action == "add":
        adds = dict(decision.adds) or {pool: decision.add}
        for name, count in adds.items():
            refused = skew_refusal(spec, state, name, sizes.get(name, 0) + count)
            if refused:  # nothing recorded or made: `up` must roll the control plane forward first
                raise UserError(f"headroom: cannot add to {name}: {refused}")
        for name, count in adds.items():
            record_size(state, spec, name, sizes.get(name, 0) + count)
        store.write(state)  # the intent first: a crash here is repaired by the next run or `up`
        for name, count in adds.items():  # the managed pool first, then the burst pool
            outcome.added += [h for h in actuator.add(state, name, sizes.get(name, 0) + count)
                              if h not in outcome.added]
        log(f"added {', '.join(outcome.added) or 'nothing'}")
        # New hosts are booting (upcoming capacity, not unknown) for the provisioning bound.
        added = state["headroom"]["memory"].setdefault("added", {})
        for host in outcome.added:
            added[host] = now
        store.write(state)
    elif decision.action == "replace":
        # Hosts that never reported since headroom added them: nothing ran there, so no drain.
        store.write(state)
        actuator.destroy(state, list(decision.remove))
        for host in decision.remove:
            name = pool_of.get(host, pool)
            sizes[name] = sizes.get(name, 0) - 1
            record_size(state, spec, name, sizes[name])
        outcome.removed = list(decision.remove)
        outcome.status = "acted"
        log(f"replaced (destroyed) {', '.join(decision.remove)}; the next pass adds what is needed")
        store.write(state)
    elif decision.action == "remove":
        store.write(state)
        memory = state["headroom"]["memory"]
        queue = list(decision.remove)
        spare = list(decision.spare)
        while queue:
            host = queue.pop(0)
            if drain(spec, actuator, host, log, clock, sleep):
                actuator.destroy(state, [host])
                name = pool_of.get(host, pool)
                sizes[name] = sizes.get(name, 0) - 1
                record_size(state, spec, name, sizes[name])
                store.write(state)
                outcome.removed.append(host)
                log(f"removed {host}")
                continue
            outcome.not_drained.append(host)
            memory.setdefault("undrainable", {})[host] = clock()
            store.write(state)
            log(f"{host} did not drain within {headroom_of(spec).drain_timeout:g}s; left in place, taking work "
                f"again, skipped for {headroom_of(spec).scale_down_cooldown:g}s")
            if spare:
                queue.append(spare.pop(0))  # another candidate instead
        if outcome.not_drained:
            outcome.message += f"; not drained, left in place: {', '.join(outcome.not_drained)}"
            state["headroom"]["decisions"][-1]["not_drained"] = list(outcome.not_drained)
            state["headroom"]["decisions"][-1]["removed"] = list(outcome.removed)
            store.write(state)
    else:
        store.write(state)
    return outcome


def headroom_of(spec: Spec) -> HeadroomSpec:
    """The spec's headroom section (what runs here runs only for a spec that has one)."""
    if spec.headroom is None:
        raise UserError("headroom: the spec has no headroom section; add one to scale a pool automatically")
    return spec.headroom


def drain(spec: Spec, actuator: Actuator, host: str, log: Callable[[str], None], clock: Callable[[], float],
          sleep: Callable[[float], None]) -> bool:
    """Stop new work on `host` and wait up to drain_timeout for it to run nothing; on timeout
    the host takes work again. True when drained."""
    log(f"stopping new work on {host}")
    actuator.stop_new_work(host)
    timeout = headroom_of(spec).drain_timeout
    deadline = clock() + timeout
    while not actuator.drained(host):
        if clock() >= deadline:
            actuator.resume_work(host)
            return False
        sleep(min(2.0, max(0.05, timeout / 20)))
    return True


# ---- the real edges ---------------------------------------------------------------------

class ClusterEdges:
    """Observer and actuator for a real cluster: hosts from the provider's tagged list, load
    from etcd or Kubernetes, machines through the provider."""

    def __init__(self, spec: Spec, store: StateStore, log: Callable[[str], None] = lambda m: None, provider: Provider | PoolProviders | None = None,
                 ui: Progress | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        from ..providers import get_provider
        self.spec, self.store, self.log, self.ui = spec, store, log, ui
        self.clock, self.sleep = clock, sleep
        if provider is None:
            from ..providers.pools import PoolProviders, has_pool_providers
            # a burst pool's hosts live with its own provider: listed and destroyed there
            provider = (PoolProviders(spec, store.workdir, log=log) if has_pool_providers(spec)
                        else get_provider(spec, workdir=store.workdir, log=log))
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
    def add(self, state: dict[str, Any], pool: str, size: int) -> list[str]:
        """Converge the cluster to the recorded size with `up`'s phases (certificates and
        configs for the new hosts, machines in one batch per pool, then their checks); each
        phase is idempotent, so only the new hosts see changes."""
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
