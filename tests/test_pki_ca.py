"""CA rotation's phases in state, without a cluster: what each phase does to the stored CAs,
the trust bundle and the leaves, what hosts' configs then trust, and the refusals (exit 2
naming --ca, nothing changed)."""
from __future__ import annotations

import json

import pytest
from cryptography import x509

from provision import pki, pki_ca
from provision.errors import UserError
from provision.render import render_cluster
from tests.helpers_render import SMALL_SPEC, ignition_file, prepared, served_artifacts, write_spec


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
    with pytest.raises(UserError, match="--ca: 'kubernetes' cannot be rotated"):
        pki_ca.check_request(state, store, "kubernetes")
    assert {b: store.read_blob(b) for b in store.list_blobs()} == before and pki_ca.STATE_KEY not in state
