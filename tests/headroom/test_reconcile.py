"""Reconcile against a real etcd with only the v3 API (load keys on leases, drain keys, the
reconcile lock on a lease, over TLS) and the real local state
store, with host creation and destruction doubled so that the corner cases (halt, a host
that does not drain, racing reconcilers) run in seconds; planning (names), the decision, the
locks and the drain protocol are real. test_end_to_end_local.py does the same for real on
the local provider."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from provision.errors import UserError

from provision.headroom.observe import drained_by_report, inventory, load_key, observe_etcd, read_etcd_loads
from provision.headroom.reconcile import BUSY, EtcdReconcileLock, reconcile
from provision.plan import plan
from provision.providers.base import HostRecord
from provision.spec import parse_spec
from provision.state import LocalStateStore

pytestmark = pytest.mark.slow


def make_spec(name, **headroom):
    h = {"pool": "workers", "source": "etcd", "policies": ["containers"], "containers_per_host": 8, "reserve": 2,
         "scale_up_cooldown": "0s", "scale_down_cooldown": "0s", "drain_timeout": "1s", "load_ttl": "60s"}
    h.update(headroom)
    return parse_spec({"name": name, "provider": {"name": "local"}, "etcd": {"count": 1},
                       "pools": [{"name": "masters", "role": "master", "count": 1},
                                 {"name": "workers", "role": "worker", "count": 1, "min": 1, "max": 4}],
                       "headroom": h})


class ProviderDouble:
    """Hosts in memory, named and placed by the real planner; drain read from the real etcd."""

    def __init__(self, spec, client, add_delay=0.0):
        self.spec, self.client, self.add_delay = spec, client, add_delay
        self.hosts: dict[str, dict] = {}
        self.add_calls: list[int] = []
        self.stopped: list[str] = []
        self.resumed: list[str] = []
        self.destroyed: list[str] = []

    def converge(self, state):
        p = plan(self.spec, state)
        for h in p.create:
            self.hosts[h.name] = h.to_json()
            state["hosts"][h.name] = h.to_json()
        return [h.name for h in p.create]

    def list_hosts(self):
        return [HostRecord(n, h["pool"], h["role"], f"id-{n}", "running") for n, h in sorted(self.hosts.items())]

    def observe(self, state, now):
        added = ((state.get("headroom") or {}).get("memory") or {}).get("added") or {}
        return observe_etcd(inventory(self.list_hosts(), state), read_etcd_loads(self.client, self.spec.name),
                            now, added=added)

    # actuator
    def add(self, state, sizes):
        self.add_calls.append(sum(sizes.values()))
        time.sleep(self.add_delay)
        return self.converge(state)

    def stop_new_work(self, host):
        self.stopped.append(host)
        self.client.put(f"/provision/{self.spec.name}/hosts/{host}/drain", "1")

    def resume_work(self, host):
        self.resumed.append(host)
        assert self.client.delete(f"/provision/{self.spec.name}/hosts/{host}/drain") == 1

    def drained(self, host):
        # only a report of zero containers is proof: a missing key is not
        return drained_by_report(read_etcd_loads(self.client, self.spec.name).get(host))

    def destroy(self, state, hosts):
        for h in hosts:
            assert self.hosts[h]["role"] == "worker" and not self.hosts[h]["etcd"]
            self.hosts.pop(h)
            state["hosts"].pop(h, None)
            self.destroyed.append(h)


@pytest.fixture
def cluster(etcd_v3_server, tmp_path):
    name = f"h{uuid.uuid4().hex[:8]}"
    spec = make_spec(name)
    client = etcd_v3_server.v3()
    store = LocalStateStore(name, tmp_path / "state")
    double = ProviderDouble(spec, client)
    state = store.read()
    double.converge(state)
    store.write(state)
    return spec, store, double, client


def publish(client, spec, host, containers, cpu=0.2):
    doc = {"containers": containers, "cpu": cpu, "memory": cpu, "at": time.time()}
    client.put(load_key(spec.name, host), json.dumps(doc), client.grant(60))


def publish_all(double, client, spec, containers_per_worker):
    for name, h in double.hosts.items():
        publish(client, spec, name, containers_per_worker if h["role"] == "worker" else 0)


def run_once(spec, store, double, client, **kw):
    return reconcile(spec, store, double.observe, double, etcd_lock=EtcdReconcileLock(client, spec.name, "test", 30),
                     sleep=lambda s: time.sleep(0.05), **kw)


def test_load_adds_workers_up_to_max_in_one_batch_then_removes_down_to_min(cluster):
    spec, store, double, client = cluster
    assert sorted(double.hosts) == [f"{spec.name}-masters-0", f"{spec.name}-workers-0"]
    publish_all(double, client, spec, 30)  # far more than one worker holds
    out = run_once(spec, store, double, client)
    assert out.status == "acted" and out.decision.action == "add"
    assert double.add_calls == [4]  # one batched call straight to max (wants more than max)
    assert sorted(out.added) == [f"{spec.name}-workers-{i}" for i in (1, 2, 3)]
    state = store.read()
    assert state["pools"]["workers"] == {"size": 4, "spec_count": 1}
    assert plan(spec, state).sizes["workers"] == 4 and not plan(spec, state).create  # `up` agrees

    # Load goes away: later runs remove workers down to min, never the master/etcd host.
    publish_all(double, client, spec, 0)
    for _ in range(6):
        run_once(spec, store, double, client)
    workers = [n for n, h in double.hosts.items() if h["role"] == "worker"]
    assert len(workers) == 1 and f"{spec.name}-masters-0" in double.hosts
    assert store.read()["pools"]["workers"]["size"] == 1
    # exactly the workers that went away were stopped (the master is in no headroom pool)
    assert sorted(double.stopped) == sorted({f"{spec.name}-workers-{i}" for i in range(4)} - set(workers))
    records = store.read()["headroom"]["decisions"]
    assert [r["action"] for r in records][:2] == ["add", "remove"]
    assert records[0]["inputs"]["containers"] == 30 and records[0]["policies"][0]["policy"] == "containers"


def test_no_add_starts_kubelets_newer_than_the_running_api_server(cluster):
    """The spec asks for a newer Kubernetes than the masters booted with: headroom refuses to
    add workers (version skew), records nothing and creates nothing."""
    spec, store, double, client = cluster
    state = store.read()
    state["hosts"][f"{spec.name}-masters-0"]["boot"] = {"fields": {"kubernetes.version": "1.32.0"}}
    store.write(state)
    before = store.read()
    publish_all(double, client, spec, 30)
    with pytest.raises(UserError, match=r"kubernetes.version: .* would start kubelets on new hosts"):
        run_once(spec, store, double, client)
    assert double.add_calls == []
    after = store.read()
    assert after.get("pools") == before.get("pools") and sorted(after["hosts"]) == sorted(before["hosts"])


def test_unknown_hosts_halt_and_are_never_removed(cluster):
    spec, store, double, client = cluster
    publish_all(double, client, spec, 30)
    run_once(spec, store, double, client)  # 4 workers now; only the first publishes again
    publish_all(double, client, spec, 30)
    run_once(spec, store, double, client)  # the new workers reported once: no longer booting
    assert store.read()["headroom"]["memory"]["added"] == {}
    for name in list(double.hosts):
        client.delete(load_key(spec.name, name))
    publish(client, spec, f"{spec.name}-masters-0", 0)
    publish(client, spec, f"{spec.name}-workers-0", 0)
    out = run_once(spec, store, double, client)
    # 3 of 5: not more than 3, so no halt; the silent hosts are neither capacity nor removed
    assert out.decision.action != "halt" and out.decision.inputs["unknown"] == \
        [f"{spec.name}-workers-{i}" for i in (1, 2, 3)]
    assert double.destroyed == []
    client.delete(load_key(spec.name, f"{spec.name}-workers-0"))
    out = run_once(spec, store, double, client)
    assert out.decision.action == "halt" and "4 of 5 hosts unknown" in out.decision.reason
    assert double.destroyed == []


def test_a_host_that_does_not_drain_is_left_and_reported(cluster):
    spec, store, double, client = cluster
    publish_all(double, client, spec, 30)
    run_once(spec, store, double, client)
    # 4 workers with 1 container each: COLD, the emptiest non-empty host is chosen, alone.
    publish_all(double, client, spec, 1)
    t0 = time.monotonic()
    out = run_once(spec, store, double, client)
    assert out.decision.action == "remove" and len(out.decision.remove) == 1
    # the chosen host first, then the other candidates in its place: none drains
    assert out.not_drained[0] == out.decision.remove[0] and out.removed == []
    assert out.not_drained == list(out.decision.remove + out.decision.spare) and len(out.not_drained) == 4
    assert 3.9 <= time.monotonic() - t0 < 20  # waited drain_timeout (1s) for each, not forever
    assert all(h in double.hosts for h in out.not_drained) and double.destroyed == []
    assert "not drained" in out.message and double.resumed == out.not_drained
    state = store.read()
    assert state["headroom"]["decisions"][-1]["not_drained"] == out.not_drained
    assert sorted(state["headroom"]["memory"]["undrainable"]) == sorted(out.not_drained)
    assert state["pools"]["workers"]["size"] == 4  # nothing removed, nothing recorded as removed
    # the agent stops publishing: a missing key is not "drained", nothing is destroyed
    for name in out.not_drained:
        client.delete(load_key(spec.name, name))
    publish(client, spec, f"{spec.name}-masters-0", 0)
    out = run_once(spec, store, double, client)
    assert double.destroyed == []


def test_two_reconcilers_started_together_act_once(cluster, tmp_path):
    spec, store, double, client = cluster
    double.add_delay = 0.5
    publish_all(double, client, spec, 30)
    outcomes, barrier = [], threading.Barrier(2)

    def go():
        other_store = LocalStateStore(spec.name, store.root.parent)
        barrier.wait()
        outcomes.append(run_once(spec, other_store, double, client))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.status for o in outcomes) == ["acted", "busy"]
    assert [o.message for o in outcomes if o.status == "busy"] == [BUSY]
    assert double.add_calls == [4]
    assert len(store.read()["headroom"]["decisions"]) == 1


def test_state_lock_alone_also_stops_an_overlapping_run(cluster):
    spec, store, double, client = cluster
    publish_all(double, client, spec, 30)
    with LocalStateStore(spec.name, store.root.parent).lock("provision up"):
        out = reconcile(spec, store, double.observe, double)
    assert out.status == "busy" and double.add_calls == []


def test_dry_run_decides_and_changes_nothing(cluster):
    spec, store, double, client = cluster
    publish_all(double, client, spec, 30)
    before = store.read()
    out = run_once(spec, store, double, client, dry_run=True)
    assert out.status == "dry-run" and out.decision.action == "add" and out.decision.add == 3
    assert store.read() == before and double.add_calls == []


def test_etcd_lock_expires_when_its_holder_crashed(cluster):
    spec, store, double, client = cluster
    crashed = EtcdReconcileLock(client, spec.name, "crashed run", ttl=1)
    assert crashed.acquire()
    assert not EtcdReconcileLock(client, spec.name, "next", ttl=30).acquire()
    assert "crashed run" in crashed.holder()
    # etcd raises a 1 s lease to its minimum TTL (about 2 s with default timings) and checks
    # expiry twice a second: poll instead of sleeping a fixed time
    nxt = EtcdReconcileLock(client, spec.name, "next", ttl=30)
    deadline = time.monotonic() + 8
    while not nxt.acquire():
        assert time.monotonic() < deadline, "the crashed holder's lease never expired"
        time.sleep(0.25)
    crashed.release()  # not the owner any more: must not free the new holder's lock
    assert not EtcdReconcileLock(client, spec.name, "third", ttl=30).acquire()
    nxt.release()


def test_added_hosts_that_never_report_boot_then_get_replaced(cluster):
    spec, store, double, client = cluster
    publish_all(double, client, spec, 30)
    out = run_once(spec, store, double, client)
    new = sorted(out.added)
    assert len(new) == 3
    state = store.read()
    assert sorted(state["headroom"]["memory"]["added"]) == new
    # the new hosts never publish: booting (neither capacity nor a reason to halt or add again)
    for name in new:
        client.delete(load_key(spec.name, name))
    out = run_once(spec, store, double, client)
    assert out.decision.action != "halt" and out.decision.inputs["booting"] == new and out.added == []
    # 16 minutes later they are still silent: replaced, without a drain
    state = store.read()
    state["headroom"]["memory"]["added"] = {n: time.time() - 960 for n in new}
    store.write(state)
    out = run_once(spec, store, double, client)
    assert out.decision.action == "replace" and out.removed == new and double.destroyed == new
    assert double.stopped == [] and store.read()["pools"]["workers"]["size"] == 1
    out = run_once(spec, store, double, client)  # the load is still there: added again
    assert out.decision.action == "add" and len(out.added) == 3
