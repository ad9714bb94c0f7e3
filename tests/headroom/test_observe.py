"""Observation: load keys in a real etcd over TLS, and the Kubernetes API through the real
client against a local API server."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.real import require

from fakes.kubernetes_api import FakeKubernetesAPI, node, pdb, pod
from provision.errors import ActionError, UserError
from provision.etcd.client import Etcd
from provision.headroom.observe import (InventoryHost, cordon, evict, inventory, kubernetes_api, load_key,
                                        node_pods, observe_etcd, observe_kubernetes, parse_load, read_etcd_loads,
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
    """What a host agent does: the load document on a lease of `ttl` seconds (etcd v3)."""
    doc = {"containers": 0, "cpu": 0.1, "memory": 0.1, "at": time.time() if at is None else at}
    doc.update(load)
    client.put(load_key(cluster, host), json.dumps(doc), client.grant(ttl))


def test_etcd_loads_over_tls_fresh_skewed_and_missing(etcd_v3_server):
    cluster = f"c{uuid.uuid4().hex[:8]}"
    client = etcd_v3_server.v3()
    publish(client, cluster, f"{cluster}-masters-0", containers=1)
    publish(client, cluster, f"{cluster}-workers-0", containers=5, cpu=0.6, memory=0.4)
    publish(client, cluster, f"{cluster}-workers-1", at=time.time() - 600)  # the agent's clock is off
    # workers-2 never published: unknown, never idle
    publish(client, f"other{cluster}", f"{cluster}-workers-2", containers=3)  # another cluster's key
    client.put(f"/provision/{cluster}/hosts/{cluster}-workers-0/drain", "1")  # not a load key
    loads = read_etcd_loads(client, cluster)
    assert set(loads) == {f"{cluster}-masters-0", f"{cluster}-workers-0", f"{cluster}-workers-1"}
    obs = observe_etcd(hosts(cluster), loads, time.time())
    by = {h.name: h for h in obs.hosts}
    assert by[f"{cluster}-workers-0"].status == READY and by[f"{cluster}-workers-0"].containers == 5
    assert by[f"{cluster}-workers-0"].cpu == pytest.approx(0.6)
    assert by[f"{cluster}-workers-1"].status == READY  # its lease is live: the key is fresh
    assert by[f"{cluster}-workers-2"].status == UNKNOWN and by[f"{cluster}-workers-2"].containers == 0
    assert by[f"{cluster}-masters-0"].etcd


def test_etcd_load_key_expires_with_its_lease(etcd_v3_server):
    cluster = f"c{uuid.uuid4().hex[:8]}"
    client = etcd_v3_server.v3()
    publish(client, cluster, f"{cluster}-workers-0", ttl=1)
    assert f"{cluster}-workers-0" in read_etcd_loads(client, cluster)
    deadline = time.monotonic() + 8  # etcd's minimum lease TTL is about 2 s
    while read_etcd_loads(client, cluster):
        assert time.monotonic() < deadline, "the load key outlived its lease"
        time.sleep(0.25)


def test_etcd_refuses_a_client_certificate_from_another_ca(etcd_v3_server):
    client = Etcd([etcd_v3_server.endpoint], etcd_v3_server.other_tls, timeout=3)
    with pytest.raises(ActionError, match="cannot"):
        read_etcd_loads(client, "anything")


def test_etcd_client_argument_errors():
    from provision.etcd.v2 import client as etcd_client
    with pytest.raises(UserError, match="no endpoints"):
        Etcd((), None)
    with pytest.raises(UserError, match="client certificate"):
        Etcd(("https://127.0.0.1:2379",), None)
    with pytest.raises(UserError, match="no endpoints"):
        etcd_client([], None)
    with pytest.raises(UserError, match="client certificate"):
        etcd_client(["https://127.0.0.1:2379"], None)
    with pytest.raises(UserError, match="one scheme"):
        etcd_client(["ftp://127.0.0.1:2379"], None)


@pytest.mark.parametrize("raw", [None, "not json", "[]", '{"containers": -1, "cpu": 0, "memory": 0, "at": 1}',
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


def test_kubernetes_cordon_moves_nothing_and_eviction_honours_budgets(tmp_path):
    with FakeKubernetesAPI(tmp_path) as fake:
        fake.nodes = [node("k-workers-0")]
        fake.pods = [pod("a", "k-workers-0", labels={"app": "web"}), pod("b", "k-workers-1", labels={"app": "web"}),
                     pod("ds", "k-workers-0", daemonset=True), pod("x", "k-workers-1")]
        fake.pdbs = [pdb("web", {"app": "web"}, min_available=2)]
        api = kubernetes_api(str(fake.kubeconfig))
        assert [p.metadata.name for p in node_pods(api, "k-workers-0")] == ["a"]
        cordon(api, "k-workers-0")
        assert fake.nodes[0]["spec"]["unschedulable"] is True
        assert [p.metadata.name for p in node_pods(api, "k-workers-0")] == ["a"]  # cordon moves nothing
        assert ("PATCH", "/api/v1/nodes/k-workers-0") in fake.requests
        target = node_pods(api, "k-workers-0")[0]
        assert evict(api, target) == "wait"  # 429: the budget needs 2 healthy web pods
        assert fake.evictions == [("default/a", 429)]
        fake.pdbs = [pdb("web", {"app": "web"}, max_unavailable=1)]
        assert evict(api, target) == "evicted"
        assert ("POST", "/api/v1/namespaces/default/pods/a/eviction") in fake.requests
        assert node_pods(api, "k-workers-0") == [] and evict(api, target) == "gone"


def test_kubernetes_pending_demand_is_only_unschedulable_pods_a_new_worker_could_run(tmp_path):
    # Issue: every pending pod counted, including another pool's and a 64-CPU pod.
    with FakeKubernetesAPI(tmp_path) as fake:
        fake.nodes = [node("k-workers-0", cpu="4", memory="8Gi", labels={"pool": "workers", "kubernetes.io/hostname":
                                                                        "k-workers-0"})]
        fake.pods = [pod("fits", None, cpu="1", memory="1Gi"),
                     pod("ours", None, cpu="1", node_selector={"pool": "workers"}),
                     pod("theirs", None, cpu="1", node_selector={"pool": "gpu"}),
                     pod("huge", None, cpu="64", memory="1Gi"),
                     pod("not-tried-yet", None, unschedulable=False)]
        api = kubernetes_api(str(fake.kubeconfig))
        nodes, pods = read_kubernetes(api)
    inv = [InventoryHost("k-workers-0", "workers", "worker")]
    obs = observe_kubernetes(inv, nodes, pods, 1000.0, pool="workers")
    assert obs.pending == 2 and obs.pending_cpu == pytest.approx(2 / 4)
    assert observe_kubernetes(inv, nodes, pods, 1000.0).pending == 4  # without a pool: every unschedulable pod


def test_kubernetes_errors_are_named(tmp_path):
    with pytest.raises(UserError, match="headroom.kubeconfig"):
        kubernetes_api(str(tmp_path / "missing"))
    with FakeKubernetesAPI(tmp_path) as fake:
        text = fake.kubeconfig.read_text().replace("test-token-not-secret", "wrong")
        fake.kubeconfig.write_text(text)
        api = kubernetes_api(str(fake.kubeconfig))
        with pytest.raises(ActionError, match="cannot list"):
            read_kubernetes(api)


def run_agent(server, cluster, host, **env_extra):
    import os
    import subprocess

    from provision.resources import data_dir
    require("curl")
    tls = server.client_tls
    env = dict(os.environ, AGENT_CLUSTER=cluster, AGENT_HOST=host, AGENT_ETCD_ENDPOINTS=server.endpoint,
               AGENT_CA=str(tls.ca), AGENT_CERT=str(tls.cert), AGENT_KEY=str(tls.key), AGENT_ONCE="1",
               AGENT_TTL="30", AGENT_CONTAINERS_CMD="echo 5")
    env.update(env_extra)
    script = data_dir("templates") / "scripts" / "host-agent.sh"
    return subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("transport", ["etcdctl", "gateway"])
def test_the_real_host_agent_script_publishes_what_observe_reads(etcd_v3_server, tmp_path, transport):
    """templates/scripts/host-agent.sh (what every host runs) against a real etcd over TLS with
    the v2 API off, through etcdctl (gRPC) or the JSON gateway (curl): its one load key, on a
    lease of AGENT_TTL."""
    import shutil
    if shutil.which("curl") is None or shutil.which("etcdctl") is None:
        pytest.fail("curl and etcdctl are needed (Debian curl, etcd-client)")
    cluster = f"c{uuid.uuid4().hex[:8]}"
    host = f"{cluster}-workers-0"
    done = run_agent(etcd_v3_server, cluster, host, AGENT_TRANSPORT=transport)
    assert done.returncode == 0, done.stderr
    client = etcd_v3_server.v3()
    obs = observe_etcd(hosts(cluster), read_etcd_loads(client, cluster), time.time())
    by = {h.name: h for h in obs.hosts}
    assert by[host].status == READY and by[host].containers == 5
    assert 0 <= by[host].cpu <= 1 and 0 < by[host].memory <= 1
    assert by[f"{cluster}-workers-1"].status == UNKNOWN
    written = client.get_prefix(f"/provision/{cluster}/")
    assert list(written) == [load_key(cluster, host)]  # the agent writes that one key only
    lease = written[load_key(cluster, host)][1]
    assert lease and 0 < client.keepalive(lease) <= 30
    # the lease goes: the key goes with it (what a stopped agent leaves)
    client.revoke(lease)
    assert read_etcd_loads(client, cluster) == {}


@pytest.mark.parametrize("transport", ["etcdctl", "gateway"])
def test_the_host_agent_reports_failure_when_no_etcd_answers(tmp_path, etcd_v3_server, transport):
    done = run_agent(etcd_v3_server, "c", "c-workers-0", AGENT_ETCD_ENDPOINTS="https://127.0.0.1:9",
                     AGENT_TRANSPORT=transport)
    assert done.returncode != 0 and "host-agent:" in done.stderr


def test_with_etcd_auth_the_agent_identity_writes_only_its_load_key(tmp_path):
    """etcd auth on, the agent's certificate CN a user whose role may write only its host's
    load key (what issue 10's roles do): the agent publishes through etcdctl (gRPC maps the
    CN); a write anywhere else is refused; the JSON gateway, which maps no CN, gets nowhere."""
    import os
    import signal
    import subprocess

    from tests.headroom.conftest import start_etcd, wait_healthy, write_tls
    from provision.pki import make_ca
    ca_key, ca_cert = make_ca("auth-ca", 30, "ecdsa-p256")
    server = write_tls(tmp_path, "server", ca_key, ca_cert, "peer", ips=("127.0.0.1",), dns=("localhost",))
    root = write_tls(tmp_path, "root", ca_key, ca_cert, "client")
    agent = write_tls(tmp_path, "etcd-agent", ca_key, ca_cert, "client")
    proc, endpoint = start_etcd(tmp_path, server, v2=False)
    try:
        wait_healthy(endpoint, root, proc)
        host, key = "c-workers-0", load_key("c", "c-workers-0")

        def etcdctl(tls, *args):
            return subprocess.run(["etcdctl", f"--endpoints={endpoint}", f"--cacert={tls.ca}", f"--cert={tls.cert}",
                                   f"--key={tls.key}", *args], capture_output=True, text=True,
                                  env=dict(os.environ, ETCDCTL_API="3"), timeout=30)
        for args in (["user", "add", "root:not-a-secret"], ["role", "add", "root"],
                     ["user", "grant-role", "root", "root"], ["user", "add", "etcd-agent", "--no-password"],
                     ["role", "add", "host-load"], ["role", "grant-permission", "host-load", "readwrite", key],
                     ["user", "grant-role", "etcd-agent", "host-load"], ["auth", "enable"]):
            assert etcdctl(root, *args).returncode == 0, args
        server_like = type("S", (), {"client_tls": agent, "endpoint": endpoint})
        done = run_agent(server_like, "c", host, AGENT_TRANSPORT="etcdctl")
        assert done.returncode == 0, done.stderr
        got = etcdctl(root, "get", key, "--print-value-only")
        assert json.loads(got.stdout)["containers"] == 5
        other = etcdctl(agent, "put", load_key("c", "c-workers-1"), "{}")
        assert other.returncode != 0 and "permission denied" in other.stderr
        refused = run_agent(server_like, "c", host, AGENT_TRANSPORT="gateway")
        assert refused.returncode != 0 and "host-agent:" in refused.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
