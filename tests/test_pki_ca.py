"""CA rotation's phases in state, without a cluster: what each phase does to the stored CAs,
the trust bundle and the leaves, what hosts' configs then trust, and the refusals (exit 2
naming --ca, nothing changed)."""
from __future__ import annotations

import base64
import json
import shlex
import socket
import ssl
import subprocess
import threading

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provision import pki, pki_ca
from provision.errors import UserError
from provision.phases.kubeconfig import admin_kubeconfig
from provision.render import render_cluster
from tests.conftest import run_cli
from tests.helpers_render import SMALL_SPEC, ignition_file, ignition_units, prepared, served_artifacts, write_spec


def subjects(data: bytes) -> list[str]:
    return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(data)]


def trusted_by_master(spec, store, state, hosts) -> bytes:
    rendered = render_cluster(spec, state, store, hosts)
    master = json.loads(next(data for name, data in rendered.files.items() if "masters" in name))
    assert ignition_file(master, "/etc/kubernetes/pki/etcd-ca.crt") == ignition_file(master, "/etc/ssl/etcd/ca.crt")
    return ignition_file(master, "/etc/ssl/etcd/ca.crt")


def test_three_phases_trust_both_then_reissue_then_drop_the_old_ca(tmp_path):
    spec, store, state, hosts = prepared(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                         served_artifacts("http://10.77.0.1:8080"))
    old = store.read_blob("pki/etcd-ca.crt")
    old_leaf = store.read_blob("pki/etcd-server-small-masters-0.crt")
    kube_leaf = store.read_blob("pki/apiserver.crt")
    assert pki_ca.check_request(state, store, "etcd") == pki.ETCD_CA

    assert pki_ca.advance(spec, store, state, hosts, pki.ETCD_CA) == pki_ca.TRUST
    new = store.read_blob("pki/etcd-ca.next.crt")
    assert subjects(trusted_by_master(spec, store, state, hosts)) == subjects(old) + subjects(new)
    assert pki.client_tls(store).ca.read_bytes() == store.read_blob("pki/etcd-ca.trust.crt")
    assert store.read_blob("pki/etcd-server-small-masters-0.crt") == old_leaf  # leaves unchanged
    assert "phase 1 of 3 (trust)" in pki_ca.describe(state)
    with pytest.raises(UserError, match="--ca: phase trust .* not rolled"):
        pki_ca.check_request(state, store, "etcd")
    assert pki_ca.mark_rolled(state) and not pki_ca.mark_rolled(state)

    pki_ca.check_request(state, store, "etcd")
    assert pki_ca.advance(spec, store, state, hosts, pki.ETCD_CA) == pki_ca.REISSUE
    assert store.read_blob("pki/etcd-ca.crt") == new and store.read_blob("pki/etcd-ca.next.crt") is None
    leaf = x509.load_pem_x509_certificate(store.read_blob("pki/etcd-server-small-masters-0.crt"))
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(new))
    assert store.read_blob("pki/apiserver.crt") == kube_leaf  # another CA's leaves are left alone
    assert subjects(trusted_by_master(spec, store, state, hosts)) == subjects(old) + subjects(new)
    assert all(c["verified"] for c in pki.show(spec, store))

    pki_ca.mark_rolled(state)
    assert pki_ca.advance(spec, store, state, hosts, pki.ETCD_CA) == pki_ca.DROP
    assert subjects(trusted_by_master(spec, store, state, hosts)) == subjects(new)
    assert pki.client_tls(store).ca.read_bytes() == new
    pki_ca.mark_rolled(state)
    assert pki_ca.advance(spec, store, state, hosts, pki.ETCD_CA) == "done"
    assert pki_ca.progress(state) is None and pki_ca.describe(state) is None
    assert not [b for b in store.list_blobs("pki/") if ".next." in b or ".trust." in b]


