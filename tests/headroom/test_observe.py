"""Observation: load keys in a real etcd over TLS, and the Kubernetes API through the real
client against a local API server."""
from __future__ import annotations

import json
import time
import uuid

import etcd
import pytest

from fakes.kubernetes_api import FakeKubernetesAPI, node, pod
from provision.errors import ActionError, UserError
from provision.headroom.observe import (InventoryHost, cordon, etcd_client, inventory, kubernetes_api, load_key,
                                        node_names, node_pods, observe_etcd, observe_kubernetes, parse_load,
                                        read_etcd_loads,
                                        read_kubernetes)
from provision.headroom.policy import READY, UNKNOWN, UNREADY
from provision.providers.base import HostRecord

pytestmark = pytest.mark.slow


def hosts(cluster):
    return [InventoryHost(f"{cluster}-masters-0", "masters", "master", True),
            InventoryHost(f"{cluster}-workers-0", "workers", "worker"),
            InventoryHost(f"{cluster}-workers-1", "workers", "worker"),
            InventoryHost(f"{cluster}-workers-2", "workers", "worker")]


def publish(client, cluster, host, ttl=60, at=None, **load):
    doc = {"containers": 0, "cpu": 0.1, "memory": 0.1, "at": time.time() if at is None else at}
    doc.update(load)
    client.write(load_key(cluster, host), json.dumps(doc), ttl=ttl)


def test_etcd_loads_over_tls_fresh_stale_and_missing(etcd_server):
    cluster = f"c{uuid.uuid4().hex[:8]}"
    client = etcd_server.client()
    publish(client, cluster, f"{cluster}-masters-0", containers=1)
    publish(client, cluster, f"{cluster}-workers-0", containers=5, cpu=0.6, memory=0.4)
    publish(client, cluster, f"{cluster}-workers-1", at=time.time() - 600)  # agent's clock or agent stuck
    # workers-2 never published: unknown, never idle
    publish(client, f"other{cluster}", f"{cluster}-workers-2", containers=3)  # another cluster's key
    loads = read_etcd_loads(client, cluster)
    assert set(loads) == {f"{cluster}-masters-0", f"{cluster}-workers-0", f"{cluster}-workers-1"}
    obs = observe_etcd(hosts(cluster), loads, time.time(), max_age=60)
    by = {h.name: h for h in obs.hosts}
    assert by[f"{cluster}-workers-0"].status == READY and by[f"{cluster}-workers-0"].containers == 5
    assert by[f"{cluster}-workers-0"].cpu == pytest.approx(0.6)
    assert by[f"{cluster}-workers-1"].status == UNKNOWN
    assert by[f"{cluster}-workers-2"].status == UNKNOWN and by[f"{cluster}-workers-2"].containers == 0
    assert by[f"{cluster}-masters-0"].etcd


def test_etcd_load_key_expires_with_its_ttl(etcd_server):
    cluster = f"c{uuid.uuid4().hex[:8]}"
    client = etcd_server.client()
    publish(client, cluster, f"{cluster}-workers-0", ttl=1)
    assert f"{cluster}-workers-0" in read_etcd_loads(client, cluster)
    time.sleep(2.2)
    assert read_etcd_loads(client, cluster) == {}


def test_etcd_refuses_a_client_certificate_from_another_ca(etcd_server):
    client = etcd_client([etcd_server.endpoint], etcd_server.other_tls, timeout=3)
    with pytest.raises((ActionError, etcd.EtcdException, OSError, Exception)):
        read_etcd_loads(client, "anything")


def test_etcd_client_argument_errors():
    with pytest.raises(UserError, match="no endpoints"):
        etcd_client([], None)
    with pytest.raises(UserError, match="client certificate"):
        etcd_client(["https://127.0.0.1:2379"], None)
    with pytest.raises(UserError, match="one scheme"):
        etcd_client(["ftp://127.0.0.1:2379"], None)


