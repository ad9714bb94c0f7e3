"""`provision pki rotate-ca` on a running local cluster (3 masters carrying a real 3-member etcd
over TLS, 1 worker): the etcd CA is rotated in its three phases, each rolled onto every host by
`up`, while a watcher reads etcd linearizably twice a second. etcd keeps quorum and its clients
(the watcher, provision itself) keep working throughout; each phase is checked on the files the
hosts hold and on the certificate each member serves.

The Kubernetes and front-proxy CAs go through the same three phases on the same cluster. No
kube-apiserver, controller-manager or kubelet binary exists here, so those are proven through
what they consume on every host: the CA files their flags and kubeconfigs name (the bundle in
the overlap), the signing CA the controller-manager signs with, the leaves' issuers, and mutual
TLS handshakes set up from the hosts' own files as kube-apiserver sets up its own."""
from __future__ import annotations

import base64
import json
import time

import pytest
import yaml
from cryptography import x509

from provision.etcd.client import Etcd
from provision.pki import TLSFiles

from tests.test_pki_ca import handshake

from .conftest import live_cluster, needs_root, provision
from .test_rollout import QuorumWatcher, manifest_digests, on_host, served_certificate, state

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_root]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with live_cluster(tmp_path_factory.mktemp("carot"), "ca",
                      [{"name": "masters", "role": "master", "count": 3},
                       {"name": "workers", "role": "worker", "count": 1}]) as c:
        yield c