def test_a_ca_that_cannot_be_rotated_is_refused_naming_the_option(tmp_path):
    spec, store, state, hosts = prepared(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state")
    before = {b: store.read_blob(b) for b in store.list_blobs()}
    with pytest.raises(UserError, match="--ca: 'sa' cannot be rotated.*etcd, front-proxy, kubernetes"):
        pki_ca.check_request(state, store, "sa")  # the service-account key is no CA
    assert {b: store.read_blob(b) for b in store.list_blobs()} == before and pki_ca.STATE_KEY not in state


# ---- the Kubernetes and front-proxy CAs ---------------------------------------------------------
# kube-apiserver, the controller-manager and kubelet cannot run here: the proof is what they
# consume. Each phase's rendered files are read back from the hosts' configs, and the
# certificates are checked with real TLS handshakes (Python's ssl, OpenSSL underneath) set up
# from those files the way the components set up theirs, and with `openssl verify`.

def configs(spec, store, state, hosts) -> dict[str, tuple[dict, dict]]:
    """{host: (its Ignition config, its secret files by path)}"""
    rendered = render_cluster(spec, state, store, hosts)
    out = {}
    for host, entry in rendered.index["hosts"].items():
        out[host] = (json.loads(rendered.files[entry["config"]]), rendered.secrets[entry["config"]])
    return out


def handshake(tmp_path, server: tuple[bytes, bytes, bytes], client: tuple[bytes, bytes, bytes]) -> bool:
    """Whether a mutual-TLS handshake succeeds between a server with (cert, key, client CA file)
    and a client with (cert, key, CA file): an API server's --tls-cert-file, --tls-private-key-file
    and --client-ca-file against a kubeconfig's client certificate and certificate-authority."""
    paths = []
    for side, blobs in (("server", server), ("client", client)):
        for part, data in zip(("crt", "key", "ca"), blobs):
            path = tmp_path / f"{side}.{part}"
            path.write_bytes(data)
            paths.append(str(path))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths[0], paths[1])
    server_ctx.load_verify_locations(paths[2])
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_cert_chain(paths[3], paths[4])
    client_ctx.load_verify_locations(paths[5])
    client_ctx.check_hostname = False  # SANs are checked elsewhere; this is about the issuers
    listener = socket.create_server(("127.0.0.1", 0))
    outcome: dict[str, bool] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")  # TLS 1.3: the server sees the client certificate on first use
                outcome["server"] = tls.recv(2) == b"ok"
        except (ssl.SSLError, OSError):
            outcome["server"] = False

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as raw, \
                client_ctx.wrap_socket(raw) as tls:
            outcome["client"] = tls.recv(2) == b"ok"
            tls.sendall(b"ok")
    except (ssl.SSLError, OSError):
        outcome["client"] = False
    thread.join(10)
    listener.close()
    return outcome.get("client", False) and outcome.get("server", False)


