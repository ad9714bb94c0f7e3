"""Reconcile with the kubernetes source: the real `kubernetes` client against the local API
server; scale-down cordons, waits for the node's pods to leave, then destroys. Hosts come from
a provider double (list and destroy only)."""
from __future__ import annotations

import uuid

import pytest

from fakes.kubernetes_api import FakeKubernetesAPI, node, pod
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


def test_scale_down_cordons_waits_for_pods_to_leave_then_destroys(setup):
    spec, store, edges, fake, hosts = setup
    fake.on_cordon = fake.move_pods_off
    out = reconcile(spec, store, edges.observe, edges)
    emptiest = f"{spec.name}-workers-0"  # one workload pod (the DaemonSet pod does not count)
    assert out.decision.action == "remove" and out.decision.remove == (emptiest,)
    assert out.removed == [emptiest] and hosts.destroyed == [emptiest]
    assert ("PATCH", f"/api/v1/nodes/{emptiest}") in fake.requests
    assert store.read()["pools"]["workers"] == {"size": 2, "spec_count": 3}


def test_pods_that_never_leave_keep_the_host(setup):
    spec, store, edges, fake, hosts = setup  # no on_cordon: a PodDisruptionBudget holds the pod
    out = reconcile(spec, store, edges.observe, edges)
    assert out.not_drained == [f"{spec.name}-workers-0"] and hosts.destroyed == []
    # cordoned while it drained, then left in place, reported, and taking work again
    assert fake.requests.count(("PATCH", f"/api/v1/nodes/{spec.name}-workers-0")) == 2
    assert fake.nodes[1]["spec"].get("unschedulable") is False
    assert "pools" not in store.read() or "workers" not in store.read()["pools"]


def test_pending_pods_make_it_add(setup):
    spec, store, edges, fake, hosts = setup
    fake.pods += [pod(f"p{i}", None) for i in range(30)]
    out = reconcile(spec, store, edges.observe, edges, dry_run=True)
    assert out.decision.action == "add" and out.decision.desired == 5
    assert out.decision.inputs["pending"] == 30


def test_nodes_under_cloud_names_are_cordoned_and_drained_by_address(setup):
    """Worker nodes registered under the cloud's DHCP names: the reconciler finds each host's
    node by its InternalIP, and cordon and the drain watch address that node."""
    spec, store, edges, fake, hosts = setup
    addresses = {n: f"10.240.0.{20 + i}" for i, n in enumerate(hosts.names)}
    cloud_name = {n: f"ip-10-240-0-{20 + i}.eu-west-1.compute.internal" for i, n in enumerate(hosts.names)}
    for doc in fake.nodes:
        host = doc["metadata"]["name"]
        doc["metadata"]["name"] = cloud_name[host]
        doc["status"]["addresses"] = [{"type": "InternalIP", "address": addresses[host]}]
    for doc in fake.pods:
        if doc["spec"].get("nodeName"):
            doc["spec"]["nodeName"] = cloud_name[doc["spec"]["nodeName"]]
    listed = hosts.list_hosts
    hosts.list_hosts = lambda: [HostRecord(r.name, r.pool, r.role, r.provider_id, r.state,
                                           private_address=addresses[r.name]) for r in listed()]
    fake.on_cordon = fake.move_pods_off
    out = reconcile(spec, store, edges.observe, edges)
    emptiest = f"{spec.name}-workers-0"
    assert out.decision.action == "remove" and out.removed == [emptiest] and hosts.destroyed == [emptiest]
    assert ("PATCH", f"/api/v1/nodes/{cloud_name[emptiest]}") in fake.requests
