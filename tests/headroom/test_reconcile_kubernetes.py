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


# ---- node identity: nodes registered under the cloud's names --------------------------------

class AddressedHosts(Hosts):
    """Hosts whose provider reports private addresses (what a worker's kubelet reports as its
    node's InternalIP when it registers under the cloud's DHCP name)."""

    def __init__(self, addresses):
        super().__init__(addresses)
        self.addresses = dict(addresses)

    def list_hosts(self):
        return [HostRecord(r.name, r.pool, r.role, r.provider_id, r.state, private_address=self.addresses[r.name])
                for r in super().list_hosts()]


def dhcp_node(address, **kwargs):
    doc = node("ip-" + address.replace(".", "-"), **kwargs)
    doc["status"]["addresses"] = [{"type": "InternalIP", "address": address},
                                  {"type": "Hostname", "address": doc["metadata"]["name"]}]
    return doc


def test_nodes_named_by_the_cloud_are_found_by_address_recorded_and_drained(tmp_path):
    """Worker pool configs set no host name: kubelet registers as ip-10-240-0-N. headroom
    finds each host's node by its InternalIP, records the node name in state (status shows it),
    and cordons, evicts and drains that node, not a node named after the host."""
    name = f"k{uuid.uuid4().hex[:6]}"
    with FakeKubernetesAPI(tmp_path) as fake:
        spec = parse_spec({"name": name, "provider": {"name": "local"}, "etcd": {"count": 1},
                           "pools": [{"name": "masters", "role": "master", "count": 1},
                                     {"name": "workers", "role": "worker", "count": 3, "min": 1, "max": 5}],
                           "headroom": {"pool": "workers", "source": "kubernetes",
                                        "kubeconfig": str(fake.kubeconfig), "policies": ["containers"],
                                        "reserve": 2, "scale_down_cooldown": "0s", "drain_timeout": "1s"}})
        names = [f"{name}-masters-0"] + [f"{name}-workers-{i}" for i in range(3)]
        addresses = {n: f"10.240.0.{10 + i}" for i, n in enumerate(names)}
        node_of = {n: "ip-" + a.replace(".", "-") for n, a in addresses.items()}
        fake.nodes = [dhcp_node(addresses[n]) for n in names]
        w0, w1, w2 = (node_of[f"{name}-workers-{i}"] for i in range(3))
        fake.pods = [pod("a", w0), pod("b", w1), pod("c", w1), pod("d", w2), pod("e", w2), pod("f", w2)]
        hosts = AddressedHosts(addresses)
        store = LocalStateStore(name, tmp_path / "state")
        store.write({"hosts": {n: {"pool": n.split("-")[1], "role": "master" if "-masters-" in n else "worker",
                                   "index": int(n.rsplit("-", 1)[1])} for n in names}})
        edges = ClusterEdges(spec, store, provider=hosts)
        out = reconcile(spec, store, edges.observe, edges)
        emptiest = f"{name}-workers-0"
        assert out.decision.action == "remove" and out.decision.remove == (emptiest,), out.decision.reason
        assert out.removed == [emptiest] and hosts.destroyed == [emptiest]
        assert ("PATCH", f"/api/v1/nodes/{w0}") in fake.requests
        assert not any(path == f"/api/v1/nodes/{emptiest}" for _, path in fake.requests)
        assert fake.evictions == [("default/a", 201)]
        recorded = store.read()["hosts"]
        assert emptiest not in recorded
        assert {h: e.get("node") for h, e in recorded.items()} == {n: node_of[n] for n in names if n != emptiest}


def test_match_nodes_prefers_the_name_then_the_record_then_a_unique_address():
    from kubernetes.client import V1Node, V1NodeAddress, V1NodeStatus, V1ObjectMeta

    from provision.headroom.observe import InventoryHost, match_nodes

    def k8s_node(name, *addresses):
        return V1Node(metadata=V1ObjectMeta(name=name),
                      status=V1NodeStatus(addresses=[V1NodeAddress(type="InternalIP", address=a) for a in addresses]))
    nodes = [k8s_node("c-workers-0", "10.0.0.9"), k8s_node("ip-10-0-0-5", "10.0.0.5"),
             k8s_node("renamed", "10.0.0.6"), k8s_node("twin-a", "10.0.0.7"), k8s_node("twin-b", "10.0.0.7")]
    hosts = [InventoryHost("c-workers-0", "workers", "worker", addresses=("10.0.0.5",)),
             InventoryHost("c-workers-1", "workers", "worker", addresses=("10.0.0.5",)),
             InventoryHost("c-workers-2", "workers", "worker", addresses=("10.0.0.1",), node="renamed"),
             InventoryHost("c-workers-3", "workers", "worker", addresses=("10.0.0.7",)),
             InventoryHost("c-workers-4", "workers", "worker")]
    assert match_nodes(hosts, nodes) == {"c-workers-0": "c-workers-0", "c-workers-1": "ip-10-0-0-5",
                                         "c-workers-2": "renamed"}  # two nodes at .7: no guess