def pem_certs(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def rotate_ca(c: dict, ca: str = "etcd"):
    proc = provision("pki", "rotate-ca", c["spec"], "--ca", ca, "--state-dir", c["state_dir"], "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_etcd_ca_is_rotated_in_three_phases_without_losing_quorum(cluster):
    c = cluster
    pki = c["workdir"] / "pki"
    hosts = sorted(state(c)["hosts"])
    members = sorted(n for n, h in state(c)["hosts"].items() if h["etcd"])
    old_ca = (pki / "etcd-ca.crt").read_bytes()
    # a phase not rolled out yet refuses the next one, changing nothing
    assert rotate_ca(c)["phase"] == "trust"
    refused = provision("pki", "rotate-ca", c["spec"], "--ca", "etcd", "--state-dir", c["state_dir"])
    assert refused.returncode == 2 and "--ca" in refused.stderr and "Traceback" not in refused.stderr
    assert state(c)["ca_rotation"] == {"ca": "etcd-ca", "phase": "trust", "rolled": False}
    shown = provision("pki", "show", c["spec"], "--state-dir", c["state_dir"], "-o", "json")
    assert "phase 1 of 3 (trust)" in json.loads(shown.stdout)["ca_rotation"], shown.stdout
    new_ca = (pki / "etcd-ca.next.crt").read_bytes()
    both = c["tmp"] / "both-cas.crt"  # the watcher trusts both CAs, as hosts do in the overlap
    both.write_bytes(old_ca + new_ca)
    old_subject, new_subject = pem_certs(old_ca)[0].subject, pem_certs(new_ca)[0].subject
    assert old_subject != new_subject

    def issuers() -> dict[str, x509.Name]:
        return {m: x509.load_pem_x509_certificate(served_certificate(c, state(c)["hosts"][m]["address"], both)).issuer
                for m in members}

    watcher = QuorumWatcher(c)
    endpoints = tuple(f"https://{state(c)['hosts'][m]['address']}:2379" for m in members)
    watcher.access = Etcd(endpoints, TLSFiles(both, pki / "etcd-client-provisioner.crt",
                                              pki / "etcd-client-provisioner.key"), timeout=1.0)
    took = {}
    with watcher:
        for phase in ("trust", "reissue", "drop"):
            if phase != "trust":
                assert rotate_ca(c)["phase"] == phase
            started = time.monotonic()
            up = provision("up", c["spec"], "--yes", "--state-dir", c["state_dir"], timeout=900)
            took[phase] = time.monotonic() - started
            assert up.returncode == 0, up.stderr
            assert state(c)["ca_rotation"] == {"ca": "etcd-ca", "phase": phase, "rolled": True}
            trusted = {h: on_host(c, h, "/etc/ssl/etcd/ca.crt") for h in hosts}
            if phase in ("trust", "reissue"):  # every host trusts the old and the new CA
                assert all([x.subject for x in pem_certs(t)] == [old_subject, new_subject] for t in trusted.values())
            else:  # the old one is gone
                assert all([x.subject for x in pem_certs(t)] == [new_subject] for t in trusted.values())
            assert all(on_host(c, m, "/etc/kubernetes/pki/etcd-ca.crt") == trusted[m] for m in members)
            served = issuers()
            assert set(served.values()) == {old_subject if phase == "trust" else new_subject}, (phase, served)
            # each host agent's own certificate: issued again by the new CA at reissue and delivered
            agents = {h: pem_certs(on_host(c, h, "/etc/ssl/etcd/agent.crt"))[0].issuer for h in hosts}
            assert set(agents.values()) == {old_subject if phase == "trust" else new_subject}, (phase, agents)
    failed = sum(1 for _, ok in watcher.samples if not ok)
    print(f"CA rotation: {took}, {failed}/{len(watcher.samples)} quorum reads failed, "
          f"longest outage {watcher.longest_outage():.2f}s")
    # finished before the quorum verdict, so a failure leaves no rotation under way for other tests
    assert rotate_ca(c)["done"] is True and "ca_rotation" not in state(c)
    assert watcher.longest_outage() < 2.0 and len(watcher.samples) > 30
    assert (pki / "etcd-ca.crt").read_bytes() == new_ca
    assert not (pki / "etcd-ca.trust.crt").exists() and not (pki / "etcd-ca.next.crt").exists()
    # provision's own etcd access works with the new CA alone
    status = provision("status", c["spec"], "--state-dir", c["state_dir"], "-o", "json")
    assert status.returncode == 0, status.stdout + status.stderr


# `--ca` -> (the CA's blob name, the file hosts trust it with, leaves it signs on every master)
KUBE_CAS = {"kubernetes": ("ca", "/etc/kubernetes/pki/ca.crt", ("apiserver", "admin", "kubelet-client")),
            "front-proxy": ("front-proxy-ca", "/etc/kubernetes/pki/front-proxy-ca.crt", ("front-proxy-client",))}


@pytest.mark.parametrize("option", sorted(KUBE_CAS))
def test_a_kubernetes_facing_ca_is_rotated_in_three_phases_on_every_host(cluster, option):
    c = cluster
    name, trusted_path, leaves = KUBE_CAS[option]
    pki = c["workdir"] / "pki"
    hosts = sorted(state(c)["hosts"])
    masters = sorted(n for n, h in state(c)["hosts"].items() if h["role"] == "master")
    # the hosts that trust it: every node trusts the Kubernetes CA; only masters the front-proxy CA
    trusting = hosts if option == "kubernetes" else masters
    old_ca = (pki / f"{name}.crt").read_bytes()
    assert rotate_ca(c, option)["phase"] == "trust"
    new_ca = (pki / f"{name}.next.crt").read_bytes()
    old_subject, new_subject = pem_certs(old_ca)[0].subject, pem_certs(new_ca)[0].subject
    old_leaves = {m: {leaf: on_host(c, m, f"/etc/kubernetes/pki/{leaf}.crt") for leaf in leaves} for m in masters}
    old_keys = {m: {leaf: on_host(c, m, f"/etc/kubernetes/pki/{leaf}.key") for leaf in leaves} for m in masters}
    etcd_trust = {h: on_host(c, h, "/etc/ssl/etcd/ca.crt") for h in hosts}
    digests = {m: manifest_digests(c, m) for m in masters}
    watcher, took = QuorumWatcher(c), {}
    with watcher:
        for phase in ("trust", "reissue", "drop"):
            if phase != "trust":
                assert rotate_ca(c, option)["phase"] == phase
            started = time.monotonic()
            up = provision("up", c["spec"], "--yes", "--state-dir", c["state_dir"], timeout=900)
            took[phase] = round(time.monotonic() - started, 1)
            assert up.returncode == 0, up.stderr
            assert state(c)["ca_rotation"] == {"ca": name, "phase": phase, "rolled": True}
            want = [old_subject, new_subject] if phase != "drop" else [new_subject]
            for h in trusting:
                assert [x.subject for x in pem_certs(on_host(c, h, trusted_path))] == want, (phase, h)
            signer = old_subject if phase == "trust" else new_subject
            if option == "kubernetes":  # provision's own admin kubeconfig trusts what the hosts trust
                admin = yaml.safe_load((c["workdir"] / "kubeconfig").read_text())
                data = base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])
                assert [x.subject for x in pem_certs(data)] == want, phase
            if option == "kubernetes":  # what the controller-manager signs CSRs with, and a worker's kubelet checks
                assert all(pem_certs(on_host(c, h, "/etc/kubernetes/pki/signing-ca.crt"))[0].subject == signer
                           for h in hosts), phase
            signing = pem_certs(new_ca if phase != "trust" else old_ca)[0]
            for m in masters:
                for leaf in leaves:
                    cert = pem_certs(on_host(c, m, f"/etc/kubernetes/pki/{leaf}.crt"))[0]
                    assert cert.issuer == signer, (phase, m, leaf)
                    cert.verify_directly_issued_by(signing)
                # kube-apiserver's files on this master accept this master's fresh client
                # certificates, and the old CA's ones until the drop
                kube_bundle = on_host(c, m, "/etc/kubernetes/pki/ca.crt")
                server = (on_host(c, m, "/etc/kubernetes/pki/apiserver.crt"),
                          on_host(c, m, "/etc/kubernetes/pki/apiserver.key"), on_host(c, m, trusted_path))
                for leaf in leaves:
                    if leaf == "apiserver":
                        continue
                    fresh = (on_host(c, m, f"/etc/kubernetes/pki/{leaf}.crt"),
                             on_host(c, m, f"/etc/kubernetes/pki/{leaf}.key"), kube_bundle)
                    assert handshake(c["tmp"], server, fresh), (phase, m, leaf)
                    stale = (old_leaves[m][leaf], old_keys[m][leaf], kube_bundle)
                    assert handshake(c["tmp"], server, stale) == (phase != "drop"), (phase, m, leaf)
                now = manifest_digests(c, m)  # kubelet restarts a static pod whose manifest changed
                assert now["kube-apiserver"] != digests[m]["kube-apiserver"], (phase, m)
                digests[m] = now
    failed = sum(1 for _, ok in watcher.samples if not ok)
    print(f"CA rotation of {name}: {took}, {failed}/{len(watcher.samples)} quorum reads failed, "
          f"longest outage {watcher.longest_outage():.2f}s")
    assert rotate_ca(c, option)["done"] is True and "ca_rotation" not in state(c)  # before any verdict, as above
    assert watcher.longest_outage() < 2.0 and len(watcher.samples) > 10
    assert {h: on_host(c, h, "/etc/ssl/etcd/ca.crt") for h in hosts} == etcd_trust  # the etcd CA is left alone
    assert (pki / f"{name}.crt").read_bytes() == new_ca and not (pki / f"{name}.trust.crt").exists()
    status = provision("status", c["spec"], "--state-dir", c["state_dir"], "-o", "json")
    assert status.returncode == 0, status.stdout + status.stderr
