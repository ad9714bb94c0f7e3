"""One headroom reconcile: lock, observe, decide, act, record.

One reconciler at a time per cluster: a TTL lock key in the cluster's etcd (python-etcd,
naming its owner) when the etcd source is used, and the state-store lock; a run that finds
either held returns `busy` (the CLI exits 0: an overlapping cron run is normal).

Acting goes through an `Actuator`, so the order of effects is the same for every provider:
- add: the new size is recorded in state["pools"] first (so a crash leaves a state that
  `up` or the next run converges), then the pool is converged in one batch; with cloud
  bursting each pool the decision adds to (the managed pool up to its max, then the burst
  pool, whose hosts its own provider makes) is recorded, then all converge in one run;
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

from ..errors import LockHeld, UserError
from ..etcd.client import Etcd
from ..etcd.keys import headroom_lock_key
from ..etcd.lock import EtcdLock
# The real edges moved to edges.py; callers still import ClusterEdges and record_nodes from here.
from .edges import ClusterEdges, headroom_of, record_nodes  # noqa: F401
from .policy import Decision, Observation, Settings, decide, memory_of, remember

if TYPE_CHECKING:
    from ..spec import Spec
    from ..state import StateStore

BUSY = "another run holds the lock"


class Actuator(Protocol):
    """How decisions become changes for one cluster."""

    def add(self, state: dict[str, Any], sizes: Mapping[str, int]) -> list[str]:
        """Bring each pool of `sizes` up to its size, in one run (each pool's new hosts in one
        batch, by the pool's provider); returns the new host names."""

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
        # one run for every pool that grows (the managed pool and the burst pool together)
        outcome.added = list(dict.fromkeys(actuator.add(state, {name: sizes.get(name, 0) + count
                                                                for name, count in adds.items()})))
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