@pytest.mark.parametrize("raw", [None, "not json", "[]", '{"containers": -1, "cpu": 0, "memory": 0, "at": 1}',
                                 '{"containers": 1, "cpu": 2, "memory": 0, "at": 1000}',
                                 '{"containers": true, "cpu": 0, "memory": 0, "at": 1000}',
                                 '{"containers": 1, "cpu": 0, "at": 1000}',
                                 '{"containers": 1, "cpu": "NaN", "memory": 0, "at": 1000}'])
def test_malformed_load_documents_are_unknown(raw):
    assert parse_load(raw, 1000, 60) is None


def test_inventory_comes_from_the_provider_list_including_hosts_state_lacks():
    records = [HostRecord("c-workers-7", "workers", "worker", "i-7", "running"),
               HostRecord("c-workers-8", "workers", "worker", "i-8", "terminated"),
               HostRecord("c-masters-0", "masters", "master", "i-0", "running")]
    inv = inventory(records, {"hosts": {}})
    assert [h.name for h in inv] == ["c-masters-0", "c-workers-7"]
    assert inv[0].etcd and not inv[1].etcd
    inv = inventory(records[:1], {"hosts": {"c-workers-7": {"etcd": True}}})
    assert inv[0].etcd


def test_kubernetes_source_through_the_real_client(tmp_path):
    cluster = "k"
    with FakeKubernetesAPI(tmp_path) as fake:
        fake.nodes = [node("k-masters-0"), node("k-workers-0", cpu="4", memory="8Gi"),
                      node("k-workers-1", cpu="2000m", memory="4Gi", ready="False")]
        fake.pods = [pod("a", "k-workers-0", cpu="1", memory="2Gi"), pod("b", "k-workers-0", cpu="1500m", memory="1Gi"),
                     pod("ds", "k-workers-0", cpu="100m", daemonset=True),
                     pod("done", "k-workers-0", phase="Succeeded"),
                     pod("c", "k-workers-1", cpu="500m", memory="1Gi"),
                     pod("waiting", None, cpu="2", memory="4Gi"), pod("waiting2", None, cpu="2", memory="2Gi")]
        api = kubernetes_api(str(fake.kubeconfig))
        nodes, pods = read_kubernetes(api)
        obs = observe_kubernetes(hosts(cluster), nodes, pods, 1000.0)
    by = {h.name: h for h in obs.hosts}
    w0 = by["k-workers-0"]
    assert w0.status == READY and w0.containers == 2
    assert w0.cpu == pytest.approx(2.5 / 4) and w0.memory == pytest.approx(3 / 8)
    assert by["k-workers-1"].status == UNREADY and by["k-workers-1"].cpu == pytest.approx(0.25)
    assert by["k-workers-2"].status == UNKNOWN  # the provider lists it; no node registered
    assert obs.pending == 2
    assert obs.pending_cpu == pytest.approx(4 / ((4 + 2 + 4) / 3))


def test_kubernetes_cordon_and_drain_watch(tmp_path):
    with FakeKubernetesAPI(tmp_path) as fake:
        fake.nodes = [node("k-workers-0")]
        fake.pods = [pod("a", "k-workers-0"), pod("ds", "k-workers-0", daemonset=True), pod("x", "k-workers-1")]
        api = kubernetes_api(str(fake.kubeconfig))
        assert [p.metadata.name for p in node_pods(api, "k-workers-0")] == ["a"]
        fake.on_cordon = fake.move_pods_off
        cordon(api, "k-workers-0")
        assert fake.nodes[0]["spec"]["unschedulable"] is True
        assert node_pods(api, "k-workers-0") == []
        assert ("PATCH", "/api/v1/nodes/k-workers-0") in fake.requests


def test_kubernetes_errors_are_named(tmp_path):
    with pytest.raises(UserError, match="headroom.kubeconfig"):
        kubernetes_api(str(tmp_path / "missing"))
    with FakeKubernetesAPI(tmp_path) as fake:
        text = fake.kubeconfig.read_text().replace("test-token-not-secret", "wrong")
        fake.kubeconfig.write_text(text)
        api = kubernetes_api(str(fake.kubeconfig))
        with pytest.raises(ActionError, match="cannot list"):
            read_kubernetes(api)


