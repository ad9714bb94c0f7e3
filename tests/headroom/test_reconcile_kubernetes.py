"""Reconcile with the kubernetes source: the real `kubernetes` client against the local API
server; scale-down cordons, evicts the node's pods through the Eviction API (a
PodDisruptionBudget's 429 means wait), then destroys. Hosts come from
a provider double (list and destroy only)."""
from __future__ import annotations

import uuid

import pytest

from fakes.kubernetes_api import FakeKubernetesAPI, node, pdb, pod
from provision.headroom.reconcile import ClusterEdges, reconcile
from provision.providers.base import HostRecord
from provision.spec import parse_spec
from provision.state import LocalStateStore


class Hosts:
    def __init__(self, names):
        self.names = list(names)
        self.destroyed = []

    def list_hosts(self):
        return [HostRecord(n, n.split("-")[1], "master" if "-masters-" in n else "worker", f"id-{n}", "running")
                for n in self.names]

    def destroy_hosts(self, names):
        for n in names:
            self.names.remove(n)
            self.destroyed.append(n)


@pytest.fixture
def setup(tmp_path):
    name = f"k{uuid.uuid4().hex[:6]}"
    fake = FakeKubernetesAPI(tmp_path).__enter__()
    spec = parse_spec({"name": name, "provider": {"name": "local"}, "etcd": {"count": 1},
                       "pools": [{"name": "masters", "role": "master", "count": 1},
                                 {"name": "workers", "role": "worker", "count": 3, "min": 1, "max": 5}],
                       "headroom": {"pool": "workers", "source": "kubernetes", "kubeconfig": str(fake.kubeconfig),
                                    "policies": ["containers"], "reserve": 2, "scale_down_cooldown": "0s",
                                    "drain_timeout": "1s"}})
    names = [f"{name}-masters-0"] + [f"{name}-workers-{i}" for i in range(3)]
    fake.nodes = [node(n) for n in names]
    fake.pods = [pod("a", f"{name}-workers-0"), pod("b", f"{name}-workers-1"), pod("c", f"{name}-workers-1"),
                 pod("d", f"{name}-workers-2"), pod("e", f"{name}-workers-2"), pod("f", f"{name}-workers-2"),
                 pod("ds0", f"{name}-workers-0", daemonset=True)]
    hosts = Hosts(names)
    store = LocalStateStore(name, tmp_path / "state")
    edges = ClusterEdges(spec, store, provider=hosts)
    yield spec, store, edges, fake, hosts
    fake.__exit__(None, None, None)


def test_scale_down_cordons_evicts_then_destroys(setup):
    spec, store, edges, fake, hosts = setup
    out = reconcile(spec, store, edges.observe, edges)
    emptiest = f"{spec.name}-workers-0"  # one workload pod (the DaemonSet pod does not count)
    assert out.decision.action == "remove" and out.decision.remove == (emptiest,)
    assert out.removed == [emptiest] and hosts.destroyed == [emptiest]
    assert ("PATCH", f"/api/v1/nodes/{emptiest}") in fake.requests
    assert fake.evictions == [("default/a", 201)]  # the DaemonSet pod is not evicted
    assert store.read()["pools"]["workers"] == {"size": 2, "spec_count": 3}


def test_a_budget_that_never_allows_eviction_keeps_the_host_and_another_is_tried(setup):
    spec, store, edges, fake, hosts = setup
    for p in fake.pods:
        if p["metadata"]["name"] == "a":
            p["metadata"]["labels"] = {"app": "db"}
    fake.pdbs = [pdb("db", {"app": "db"}, min_available=1)]
    out = reconcile(spec, store, edges.observe, edges)
    w0, w1 = f"{spec.name}-workers-0", f"{spec.name}-workers-1"
    assert out.not_drained == [w0]
    assert ("default/a", 429) in fake.evictions  # asked, refused: waited until drain_timeout
    # cordoned while it drained, then left in place, reported, and taking work again
    assert fake.requests.count(("PATCH", f"/api/v1/nodes/{w0}")) == 2
    assert fake.nodes[1]["spec"].get("unschedulable") is False
    # the next candidate was drained and removed instead
    assert out.removed == [w1] and hosts.destroyed == [w1]
    state = store.read()
    assert w0 in state["headroom"]["memory"]["undrainable"]
    # the next pass skips the host that would not drain
    again = reconcile(spec, store, edges.observe, edges, dry_run=True)
    assert w0 not in again.decision.remove


def test_pending_pods_make_it_add(setup):
    spec, store, edges, fake, hosts = setup
    fake.pods += [pod(f"p{i}", None) for i in range(30)]
    fake.pods += [pod("elsewhere", None, node_selector={"pool": "gpu"}), pod("huge", None, cpu="64")]
    out = reconcile(spec, store, edges.observe, edges, dry_run=True)
    assert out.decision.action == "add" and out.decision.desired == 5
    assert out.decision.inputs["pending"] == 30  # pods no new worker could run are not demand


def test_a_burst_of_unschedulable_pods_arriving_over_time_makes_one_batched_add(setup):
    """Karpenter's batching: the observation waits until no new pending pod arrived for 1 s
    (at most 10 s), so pods created over 1.5 s are one decision, not one per arrival."""
    import threading
    import time

    from provision.headroom.observe import batch_done
    spec, store, edges, fake, hosts = setup

    def arrive():
        for wave in range(5):
            with fake.lock:
                fake.pods += [pod(f"w{wave}-{i}", None) for i in range(6)]
            time.sleep(0.3)

    fake.pods.append(pod("first", None))
    feeder = threading.Thread(target=arrive)
    feeder.start()
    out = reconcile(spec, store, edges.observe, edges, dry_run=True)
    feeder.join()
    assert out.decision.inputs["pending"] == 31  # every wave, in one observation
    assert out.decision.action == "add" and out.decision.desired == 5
    assert batch_done(0.0, 0.0, 1.0) and not batch_done(0.0, 8.5, 9.0) and batch_done(0.0, 9.5, 10.0)
