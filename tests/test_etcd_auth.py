"""etcd's own CA and authentication roles, against a real etcd (TLS, client-certificate auth)
started from the cluster's PKI: every identity can do its job; every identity a worker holds
is refused on /registry/ and on the other clients' prefixes; a Kubernetes-CA certificate is
refused altogether; applying the roles again changes nothing."""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from cryptography import x509

from provision import pki, pki_agents
from provision.etcd import auth as etcd_auth
from provision.etcd import auth_rpc, host_identity
from provision.etcd.client import Etcd, EtcdError
from provision.etcd.v2 import client_of as v2_client
from provision.pki import TLSFiles
from provision.plan import plan
from provision.spec import parse_spec
from provision.state import open_store
from tests.headroom.conftest import free_port

SPEC = {"name": "authz", "provider": {"name": "local", "subnet": "10.250.0.0/24"},
        "etcd": {"count": 1}, "fleet": {"enabled": True},
        "pools": [{"name": "masters", "role": "master", "count": 1},
                  {"name": "workers", "role": "worker", "count": 1}]}
WORKER_IDENTITIES = ("flannel", "agent", "fleet")  # the etcd client keys a worker holds (agent: its own)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("etcd and etcdctl are required (Debian etcd-server, etcd-client)")
        pytest.skip("etcd is not installed")
    base = tmp_path_factory.mktemp("etcd-auth")
    spec = parse_spec(SPEC)
    store = open_store(spec, base / "state")
    hosts = plan(spec, store.read()).desired
    pki.ensure_pki(spec, store, hosts)
    pki_agents.ensure(spec, store, [h.name for h in hosts])  # as bootstrapping each host does
    member = next(h for h in hosts if h.etcd)
    port, peer = free_port(), free_port()
    endpoint = f"https://127.0.0.1:{port}"
    crt = lambda name: str(store.blob_path(f"pki/{name}.crt"))  # noqa: E731
    key = lambda name: str(store.blob_path(f"pki/{name}.key"))  # noqa: E731
    # the same TLS settings templates/env/etcd.env gives a member
    proc = subprocess.Popen(
        ["etcd", "--name", member.name, "--data-dir", str(base / "data"),
         "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
         "--listen-peer-urls", f"https://127.0.0.1:{peer}", "--initial-advertise-peer-urls",
         f"https://127.0.0.1:{peer}", "--initial-cluster", f"{member.name}=https://127.0.0.1:{peer}",
         "--trusted-ca-file", crt("etcd-ca"), "--cert-file", crt(f"etcd-server-{member.name}"),
         "--key-file", key(f"etcd-server-{member.name}"), "--client-cert-auth",
         "--peer-trusted-ca-file", crt("etcd-ca"), "--peer-cert-file", crt(f"etcd-peer-{member.name}"),
         "--peer-key-file", key(f"etcd-peer-{member.name}"), "--peer-client-cert-auth", "--enable-v2"],
        stdout=open(base / "etcd.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    endpoints = (endpoint,)
    root = access_as(store, endpoints, "root")
    deadline = time.monotonic() + 20
    while etcdctl(root, "endpoint", "health").returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline, (base / "etcd.log").read_text()[-2000:]
        time.sleep(0.2)
    try:
        yield {"spec": spec, "store": store, "endpoints": endpoints, "root": root,
               "hosts": [h.name for h in hosts]}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def access_as(store, endpoints, client: str) -> Etcd:
    return Etcd(endpoints, etcd_auth.identity(store, client))


def etcdctl(access: Etcd, *args: str, timeout: float | None = None):
    return access.etcdctl(*args, timeout=timeout)


def as_(cluster, client: str) -> Etcd:
    """`client`'s identity; "agent" is the first worker's own agent identity."""
    if client == "agent":
        return as_agent(cluster, f"{cluster['spec'].name}-workers-0")
    return access_as(cluster["store"], cluster["endpoints"], client)


def as_agent(cluster, host: str) -> Etcd:
    """The agent identity of `host` (its certificate and key as the secrets phase delivers them)."""
    store, name = cluster["store"], pki.agent_identity(host)
    return Etcd(cluster["endpoints"], TLSFiles(store.blob_path("pki/etcd-ca.crt"), store.blob_path(f"pki/{name}.crt"),
                                               store.blob_path(f"pki/{name}.key")))


def put(access: Etcd, key: str, value: str = "x"):
    return etcdctl(access, "put", key, value)


def get(access: Etcd, key: str):
    return etcdctl(access, "get", key, "--prefix")


@pytest.fixture(scope="module")
def authed(cluster):
    first = etcd_auth.apply(cluster["root"], as_(cluster, "provisioner"), cluster["spec"])
    new, gone, agents = host_identity.converge(cluster["root"], cluster["spec"].name, cluster["hosts"])
    assert new == sorted(cluster["hosts"]) and gone == [] and len(agents) == len(new)
    return {**cluster, "first": first}


def test_etcd_certificates_come_from_the_etcd_ca_alone(cluster):
    store = cluster["store"]
    etcd_ca = x509.load_pem_x509_certificate(store.read_blob("pki/etcd-ca.crt"))
    kube_ca = x509.load_pem_x509_certificate(store.read_blob("pki/ca.crt"))
    assert etcd_ca.subject != kube_ca.subject
    names = [b[4:-4] for b in store.list_blobs("pki/") if b.endswith(".crt") and b.startswith("pki/etcd-")]
    assert {"etcd-client-apiserver", "etcd-client-flannel", "etcd-client-root"} <= set(names)
    # no agent identity shared by hosts: each host's own, named after it
    assert "etcd-client-agent" not in names
    assert {f"etcd-agent-{h}" for h in cluster["hosts"]} <= set(names)
    for name in names:
        if name == "etcd-ca":
            continue
        cert = x509.load_pem_x509_certificate(store.read_blob(f"pki/{name}.crt"))
        assert cert.issuer == etcd_ca.subject, name
        cert.verify_directly_issued_by(etcd_ca)
    # and nothing else comes from it
    for blob in store.list_blobs("pki/"):
        if blob.endswith(".crt") and not blob.startswith("pki/etcd-"):
            assert x509.load_pem_x509_certificate(store.read_blob(blob)).issuer != etcd_ca.subject, blob


def test_auth_is_enabled_once_and_applying_again_changes_nothing(authed):
    assert "auth enabled" in authed["first"]
    assert etcd_auth.auth_enabled(as_(authed, "provisioner"))
    assert etcd_auth.apply(authed["root"], as_(authed, "provisioner"), authed["spec"]) == []


def test_every_identity_can_do_its_job(authed):
    cluster = authed["spec"].name
    api, flannel, agent, prov = (as_(authed, c) for c in ("apiserver", "flannel", "agent", "provisioner"))
    assert put(api, "/registry/pods/default/p", "pod").returncode == 0
    assert put(api, "/anything/else").returncode == 0
    assert put(flannel, "/coreos.com/network/subnets/10.2.1.0-24", "{}").returncode == 0
    assert get(flannel, "/coreos.com/network/").returncode == 0
    lease = etcdctl(agent, "lease", "grant", "60")
    assert lease.returncode == 0, lease.stderr
    lease_id = lease.stdout.split()[1]
    load = f"/provision/{cluster}/hosts/{cluster}-workers-0/load"
    assert etcdctl(agent, "put", load, '{"containers": 1}', f"--lease={lease_id}").returncode == 0
    assert put(prov, "/coreos.com/network/config", '{"Network":"10.2.0.0/16"}').returncode == 0
    read = etcdctl(prov, "get", f"/provision/{cluster}/hosts/", "--prefix", "-w", "json")
    assert read.returncode == 0, read.stderr
    # other tests of this module may have written other hosts' keys: this host's is among them
    keys = {base64.b64decode(kv["key"]).decode() for kv in json.loads(read.stdout).get("kvs", [])}
    assert load in keys, keys
    assert put(prov, f"/provision/{cluster}/state", "{}").returncode == 0
    # status and the etcd phase ask membership and health as the provisioner
    assert etcdctl(prov, "member", "list").returncode == 0
    assert etcdctl(prov, "endpoint", "health").returncode == 0


@pytest.mark.parametrize("client", WORKER_IDENTITIES)
def test_a_worker_identity_is_refused_on_the_kubernetes_keyspace_and_other_prefixes(authed, client):
    access = as_(authed, client)
    cluster = authed["spec"].name
    own = {"flannel": "/coreos.com/network/", "agent": f"/provision/{cluster}/hosts/{cluster}-workers-0/load",
           "fleet": "/_coreos.com/fleet/"}[client]
    others = ["/registry/", "/registry/secrets/kube-system/x", "/coreos.com/network/config",
              f"/provision/{cluster}/hosts/{cluster}-workers-0/load", f"/provision/{cluster}/state",
              "/_coreos.com/fleet/job", "/other"]
    for key in others:
        if key.startswith(own):
            continue
        for proc in (put(access, key), get(access, key)):
            assert proc.returncode != 0 and "permission denied" in proc.stderr, (client, key, proc.stderr)
    assert etcdctl(access, "user", "list").returncode != 0
    role = pki.agent_identity(f"{cluster}-workers-0") if client == "agent" else f"etcd-{client}"
    assert etcdctl(access, "role", "grant-permission", role, "readwrite", "/registry/", "--prefix").returncode != 0


def test_a_client_certificate_from_the_kubernetes_ca_is_refused(authed, tmp_path):
    store = authed["store"]
    kube_ca = pki._load_cert(store.read_blob("pki/ca.crt"))
    kube_key = pki._load_key(store.read_blob("pki/ca.key"))
    # a kubelet-like certificate whose CN even names a powerful etcd user
    key, cert = pki.make_leaf(pki.CertSpec("x", "etcd-apiserver", pki.CLIENT), kube_key, kube_ca, 1, "ecdsa-p256")
    (tmp_path / "c.crt").write_bytes(pki.cert_pem(cert))
    (tmp_path / "c.key").write_bytes(pki.key_pem(key))
    access = Etcd(authed["endpoints"], TLSFiles(authed["root"].tls.ca, tmp_path / "c.crt", tmp_path / "c.key"))
    proc = etcdctl(access, "get", "/registry/", "--prefix", timeout=2)
    assert proc.returncode != 0
    assert "bad certificate" in proc.stderr or "deadline exceeded" in proc.stderr or "tls" in proc.stderr.lower()
    # a kubelet's certificate (the Kubernetes CA's, as a node holds) is refused the same way
    kubelet = next(b[:-len(".crt")] for b in store.list_blobs("pki/") if b.startswith("pki/kubelet-") and b.endswith(".crt"))
    node = Etcd(authed["endpoints"], TLSFiles(authed["root"].tls.ca, store.blob_path(f"{kubelet}.crt"),
                                              store.blob_path(f"{kubelet}.key")))
    assert etcdctl(node, "put", "/registry/x", "y", timeout=2).returncode != 0


def test_fleet_turned_off_drops_its_identity(authed):
    spec = parse_spec({**SPEC, "fleet": {"enabled": False}})
    changed = etcd_auth.apply(authed["root"], as_(authed, "provisioner"), spec)
    assert "user etcd-fleet deleted" in changed
    assert put(as_(authed, "fleet"), "/_coreos.com/fleet/x").returncode != 0
    assert etcd_auth.apply(authed["root"], as_(authed, "provisioner"), spec) == []
    # back on: the user comes back (tests do not depend on order: restore the module's state)
    assert "user etcd-fleet" in etcd_auth.apply(authed["root"], as_(authed, "provisioner"), authed["spec"])


def test_the_v3_json_gateway_does_not_take_a_certificate_as_a_user(authed, tmp_path):
    """etcd ignores the client certificate's CN on its /v3 JSON gateway: with auth on, a gateway
    request carries no user and is refused even for etcd-apiserver. Hence host scripts that
    write etcd (bootstrap.sh) cannot rely on the gateway; provision's phases use gRPC (etcdctl)."""
    import base64
    import ssl
    import urllib.error
    import urllib.request
    store = authed["store"]
    ctx = ssl.create_default_context(cafile=str(authed["root"].tls.ca))
    ctx.load_cert_chain(str(store.blob_path("pki/etcd-client-apiserver.crt")),
                        str(store.blob_path("pki/etcd-client-apiserver.key")))
    body = json.dumps({"key": base64.b64encode(b"/registry/x").decode(),
                       "value": base64.b64encode(b"y").decode()}).encode()
    request = urllib.request.Request(f"{authed['endpoints'][0]}/v3/kv/put", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, context=ctx, timeout=5)
    assert err.value.code == 400 and "CommonName" in err.value.read().decode()  # "... will be ignored"
    # the same identity over gRPC is allowed
    assert put(as_(authed, "apiserver"), "/registry/x", "y").returncode == 0


# ---- v2 keyspace: on for fleet (the host agents speak v3 only) --------------------------------

@pytest.fixture(scope="module")
def authed_v2(authed):
    first = etcd_auth.apply_v2(authed["root"], authed["spec"])
    return {**authed, "first_v2": first}


def v2_write(access: Etcd, key: str, value: str = "x"):
    """None when written, else the error python-etcd raised."""
    import etcd
    try:
        v2_client(access).write(key, value)
        return None
    except etcd.EtcdException as err:
        return err


def test_v2_auth_is_enabled_once_and_applying_again_changes_nothing(authed_v2):
    assert "v2 auth enabled" in authed_v2["first_v2"] and "v2 guest role emptied" in authed_v2["first_v2"]
    assert etcd_auth.apply_v2(authed_v2["root"], authed_v2["spec"]) == []


def test_v2_identities_reach_only_their_prefixes(authed_v2, tmp_path):
    cluster = authed_v2["spec"].name
    load = f"/provision/{cluster}/hosts/{cluster}-workers-0/load"
    agent, fleet, prov = (as_(authed_v2, c) for c in ("agent", "fleet", "provisioner"))
    assert v2_write(agent, load, '{"containers": 1}') is not None  # no v2 user: the emptied guest role
    assert v2_write(fleet, "/_coreos.com/fleet/machines/x", "m") is None
    assert v2_write(prov, f"/provision/{cluster}/headroom", "{}") is None
    assert v2_write(agent, "/_coreos.com/fleet/machines/x") is not None
    assert v2_write(fleet, load) is not None
    assert v2_write(agent, "/coreos.com/network/config") is not None
    assert v2_write(fleet, f"/provision/{cluster}/headroom") is not None
    # a certificate of the etcd CA whose CN is no user (a member's) falls to the emptied guest role
    member = next(b[len("pki/etcd-server-"):-4] for b in authed_v2["store"].list_blobs("pki/")
                  if b.startswith("pki/etcd-server-") and b.endswith(".crt"))
    stranger = Etcd(authed_v2["endpoints"], TLSFiles(authed_v2["root"].tls.ca,
                                                     authed_v2["store"].blob_path(f"pki/etcd-server-{member}.crt"),
                                                     authed_v2["store"].blob_path(f"pki/etcd-server-{member}.key")))
    assert v2_write(stranger, "/anything") is not None


# ---- each host agent's own identity ----------------------------------------------------------

def test_a_host_agent_writes_only_its_own_load_key(authed):
    """Host A's agent identity writes A's load key (on a lease, as the agent does) and is refused
    on B's load key, on /registry/, on provision's and flannel's prefixes; B's likewise."""
    cluster = authed["spec"].name
    a, b = f"{cluster}-masters-0", f"{cluster}-workers-0"
    for me, other in ((a, b), (b, a)):
        agent = as_agent(authed, me)
        lease = etcdctl(agent, "lease", "grant", "60")
        assert lease.returncode == 0, lease.stderr
        mine = f"/provision/{cluster}/hosts/{me}/load"
        assert etcdctl(agent, "put", mine, '{"containers": 2}', f"--lease={lease.stdout.split()[1]}").returncode == 0
        assert etcdctl(agent, "get", mine).returncode == 0  # its one key (not a prefix)
        for key in (f"/provision/{cluster}/hosts/{other}/load", f"/provision/{cluster}/hosts/{me}/drain",
                    f"/provision/{cluster}/hosts/", f"/provision/{cluster}/state", "/registry/",
                    "/registry/secrets/kube-system/x", "/coreos.com/network/config", "/other"):
            for proc in (put(agent, key), get(agent, key)):
                assert proc.returncode != 0 and "permission denied" in proc.stderr, (me, key, proc.stderr)
    # what A wrote is A's, as provision reads it
    read = etcdctl(as_(authed, "provisioner"), "get", f"/provision/{cluster}/hosts/{a}/load", "--print-value-only")
    assert read.stdout.strip() == '{"containers": 2}'


class Counted:
    """Counts what host_identity costs: etcdctl processes started through `access` and gRPC
    sessions (one connection each) with the requests sent over them."""

    def __init__(self, root: Etcd, monkeypatch):
        self.calls: list[tuple[str, ...]] = []
        self.sessions: list[auth_rpc.AuthSession] = []
        calls, sessions = self.calls, self.sessions

        class CountingEtcd(Etcd):
            def etcdctl(self, *args, **kwargs):
                calls.append(args)
                return super().etcdctl(*args, **kwargs)

        class CountingSession(auth_rpc.AuthSession):
            def __init__(self, etcd):
                super().__init__(etcd)
                sessions.append(self)

        self.access = CountingEtcd(root.endpoints, root.tls)
        monkeypatch.setattr(host_identity, "AuthSession", CountingSession)

    def requests(self) -> int:
        return sum(s.requests for s in self.sessions)

    def clear(self) -> None:
        self.calls.clear()
        self.sessions.clear()


def server_auth_requests(cluster) -> dict[str, int]:
    """{method: requests etcd itself counted} of its Auth service, from the member's /metrics."""
    import ssl
    import urllib.request
    root, store = cluster["root"], cluster["store"]
    ctx = ssl.create_default_context(cafile=str(root.tls.ca))
    ctx.load_cert_chain(str(root.tls.cert), str(root.tls.key))
    with urllib.request.urlopen(f"{cluster['endpoints'][0]}/metrics", context=ctx, timeout=5) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("grpc_server_started_total{") and 'grpc_service="etcdserverpb.Auth"' in line:
            method = line.split('grpc_method="', 1)[1].split('"', 1)[0]
            found[method] = int(float(line.rsplit(" ", 1)[1]))
    return found


def test_a_destroyed_hosts_identity_is_removed_and_only_new_hosts_cost_etcd_calls(authed, monkeypatch):
    """converge() adds users for new hosts only and removes those of hosts gone; with nothing new
    it makes one etcd request (the user list) and starts no etcdctl. A removed host's certificate
    is refused by etcd; a user of another cluster's host is left alone."""
    cluster, root = authed["spec"].name, authed["root"]
    hosts = authed["hosts"]
    counted = Counted(root, monkeypatch)
    counting = counted.access
    assert etcdctl(root, "user", "add", "etcd-agent-othercluster-workers-0", "--no-password").returncode == 0
    assert host_identity.converge(counting, cluster, hosts, hosts) == ([], [], [])
    assert counted.calls == [] and len(counted.sessions) == 1 and counted.requests() == 1
    counted.clear()
    gone = f"{cluster}-workers-0"
    load = f"/provision/{cluster}/hosts/{gone}/load"
    try:
        _, removed, changed = host_identity.converge(counting, cluster, [h for h in hosts if h != gone], hosts)
        assert removed == [gone] and changed == [f"agent identity {pki.agent_identity(gone)} deleted"]
        assert counted.requests() == 1 + 2  # the list, then the user and the role: constant per host
        users = etcdctl(root, "user", "list").stdout.split()
        assert pki.agent_identity(gone) not in users and pki.agent_identity(f"{cluster}-masters-0") in users
        assert "etcd-agent-othercluster-workers-0" in users
        proc = put(as_agent(authed, gone), load)
        assert proc.returncode != 0 and "permission denied" in proc.stderr  # its certificate names no user now
        # the shared-identity cleanup of auth.apply leaves the per-host users alone
        assert etcd_auth.apply(root, as_(authed, "provisioner"), authed["spec"]) == []
    finally:  # put it back (tests do not depend on order)
        counted.clear()
        new, _, _ = host_identity.converge(counting, cluster, hosts, [h for h in hosts if h != gone])
        assert new == [gone] and counted.requests() == 1 + 4  # the list; user, role, permission, role to user
        # a host whose making failed half way (its user there, state not recording it) is made again
        counted.clear()
        assert etcdctl(root, "role", "revoke-permission", pki.agent_identity(gone), load).returncode == 0
        assert put(as_agent(authed, gone), load).returncode != 0
        new, _, _ = host_identity.converge(counting, cluster, hosts, [h for h in hosts if h != gone])
        assert new == [gone] and counted.requests() == 1 + 4 and counted.calls == []
        assert etcdctl(root, "user", "delete", "etcd-agent-othercluster-workers-0").returncode == 0
    assert put(as_agent(authed, gone), load).returncode == 0


def make_agent_certificates(cluster, hosts) -> None:
    """Each host's agent certificate from the cluster's etcd CA, as the pki phase makes it."""
    maker = pki._PKI(cluster["spec"], cluster["store"], None)
    cas = pki._cas(maker)
    for host in hosts:
        name = pki.agent_identity(host)
        maker.leaf(pki.CertSpec(name, name, pki.CLIENT, issuer=pki.ETCD_CA), cas)


def auth_snapshot(root: Etcd, names) -> dict[str, str]:
    """What etcd says of users and roles (all of them listed; `names` each in full)."""
    snapshot = {"users": etcdctl(root, "user", "list").stdout, "roles": etcdctl(root, "role", "list").stdout}
    for name in names:
        snapshot[f"user {name}"] = etcdctl(root, "user", "get", name).stdout
        snapshot[f"role {name}"] = etcdctl(root, "role", "get", name).stdout
    return snapshot


def test_fifty_new_hosts_get_their_identities_through_one_connection(authed, monkeypatch):
    """50 new hosts at once: one gRPC session as root (no etcdctl process), etcd itself counts
    exactly one list plus four requests per host; each host then writes its own load key and
    is refused on its neighbour's; a re-run changes nothing; removing them is one session too."""
    cluster, root = authed["spec"].name, authed["root"]
    hosts = authed["hosts"]
    many = [f"{cluster}-many-{i:02d}" for i in range(50)]
    make_agent_certificates(authed, many)
    counted = Counted(root, monkeypatch)
    before = server_auth_requests(authed)
    try:
        new, gone, changed = host_identity.converge(counted.access, cluster, hosts + many, hosts)
        assert new == many and gone == [] and len(changed) == 50
        assert counted.calls == [] and len(counted.sessions) == 1 and counted.requests() == 1 + 4 * 50
        after = server_auth_requests(authed)
        grown = {m: after.get(m, 0) - before.get(m, 0) for m in after}
        assert {m: n for m, n in grown.items() if n} == {"UserList": 1, "UserAdd": 50, "RoleAdd": 50,
                                                          "RoleGrantPermission": 50, "UserGrantRole": 50}
        for me, neighbour in zip(many, many[1:] + many[:1]):
            agent = as_agent(authed, me)
            assert put(agent, f"/provision/{cluster}/hosts/{me}/load", '{"containers": 1}').returncode == 0, me
            proc = put(agent, f"/provision/{cluster}/hosts/{neighbour}/load")
            assert proc.returncode != 0 and "permission denied" in proc.stderr, (me, proc.stderr)
        # re-run: state records them, one list request; state lost: made again, etcd unchanged
        sample = [pki.agent_identity(h) for h in many[:3]]
        snapshot = auth_snapshot(root, sample)
        counted.clear()
        assert host_identity.converge(counted.access, cluster, hosts + many, hosts + many) == ([], [], [])
        assert counted.requests() == 1 and counted.calls == []
        counted.clear()
        new, gone, _ = host_identity.converge(counted.access, cluster, hosts + many, hosts)
        assert new == many and gone == [] and len(counted.sessions) == 1 and counted.requests() == 1 + 4 * 50
        assert auth_snapshot(root, sample) == snapshot
    finally:  # removal: one session, a user and a role per host
        counted.clear()
        new, gone, _ = host_identity.converge(counted.access, cluster, hosts, hosts + many)
        assert new == [] and gone == many
        assert counted.calls == [] and len(counted.sessions) == 1 and counted.requests() == 1 + 2 * 50
    users = etcdctl(root, "user", "list").stdout.split()
    assert not [u for u in users if "-many-" in u] and pki.agent_identity(hosts[0]) in users
    proc = put(as_agent(authed, many[0]), f"/provision/{cluster}/hosts/{many[0]}/load")
    assert proc.returncode != 0 and "permission denied" in proc.stderr
    host_identity.forget_certificates(authed["store"], many)


def test_an_etcd_that_refuses_names_the_step_and_a_rerun_finishes(authed, monkeypatch):
    """A request etcd refuses (here: a grant for a role that another actor deleted between the
    waves) fails with the step named; the next converge makes the host whole."""
    cluster, root = authed["spec"].name, authed["root"]
    hosts = authed["hosts"]
    host = f"{cluster}-late-0"
    name = pki.agent_identity(host)
    real_batch = auth_rpc.AuthSession.batch

    def racing_batch(self, what, tolerate=""):
        if any("granting" in description for description, _ in what):
            assert etcdctl(root, "role", "delete", name).returncode == 0
        return real_batch(self, what, tolerate)

    monkeypatch.setattr(auth_rpc.AuthSession, "batch", racing_batch)
    with pytest.raises(EtcdError, match=f"granting {name} its load key failed: .*role name not found"):
        host_identity.converge(root, cluster, hosts + [host], hosts)
    monkeypatch.setattr(auth_rpc.AuthSession, "batch", real_batch)
    make_agent_certificates(authed, [host])
    try:
        assert host_identity.converge(root, cluster, hosts + [host], hosts)[0] == [host]
        assert put(as_agent(authed, host), f"/provision/{cluster}/hosts/{host}/load").returncode == 0
    finally:
        assert host_identity.converge(root, cluster, hosts, hosts + [host])[1] == [host]
        host_identity.forget_certificates(authed["store"], [host])


def test_forgetting_a_hosts_identity_drops_its_certificate_from_state(authed, tmp_path):
    store = open_store(authed["spec"], tmp_path / "state")
    store.write_blob("pki/etcd-agent-x.crt", b"c", secret=False)
    store.write_blob("pki/etcd-agent-x.key", b"k", secret=True)
    store.write_blob("pki/etcd-agent-y.key", b"k", secret=True)
    host_identity.forget_certificates(store, ["x"])
    assert store.list_blobs("pki/") == ["pki/etcd-agent-y.key"]
