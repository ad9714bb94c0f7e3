"""PKI: every certificate verifies against the CA with the SANs it must carry (checked with
openssl), material is reused, renewed when unfit, rotated on request, kept secret."""
from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from provision import pki, pki_agents
from provision.plan import plan
from provision.spec import load_spec
from provision.state import open_store

from tests.helpers_render import SMALL_SPEC, prepared, write_spec

THREE_MASTERS = """\
name: tri
provider:
  name: local
  subnet: 10.78.0.0/24
kubernetes:
  cluster_domain: corp.example
  api_server_names: [k8s.example.com, 192.0.2.7]
pools:
  - name: masters
    role: master
    count: 3
  - name: workers
    role: worker
    count: 1
"""


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def sans_of(path: Path) -> set[str]:
    out = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(path)).stdout
    lines = [ln.strip() for ln in out.splitlines()[1:] if ln.strip()]
    return {s.strip().replace("IP Address:", "IP:") for ln in lines for s in ln.split(",")}


@pytest.fixture
def tri(tmp_path):
    return prepared(write_spec(tmp_path, THREE_MASTERS), tmp_path / "state")


def test_every_certificate_verifies_against_its_ca_with_openssl(tri, tmp_path):
    spec, store, state, hosts = tri
    root = store.root / "pki"
    cas = {pki.CA: root / "ca.crt", pki.FRONT_PROXY_CA: root / "front-proxy-ca.crt",
           pki.ETCD_CA: root / "etcd-ca.crt"}
    wanted = pki.wanted_certs(spec, hosts)
    # etcd server+peer, etcd clients, apiserver pair, kubelets, rest (the agents': test_pki_agents)
    assert len(wanted) == 3 * 2 + 5 + 2 + 3 + 4
    for want in wanted:
        crt = root / f"{want.name}.crt"
        proc = openssl("verify", "-CAfile", str(cas[want.issuer]), str(crt))
        assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), (want.name, proc.stdout, proc.stderr)
        # and against no other CA: etcd trusts only its own, the API server not etcd's
        for other, path in cas.items():
            if other != want.issuer:
                assert openssl("verify", "-CAfile", str(path), str(crt)).returncode != 0, (want.name, other)
    assert {w.name for w in wanted if w.issuer == pki.ETCD_CA} == {
        w.name for w in wanted if w.name.startswith("etcd-")}


def test_apiserver_and_etcd_certificates_carry_the_required_sans(tri):
    spec, store, state, hosts = tri
    root = store.root / "pki"
    api = sans_of(root / "apiserver.crt")
    required = {"DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.corp.example", "IP:10.3.0.1", "DNS:k8s.example.com",
                "IP:192.0.2.7", "DNS:tri-masters-0", "DNS:tri-masters-2"}
    required |= {f"IP:{h.address}" for h in hosts if h.role == "master"}
    assert required <= api, required - api
    for host in (h for h in hosts if h.etcd):
        for kind in ("server", "peer"):
            sans = sans_of(root / f"etcd-{kind}-{host.name}.crt")
            assert {f"DNS:{host.name}", f"IP:{host.address}", "IP:127.0.0.1"} <= sans
    usage = openssl("x509", "-noout", "-ext", "extendedKeyUsage", "-in",
                    str(root / f"etcd-peer-{hosts[0].name}.crt")).stdout
    assert "TLS Web Server Authentication" in usage and "TLS Web Client Authentication" in usage
    subject = openssl("x509", "-noout", "-subject", "-in", str(root / "kubelet-tri-masters-1.crt")).stdout
    assert "O = system:nodes" in subject and "CN = system:node:tri-masters-1" in subject


def test_keys_are_secret_files_in_a_private_directory(tri):
    spec, store, state, hosts = tri
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    keys = list((store.root / "pki").rglob("*.key")) + [store.root / "pki" / "ssh" / "id_ed25519",
                                                        store.root / "pki" / "bootstrap-token"]
    assert len(keys) > 20
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    text = (store.root / "pki" / "ca.key").read_text()
    assert "PRIVATE KEY" in text


def test_ecdsa_p256_by_default_and_validity_from_the_spec(tri):
    spec, store, state, hosts = tri
    root = store.root / "pki"
    text = openssl("x509", "-noout", "-text", "-in", str(root / "admin.crt")).stdout
    assert "id-ecPublicKey" in text and "prime256v1" in text
    certs = {c["name"]: c for c in pki.show(spec, store)}
    assert 3640 <= certs["ca"]["days_left"] <= 3650
    assert 360 <= certs["admin"]["days_left"] <= 365
    assert all(c["verified"] for c in certs.values())


