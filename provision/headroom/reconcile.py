"""One headroom reconcile: lock, observe, decide, act, record.

One reconciler at a time per cluster: a TTL lock key in the cluster's etcd (python-etcd,
naming its owner) when the etcd source is used, and the state-store lock; a run that finds
either held returns `busy` (the CLI exits 0: an overlapping cron run is normal).

Acting goes through an `Actuator`, so the order of effects is the same for every provider:
- add: the new size is recorded in state["pools"] first (so a crash leaves a state that
  `up` or the next run converges), then the pool is converged in one batch;
- remove: for each chosen host, stop new work on it, wait up to `headroom.drain_timeout`
  for it to drain, then destroy it and record the smaller size; a host that does not
  drain is left in place and reported.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from ..errors import ActionError, LockHeld, UserError
from ..state import lock_holder
from .observe import drain_key, hosts_key, load_key
from .policy import Decision, Observation, Settings, decide, memory_of, remember

BUSY = "another run holds the lock"


class Actuator(Protocol):
    """How decisions become changes for one cluster."""

    def add(self, state: dict[str, Any], pool: str, size: int) -> list[str]:
        """Bring `pool` up to `size` hosts in one batch; returns the new host names."""

    def stop_new_work(self, host: str) -> None:
        """Stop new work landing on `host` (cordon, fleet drain, stop the agent)."""

    def drained(self, host: str) -> bool:
        """Whether `host` runs no workload any more."""

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


def record_size(state: dict[str, Any], spec: Any, pool: str, size: int) -> None:
    """The size headroom chose; `plan.pool_sizes` honours it while the spec's count is unchanged."""
    state.setdefault("pools", {})[pool] = {"size": size, "spec_count": spec.pool(pool).count}


class EtcdReconcileLock:
    """`/provision/<cluster>/headroom/lock`, created only if absent (prevExist=false), with a
    TTL so a crashed reconciler frees it; deleted only by its owner (prevValue)."""

    def __init__(self, client: Any, cluster: str, command: str, ttl: int):
        self.client, self.key, self.ttl = client, f"/provision/{cluster}/headroom/lock", max(1, int(ttl))
        self.owner = json.dumps(lock_holder(command), sort_keys=True)

    def acquire(self) -> bool:
        import etcd
        try:
            self.client.write(self.key, self.owner, prevExist=False, ttl=self.ttl)
            return True
        except etcd.EtcdAlreadyExist:
            return False
        except etcd.EtcdException as err:
            raise ActionError(f"etcd: cannot take the reconcile lock {self.key}: {err}") from None

    def holder(self) -> str:
        try:
            return self.client.read(self.key).value or ""
        except Exception:
            return ""

    def release(self) -> None:
        try:
            self.client.delete(self.key, prevValue=self.owner)
        except Exception:  # expired or taken over: the TTL already freed it
            pass