def flags(manifest: bytes) -> dict[str, str]:
    command = yaml.safe_load(manifest)["spec"]["containers"][0]["command"]
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def key_of(pem: bytes):
    return serialization.load_pem_private_key(pem, password=None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_kubernetes_ca_rotates_and_every_place_that_trusts_it_carries_the_bundle(tmp_path):
    spec, store, state, hosts = prepared(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                         served_artifacts("http://10.77.0.1:8080"))
    master = next(h.name for h in hosts if h.role == "master")
    worker = next(h.name for h in hosts if h.role == "worker")
    old = store.read_blob("pki/ca.crt")
    untouched = {b: store.read_blob(b) for b in ("pki/front-proxy-client.crt", "pki/etcd-ca.crt",
                                                 "pki/etcd-server-small-masters-0.crt", "pki/sa.key")}
    old_kubelet = (store.read_blob(f"pki/kubelet-{master}.crt"), store.read_blob(f"pki/kubelet-{master}.key"))
    assert pki_ca.check_request(state, store, "kubernetes") == pki.CA
    expected = {pki_ca.TRUST: "both", pki_ca.REISSUE: "both", pki_ca.DROP: "new"}
    for phase in pki_ca.PHASES:
        assert pki_ca.advance(spec, store, state, hosts, pki.CA) == phase
        if phase == pki_ca.TRUST:
            new = store.read_blob("pki/ca.next.crt")
        signer = old if phase == pki_ca.TRUST else new
        want = subjects(old) + subjects(new) if expected[phase] == "both" else subjects(new)
        by_host = configs(spec, store, state, hosts)
        m, m_secrets = by_host[master]
        # every file a component trusts the CA with: the bundle in the overlap, the new CA after it
        for host, (config, _) in by_host.items():
            assert subjects(ignition_file(config, "/etc/kubernetes/pki/ca.crt")) == want, (phase, host)
            assert ignition_file(config, "/etc/kubernetes/pki/signing-ca.crt") == signer, (phase, host)
        kubelet_config = yaml.safe_load(ignition_file(m, "/etc/kubernetes/kubelet-config.yaml"))
        assert kubelet_config["authentication"]["x509"]["clientCAFile"] == "/etc/kubernetes/pki/ca.crt"
        for conf in ("kubelet.conf", "controller-manager.conf", "scheduler.conf", "admin.conf"):
            doc = yaml.safe_load(ignition_file(m, f"/etc/kubernetes/{conf}"))
            assert doc["clusters"][0]["cluster"]["certificate-authority"] == "/etc/kubernetes/pki/ca.crt", conf
        boot = yaml.safe_load(by_host[worker][1]["/etc/kubernetes/bootstrap-kubeconfig"].data)  # a secret: the token
        assert boot["clusters"][0]["cluster"]["certificate-authority"] == "/etc/kubernetes/pki/ca.crt"
        apiserver = flags(ignition_file(m, "/etc/kubernetes/manifests/kube-apiserver.yaml"))
        manager = flags(ignition_file(m, "/etc/kubernetes/manifests/kube-controller-manager.yaml"))
        assert apiserver["client-ca-file"] == manager["client-ca-file"] == manager["root-ca-file"] \
            == "/etc/kubernetes/pki/ca.crt"
        # the controller-manager signs kubelets' CSRs with the signing CA, whose key it holds
        assert manager["cluster-signing-cert-file"] == "/etc/kubernetes/pki/signing-ca.crt"
        signing_key = m_secrets[manager["cluster-signing-key-file"]].data
        assert key_of(signing_key) == x509.load_pem_x509_certificate(signer).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        # what provision's own admin kubeconfig trusts
        admin = yaml.safe_load(admin_kubeconfig(spec, store, state | {"hosts": {master: {"role": "master"}}}))
        assert subjects(base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])) == want
        # the API server as it would run: its serving certificate and --client-ca-file, against
        # the admin's and a master kubelet's client certificates and what their kubeconfigs trust
        bundle = ignition_file(m, "/etc/kubernetes/pki/ca.crt")
        server = (m_secrets["/etc/kubernetes/pki/apiserver.crt"].data,
                  m_secrets["/etc/kubernetes/pki/apiserver.key"].data, bundle)
        for client in ("admin", "kubelet-client"):
            assert handshake(tmp_path, server, (m_secrets[f"/etc/kubernetes/pki/{client}.crt"].data,
                                                m_secrets[f"/etc/kubernetes/pki/{client}.key"].data, bundle)), \
                (phase, client)
        # a kubelet client certificate the old CA signed (a worker's, from its CSR before the
        # rotation) is still accepted until the drop, and no longer after it
        assert handshake(tmp_path, server, old_kubelet + (bundle,)) == (phase != pki_ca.DROP), phase
        for leaf in ("apiserver", "admin", f"kubelet-{master}", "controller-manager", "scheduler"):
            x509.load_pem_x509_certificate(store.read_blob(f"pki/{leaf}.crt")).verify_directly_issued_by(
                x509.load_pem_x509_certificate(signer))
        assert all(c["verified"] for c in pki.show(spec, store))
        pki_ca.mark_rolled(state)
    assert pki_ca.advance(spec, store, state, hosts, pki.CA) == "done"
    assert {b: store.read_blob(b) for b in untouched} == untouched  # other CAs' material is left alone


def test_the_front_proxy_ca_rotates_and_the_aggregation_layer_trusts_the_bundle(tmp_path):
    spec, store, state, hosts = prepared(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                         served_artifacts("http://10.77.0.1:8080"))
    master = next(h.name for h in hosts if h.role == "master")
    old = store.read_blob("pki/front-proxy-ca.crt")
    old_client = store.read_blob("pki/front-proxy-client.crt")
    kube = {b: store.read_blob(b) for b in ("pki/ca.crt", "pki/apiserver.crt", "pki/admin.crt")}
    assert pki_ca.check_request(state, store, "front-proxy") == pki.FRONT_PROXY_CA
    for phase in pki_ca.PHASES:
        assert pki_ca.advance(spec, store, state, hosts, pki.FRONT_PROXY_CA) == phase
        if phase == pki_ca.TRUST:
            new = store.read_blob("pki/front-proxy-ca.next.crt")
        m, m_secrets = configs(spec, store, state, hosts)[master]
        trusted = ignition_file(m, "/etc/kubernetes/pki/front-proxy-ca.crt")
        assert subjects(trusted) == (subjects(new) if phase == pki_ca.DROP else subjects(old) + subjects(new))
        apiserver = flags(ignition_file(m, "/etc/kubernetes/manifests/kube-apiserver.yaml"))
        manager = flags(ignition_file(m, "/etc/kubernetes/manifests/kube-controller-manager.yaml"))
        assert apiserver["requestheader-client-ca-file"] == manager["requestheader-client-ca-file"] \
            == "/etc/kubernetes/pki/front-proxy-ca.crt"
        client = x509.load_pem_x509_certificate(m_secrets[apiserver["proxy-client-cert-file"]].data)
        client.verify_directly_issued_by(x509.load_pem_x509_certificate(old if phase == pki_ca.TRUST else new))
        # an aggregated API server checks the proxy's client certificate against the bundle:
        # the old one is accepted until the drop
        server = (kube["pki/apiserver.crt"], store.read_blob("pki/apiserver.key"), trusted)
        fresh = (m_secrets[apiserver["proxy-client-cert-file"]].data, m_secrets[apiserver["proxy-client-key-file"]].data,
                 kube["pki/ca.crt"])
        assert handshake(tmp_path, server, fresh), phase
        if phase == pki_ca.TRUST:
            old_key = store.read_blob("pki/front-proxy-client.key")
        assert handshake(tmp_path, server, (old_client, old_key, kube["pki/ca.crt"])) == (phase != pki_ca.DROP)
        pki_ca.mark_rolled(state)
    assert {b: store.read_blob(b) for b in kube} == kube  # the Kubernetes CA's leaves are left alone
    assert pki_ca.advance(spec, store, state, hosts, pki.FRONT_PROXY_CA) == "done"