def test_rsa_2048_when_asked(tmp_path):
    text = SMALL_SPEC + "pki:\n  algorithm: rsa-2048\n  leaf_days: 30\n"
    spec, store, state, hosts = prepared(write_spec(tmp_path, text), tmp_path / "state")
    out = openssl("x509", "-noout", "-text", "-in", str(store.root / "pki" / "apiserver.crt")).stdout
    assert "rsaEncryption" in out and "2048 bit" in out
    assert {c["name"]: c for c in pki.show(spec, store)}["apiserver"]["days_left"] in (29, 30)


def test_second_run_reuses_everything_byte_for_byte(tri):
    spec, store, state, hosts = tri
    before = {name: store.read_blob(name) for name in store.list_blobs("pki/")}
    summary = pki.ensure_pki(spec, store, hosts)
    assert summary["created"] == []
    assert {name: store.read_blob(name) for name in store.list_blobs("pki/")} == before


def test_a_new_san_reissues_only_the_certificate_that_needs_it(tmp_path):
    path = write_spec(tmp_path, THREE_MASTERS)
    spec, store, state, hosts = prepared(path, tmp_path / "state")
    before = {name: store.read_blob(name) for name in store.list_blobs("pki/")}
    path.write_text(THREE_MASTERS.replace("api_server_names: [k8s.example.com, 192.0.2.7]",
                                          "api_server_names: [k8s.example.com, 192.0.2.7, api.example.org]"))
    spec = load_spec(path)
    summary = pki.ensure_pki(spec, store, hosts)
    assert summary["created"] == ["apiserver"]
    assert "DNS:api.example.org" in sans_of(store.root / "pki" / "apiserver.crt")
    changed = {n for n in store.list_blobs("pki/") if store.read_blob(n) != before[n]}
    assert changed == {"pki/apiserver.crt", "pki/apiserver.key"}


def test_growing_the_plan_adds_certificates_for_new_hosts_only(tmp_path):
    spec, store, state, hosts = prepared(write_spec(tmp_path, THREE_MASTERS), tmp_path / "state")
    bigger = write_spec(tmp_path, THREE_MASTERS.replace("count: 3", "count: 4"), "bigger.yaml")
    spec2 = load_spec(bigger)
    summary = pki.ensure_pki(spec2, store, plan(spec2, state).desired)
    assert "kubelet-tri-masters-3" in summary["created"]
    assert "apiserver" in summary["created"]  # the new master's name and address are SANs
    # etcd stays on 3 members; the new host's agent certificate waits for its bootstrap (pki_agents)
    assert [n for n in summary["created"] if n.startswith("etcd-")] == []


def test_a_replaced_ca_reissues_every_leaf(tri):
    spec, store, state, hosts = tri
    store.delete_blob("pki/ca.key")
    summary = pki.ensure_pki(spec, store, hosts)
    assert "ca" in summary["created"]
    issued_by_ca = {w.name for w in pki.wanted_certs(spec, hosts) if w.issuer == pki.CA}
    assert issued_by_ca <= set(summary["created"])
    assert "front-proxy-client" in summary["reused"]
    assert all(c["verified"] for c in pki.show(spec, store))