def reconcile(spec: Any, store: Any, observe: Callable[[dict[str, Any], float], Observation],
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


def _reconcile_locked(spec, store, observe, actuator, dry_run, log, clock, sleep) -> Outcome:
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
    if decision.action == "add":
        record_size(state, spec, pool, decision.desired)
        store.write(state)  # the intent first: a crash here is repaired by the next run or `up`
        outcome.added = actuator.add(state, pool, decision.desired)
        log(f"added {', '.join(outcome.added) or 'nothing'}")
        store.write(state)
    elif decision.action == "remove":
        store.write(state)
        size = decision.current
        for host in decision.remove:
            log(f"stopping new work on {host}")
            actuator.stop_new_work(host)
            deadline = clock() + spec.headroom.drain_timeout
            while not actuator.drained(host):
                if clock() >= deadline:
                    break
                sleep(min(2.0, max(0.05, spec.headroom.drain_timeout / 20)))
            else:
                actuator.destroy(state, [host])
                size -= 1
                record_size(state, spec, pool, size)
                store.write(state)
                outcome.removed.append(host)
                log(f"removed {host}")
                continue
            outcome.not_drained.append(host)
            actuator.resume_work(host)
            log(f"{host} did not drain within {spec.headroom.drain_timeout:g}s; left in place and taking work again")
        if outcome.not_drained:
            outcome.message += f"; not drained, left in place: {', '.join(outcome.not_drained)}"
            state["headroom"]["decisions"][-1]["not_drained"] = list(outcome.not_drained)
            store.write(state)
    else:
        store.write(state)
    return outcome


# ---- the real edges ---------------------------------------------------------------------

def cluster_etcd_endpoints(state: dict[str, Any]) -> list[str]:
    """Client URLs of the cluster's etcd members, from the addresses state records."""
    return sorted(f"https://{h['address']}:2379" for h in state.get("hosts", {}).values()
                  if h.get("etcd") and h.get("address"))


class ClusterEdges:
    """Observer and actuator for a real cluster: hosts from the provider's tagged list, load
    from etcd or Kubernetes, machines through the provider."""

    def __init__(self, spec: Any, store: Any, log: Callable[[str], None] = lambda m: None, provider: Any = None,
                 ui: Any = None):
        from ..providers import get_provider
        self.spec, self.store, self.log, self.ui = spec, store, log, ui
        self.provider = provider or get_provider(spec, workdir=store.workdir, log=log)
        self._etcd = None
        self._kube = None

    def etcd(self, state: dict[str, Any]):
        if self._etcd is None:
            from ..pki import client_tls
            from ..state_etcd import etcd_client
            endpoints = cluster_etcd_endpoints(state)
            if not endpoints:
                raise ActionError("headroom: state records no etcd member address yet: run `provision up` first")
            self._etcd = etcd_client(endpoints, client_tls(self.store))
        return self._etcd

    def kube(self):
        if self._kube is None:
            from .observe import kubernetes_api
            path = self.spec.headroom.kubeconfig or str(self.store.blob_path("kubeconfig"))
            self._kube = kubernetes_api(path)
        return self._kube

    # -- observer --------------------------------------------------------------------------
    def observe(self, state: dict[str, Any], now: float) -> Observation:
        from .observe import inventory, observe_etcd, observe_kubernetes, read_etcd_loads, read_kubernetes
        hosts = inventory(self.provider.list_hosts(), state)
        if self.spec.headroom.source == "kubernetes":
            from .observe import node_names
            nodes, pods = read_kubernetes(self.kube())
            self._node_names = node_names(hosts, nodes)
            return observe_kubernetes(hosts, nodes, pods, now)
        loads = read_etcd_loads(self.etcd(state), self.spec.name)
        return observe_etcd(hosts, loads, now, self.spec.headroom.load_ttl)

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

    def node_name(self, host: str) -> str:
        """The name `host` registered under in Kubernetes (found by the last observation)."""
        return (getattr(self, "_node_names", None) or {}).get(host, host)

    def stop_new_work(self, host: str) -> None:
        if self.spec.headroom.source == "kubernetes":
            from .observe import cordon
            cordon(self.kube(), self.node_name(host))
        else:
            # Host agents and fleet units read this key and stop taking work (fleet drain).
            self._etcd.write(drain_key(self.spec.name, host), "1")
        stop_agent = getattr(self.provider, "stop_agent", None)
        if stop_agent is not None:
            stop_agent(host)

    def resume_work(self, host: str) -> None:
        if self.spec.headroom.source == "kubernetes":
            from .observe import uncordon
            uncordon(self.kube(), self.node_name(host))
        else:
            import etcd
            try:
                self._etcd.delete(drain_key(self.spec.name, host))
            except etcd.EtcdKeyNotFound:
                pass

    def drained(self, host: str) -> bool:
        if self.spec.headroom.source == "kubernetes":
            from .observe import node_pods
            return not node_pods(self.kube(), self.node_name(host))
        import etcd
        try:
            doc = json.loads(self._etcd.read(load_key(self.spec.name, host)).value)
        except etcd.EtcdKeyNotFound:
            return True  # the agent stopped publishing: nothing runs there any more
        except (ValueError, TypeError):
            return False
        return doc.get("containers") == 0

    def destroy(self, state: dict[str, Any], hosts: Sequence[str]) -> None:
        self.provider.destroy_hosts(list(hosts))
        for name in hosts:
            state.get("hosts", {}).pop(name, None)
            if self._etcd is not None:
                try:
                    self._etcd.delete(f"{hosts_key(self.spec.name)}/{name}", recursive=True)
                except Exception:
                    pass


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