def test_the_real_host_agent_script_publishes_what_observe_reads(etcd_server, tmp_path):
    """templates/scripts/host-agent.sh (what every host runs) against the real etcd over TLS."""
    import os
    import shutil
    import subprocess

    from provision.resources import data_dir
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    cluster = f"c{uuid.uuid4().hex[:8]}"
    host = f"{cluster}-workers-0"
    tls = etcd_server.client_tls
    env = dict(os.environ, AGENT_CLUSTER=cluster, AGENT_HOST=host, AGENT_ETCD_ENDPOINTS=etcd_server.endpoint,
               AGENT_CA=str(tls.ca), AGENT_CERT=str(tls.cert), AGENT_KEY=str(tls.key), AGENT_ONCE="1",
               AGENT_TTL="30", AGENT_CONTAINERS_CMD="echo 5")
    script = data_dir("templates") / "scripts" / "host-agent.sh"
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    obs = observe_etcd(hosts(cluster), read_etcd_loads(etcd_server.client(), cluster), time.time(), 60)
    by = {h.name: h for h in obs.hosts}
    assert by[host].status == READY and by[host].containers == 5
    assert 0 <= by[host].cpu <= 1 and 0 < by[host].memory <= 1
    assert by[f"{cluster}-workers-1"].status == UNKNOWN
    ttl = etcd_server.client().read(load_key(cluster, host)).ttl
    assert 0 < ttl <= 30


def test_kubernetes_nodes_under_cloud_names_are_found_by_their_address(tmp_path):
    """Worker pool configs set no host name: kubelet registers under the cloud's DHCP name.
    The host is found by its InternalIP, and cordon/drain address that node."""
    def dhcp_node(name, address, **kw):
        doc = node(name, **kw)
        doc["status"]["addresses"] = [{"type": "InternalIP", "address": address},
                                      {"type": "Hostname", "address": name}]
        return doc
    records = [HostRecord("k-workers-0", "workers", "worker", "i-0", "running", private_address="10.240.0.20"),
               HostRecord("k-workers-1", "workers", "worker", "i-1", "running", private_address="10.240.0.21"),
               HostRecord("k-workers-2", "workers", "worker", "i-2", "running", private_address="10.240.0.22")]
    inv = inventory(records, {"hosts": {}})
    assert [h.address for h in inv] == ["10.240.0.20", "10.240.0.21", "10.240.0.22"]
    with FakeKubernetesAPI(tmp_path) as fake:
        fake.nodes = [dhcp_node("ip-10-240-0-20.eu-west-1.compute.internal", "10.240.0.20", cpu="4"),
                      dhcp_node("ip-10-240-0-21.eu-west-1.compute.internal", "10.240.0.21", cpu="2")]
        fake.pods = [pod("a", "ip-10-240-0-20.eu-west-1.compute.internal", cpu="1")]
        api = kubernetes_api(str(fake.kubeconfig))
        nodes, pods = read_kubernetes(api)
        obs = observe_kubernetes(inv, nodes, pods, 1000.0)
        by = {h.name: h for h in obs.hosts}
        assert by["k-workers-0"].status == READY and by["k-workers-0"].containers == 1
        assert by["k-workers-0"].cpu == pytest.approx(0.25)
        assert by["k-workers-1"].status == READY and by["k-workers-1"].containers == 0
        assert by["k-workers-2"].status == UNKNOWN  # no node has its address
        names = node_names(inv, nodes)
        assert names == {"k-workers-0": "ip-10-240-0-20.eu-west-1.compute.internal",
                         "k-workers-1": "ip-10-240-0-21.eu-west-1.compute.internal"}
        cordon(api, names["k-workers-0"])
        assert fake.nodes[0]["spec"]["unschedulable"] is True