def test_a_ca_key_of_a_type_that_cannot_sign_leaves_is_replaced(tri):
    # provision makes RSA or ECDSA keys only; an Ed25519 CA put in the store by hand matches its
    # certificate but cannot sign with SHA-256: a new CA is made instead of failing on each leaf
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import NameOID
    spec, store, state, hosts = tri
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hand-made-ca")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, None))
    store.write_blob("pki/ca.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()), secret=True)
    store.write_blob("pki/ca.crt", cert.public_bytes(serialization.Encoding.PEM), secret=False)
    summary = pki.ensure_pki(spec, store, hosts)
    assert "ca" in summary["created"]
    made = serialization.load_pem_private_key(store.read_blob("pki/ca.key"), password=None)
    assert isinstance(made, ec.EllipticCurvePrivateKey)
    assert all(c["verified"] for c in pki.show(spec, store))


def test_a_corrupt_leaf_is_made_again(tri):
    spec, store, state, hosts = tri
    store.write_blob("pki/admin.crt", b"not a certificate", secret=False)
    assert pki.ensure_pki(spec, store, hosts)["created"] == ["admin"]


def test_rotate_renews_leaves_and_keeps_the_cas(tri):
    spec, store, state, hosts = tri
    ca = store.read_blob("pki/ca.crt")
    admin = store.read_blob("pki/admin.crt")
    renewed = pki.rotate(spec, store, hosts, leaf="admin")
    assert renewed == ["admin"] and store.read_blob("pki/admin.crt") != admin
    everything = pki.rotate(spec, store, hosts)
    # the cluster's leaves and the agents' of the hosts bootstrapped (every one, in `prepared`)
    assert set(everything) == {w.name for w in pki.wanted_certs(spec, hosts)} | {f"etcd-agent-{h.name}" for h in hosts}
    assert store.read_blob("pki/ca.crt") == ca
    assert all(c["verified"] for c in pki.show(spec, store))


def test_client_tls_and_the_ssh_key_pair(tri):
    spec, store, state, hosts = tri
    tls = pki.client_tls(store)
    assert tls.cert.name == "etcd-client-provisioner.crt" and tls.key.exists() and tls.ca.exists()
    assert openssl("verify", "-CAfile", str(tls.ca), str(tls.cert)).returncode == 0
    public = pki.ssh_public_key(store)
    assert public.startswith("ssh-ed25519 ") and public.endswith("provision@tri")
    private = pki.ssh_private_key_path(store)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, timeout=30)
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.split()[:2] == public.split()[:2]
    token_id, secret = pki.bootstrap_token(store)
    assert len(token_id) == 6 and len(secret) == 16