def test_a_worker_kubelet_drops_a_client_certificate_the_signing_ca_did_not_issue(tmp_path):
    """The worker kubelet unit's check, run with /bin/sh and the real openssl on the files it names."""
    spec, store, state, hosts = prepared(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state",
                                         served_artifacts("http://10.77.0.1:8080"))
    worker = next(h.name for h in hosts if h.role == "worker")

    def kubelet_check() -> str:
        config = configs(spec, store, state, hosts)[worker][0]
        unit = ignition_units(config)["kubelet.service"]
        [line] = [x for x in unit.splitlines() if x.startswith("ExecStartPre=/bin/sh") and "signing-ca.crt" in x]
        assert "/etc/kubernetes/pki/signing-ca.crt" in line
        (tmp_path / "signing-ca.crt").write_bytes(ignition_file(config, "/etc/kubernetes/pki/signing-ca.crt"))
        command = shlex.split(line.split("=", 1)[1])[2].replace("$$", "$")  # systemd's escaping of $
        return command.replace("/var/lib/kubelet/pki/", f"{tmp_path}/").replace("/etc/kubernetes/pki/", f"{tmp_path}/")

    current = tmp_path / "kubelet-client-current.pem"
    # what the controller-manager signed a worker's CSR with before the rotation
    old_pair = store.read_blob(f"pki/kubelet-{next(h.name for h in hosts if h.role == 'master')}.crt") + \
        store.read_blob(f"pki/kubelet-{next(h.name for h in hosts if h.role == 'master')}.key")
    for phase, kept in ((None, True), (pki_ca.TRUST, True), (pki_ca.REISSUE, False)):
        if phase is not None:
            assert pki_ca.advance(spec, store, state, hosts, pki.CA) == phase
            pki_ca.mark_rolled(state)
        current.write_bytes(old_pair)
        run = subprocess.run(["/bin/sh", "-c", kubelet_check()], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert current.exists() == kept, phase
    current.unlink(missing_ok=True)  # no certificate yet (first boot): nothing to do, no failure
    assert subprocess.run(["/bin/sh", "-c", kubelet_check()]).returncode == 0


@pytest.mark.parametrize("ca", ["kubernetes", "front-proxy"])
def test_the_cli_refuses_another_ca_while_one_rotates_and_an_unknown_ca(tmp_path, ca):
    spec_path = write_spec(tmp_path, SMALL_SPEC)
    state_dir = tmp_path / "state"
    prepared(spec_path, state_dir)
    started = run_cli("pki", "rotate-ca", spec_path, "--ca", ca, "--state-dir", state_dir, "-o", "json")
    assert started.code == 0, started.err
    assert json.loads(started.out)["phase"] == "trust"
    before = {p: p.read_bytes() for p in sorted(state_dir.rglob("*")) if p.is_file() and "lock" not in p.name}
    for args, says in ((("--ca", "etcd"), "--ca: a rotation of"), (("--ca", ca), "--ca: phase trust"),
                       (("--ca", "sa"), "--ca: 'sa' cannot be rotated")):
        refused = run_cli("pki", "rotate-ca", spec_path, *args, "--state-dir", state_dir)
        assert refused.code == 2 and says in refused.err and "Traceback" not in refused.err, refused.err
    after = {p: p.read_bytes() for p in sorted(state_dir.rglob("*")) if p.is_file() and "lock" not in p.name}
    assert after == before


def test_pki_rotate_of_a_ca_points_at_rotate_ca(tmp_path):
    spec, store, state, hosts = prepared(write_spec(tmp_path, SMALL_SPEC), tmp_path / "state")
    for ca in pki.CAS:
        with pytest.raises(UserError, match=rf"--leaf: no leaf certificate named '{ca}' \(a CA is rotated by `pki rotate-ca`"):
            pki.rotate(spec, store, hosts, leaf=ca)