def test_cli_pki_show_lists_certificates_without_secrets(cli, tmp_path):
    path = write_spec(tmp_path, SMALL_SPEC)
    state_dir = tmp_path / "state"
    spec = load_spec(path)
    store = open_store(spec, state_dir)
    pki.ensure_pki(spec, store, plan(spec, store.read()).desired)
    result = cli("pki", "show", path, "--state-dir", state_dir, "-o", "json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    names = {c["name"] for c in doc["certificates"]}
    assert {"ca", "front-proxy-ca", "apiserver", "etcd-server-small-masters-0", "admin"} <= names
    assert "PRIVATE" not in result.out + result.err
    token = store.read_blob("pki/bootstrap-token").decode().strip()
    assert token not in result.out + result.err
    text = cli("pki", "show", path, "--state-dir", state_dir)
    assert text.code == 0 and "apiserver" in text.out


def test_cli_pki_rotate(cli, tmp_path):
    path = write_spec(tmp_path, SMALL_SPEC)
    state_dir = tmp_path / "state"
    spec = load_spec(path)
    store = open_store(spec, state_dir)
    pki.ensure_pki(spec, store, plan(spec, store.read()).desired)
    before = store.read_blob("pki/scheduler.crt")
    bad = cli("pki", "rotate", path, "--state-dir", state_dir, "--leaf", "schedular")
    assert bad.code == 2 and "--leaf" in bad.err and "scheduler" in bad.err and "Traceback" not in bad.err
    assert store.read_blob("pki/scheduler.crt") == before
    ok = cli("pki", "rotate", path, "--state-dir", state_dir, "--leaf", "scheduler", "-o", "json")
    assert ok.code == 0 and json.loads(ok.out)["renewed"] == ["scheduler"]
    assert store.read_blob("pki/scheduler.crt") != before


def test_cli_pki_rotate_without_pki_fails_cleanly(cli, tmp_path):
    path = write_spec(tmp_path, SMALL_SPEC)
    result = cli("pki", "rotate", path, "--state-dir", tmp_path / "state")
    assert result.code == 1 and "--until pki" in result.err and "Traceback" not in result.err


def test_a_leaf_with_other_key_usages_is_made_again(tri):
    spec, store, state, hosts = tri
    member = next(h for h in hosts if h.etcd)
    want = next(w for w in pki.wanted_certs(spec, hosts) if w.name == f"etcd-server-{member.name}")
    ca_key = pki._load_key(store.read_blob("pki/ca.key"))
    ca_cert = pki._load_cert(store.read_blob("pki/ca.crt"))
    server_only = pki.CertSpec(want.name, want.common_name, pki.SERVER, want.organizations, want.dns_names,
                               want.ip_addresses)
    key, cert = pki.make_leaf(server_only, ca_key, ca_cert, 365, "ecdsa-p256")
    store.write_blob(f"pki/{want.name}.key", pki.key_pem(key))
    store.write_blob(f"pki/{want.name}.crt", pki.cert_pem(cert), secret=False)
    assert pki.ensure_pki(spec, store, hosts)["created"] == [want.name]
    usage = openssl("x509", "-noout", "-ext", "extendedKeyUsage", "-in", str(store.root / f"pki/{want.name}.crt"))
    assert "TLS Web Client Authentication" in usage.stdout  # etcd's grpc-gateway dials with it


def test_replacing_the_etcd_ca_remakes_the_etcd_certificates_only(tri):
    spec, store, state, hosts = tri
    kube_ca = store.read_blob("pki/ca.crt")
    store.delete_blob("pki/etcd-ca.key")
    summary = pki.ensure_pki(spec, store, hosts)
    etcd_leaves = {w.name for w in pki.wanted_certs(spec, hosts) if w.issuer == pki.ETCD_CA}
    assert set(summary["created"]) == {"etcd-ca"} | etcd_leaves
    assert {"etcd-client-root", "etcd-client-apiserver"} <= etcd_leaves
    assert store.read_blob("pki/ca.crt") == kube_ca
    # the agents' certificates are issued again as the secrets phase delivers them (pki_agents)
    agents = [h.name for h in hosts]
    assert sorted(pki_agents.ensure(spec, store, agents)["created"]) == sorted(f"etcd-agent-{h}" for h in agents)
    shown = {c["name"]: c for c in pki.show(spec, store)}
    assert shown["etcd-ca"]["ca"] and all(c["verified"] for c in shown.values())


def test_the_shared_kube_proxy_certificate_is_no_longer_issued_and_an_old_one_is_deleted(tri):
    """kube-proxy runs as a DaemonSet with its ServiceAccount: the client key every node shared
    is neither made nor kept (a state made by an earlier version loses it on the next run)."""
    spec, store, state, hosts = tri
    assert not any(w.name == "kube-proxy" or "kube-proxy" in w.common_name for w in pki.wanted_certs(spec, hosts))
    assert store.read_blob("pki/kube-proxy.crt") is None and store.read_blob("pki/kube-proxy.key") is None
    store.write_blob("pki/kube-proxy.key", b"-----BEGIN PRIVATE KEY-----\nold\n", secret=True)
    store.write_blob("pki/kube-proxy.crt", b"-----BEGIN CERTIFICATE-----\nold\n", secret=False)
    before = {b: store.read_blob(b) for b in store.list_blobs("pki/") if "kube-proxy" not in b}
    pki.ensure_pki(spec, store, hosts)
    assert [b for b in store.list_blobs("pki/") if "kube-proxy" in b] == []
    assert {b: store.read_blob(b) for b in store.list_blobs("pki/")} == before  # nothing else touched


def test_signing_ca_takes_only_a_usable_pair(tmp_path):
    from provision import certs
    key, cert = certs.make_ca("c", 365, "ecdsa-p256")
    other_key, _ = certs.make_ca("d", 365, "ecdsa-p256")
    found = certs.signing_ca(certs.cert_pem(cert), certs.key_pem(key))
    assert found is not None and found[1] == cert
    assert certs.signing_ca(certs.cert_pem(cert), certs.key_pem(other_key)) is None  # not its key
    assert certs.signing_ca(certs.cert_pem(cert), None) is None
    assert certs.signing_ca(b"junk", certs.key_pem(key)) is None
    ending_key, ending = certs.make_ca("e", 0, "ecdsa-p256")  # valid until now: nothing of its lifetime left
    assert certs.signing_ca(certs.cert_pem(ending), certs.key_pem(ending_key)) is None


def test_bootstrap_token_expiry_reads_only_the_form_it_writes(tmp_path):
    class Blobs:
        def __init__(self, data: bytes):
            self.data = data

        def read_blob(self, name: str) -> bytes | None:
            return self.data

    import datetime as dt
    when = dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    assert pki.bootstrap_token_expiry(Blobs(pki.format_expiry(when).encode() + b"\n")) == when
    for bad in (b"2031-02-03 04:05:06", b"2031-02-03T04:05:06+02:00", b"2031-02-30T04:05:06Z", b"soon", b"\xff"):
        assert pki.bootstrap_token_expiry(Blobs(bad)) is None, bad
