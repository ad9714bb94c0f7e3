"""`provision doctor` against a real etcd (TLS, client-certificate auth) on a loopback address:
a healthy member is no finding; members that do not answer are named, and lost quorum said."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization

from provision.pki import PEER, CertSpec, cert_pem, key_pem, make_leaf
from provision.state import LocalStateStore

from tests.real import require
from tests.test_changes import write_spec
from tests.test_doctor import DOCTOR_BASE


def start_member(store: LocalStateStore, address: str, workdir) -> subprocess.Popen:
    """etcd serving https://ADDRESS:2379 with a certificate of the cluster's etcd CA, requiring
    client certificates of that CA (as the cluster's members do)."""
    ca_key = serialization.load_pem_private_key(store.read_blob("pki/etcd-ca.key"), password=None)
    ca_cert_pem = store.read_blob("pki/etcd-ca.crt")
    from cryptography import x509
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key, cert = make_leaf(CertSpec("member", "member", PEER, (), (), (address,)), ca_key, ca_cert, 1, "ecdsa-p256")
    workdir.mkdir()
    (workdir / "ca.crt").write_bytes(ca_cert_pem)
    (workdir / "m.crt").write_bytes(cert_pem(cert))
    (workdir / "m.key").write_bytes(key_pem(key))
    os.chmod(workdir / "m.key", 0o600)
    url = f"https://{address}:2379"
    log = open(workdir / "etcd.log", "wb")
    return subprocess.Popen(
        [require("etcd"), "--name", "m0", "--data-dir", str(workdir / "data"), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", f"http://{address}:2380",
         "--initial-advertise-peer-urls", f"http://{address}:2380", "--initial-cluster", f"m0=http://{address}:2380",
         "--cert-file", str(workdir / "m.crt"), "--key-file", str(workdir / "m.key"),
         "--trusted-ca-file", str(workdir / "ca.crt"), "--client-cert-auth"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def member_cluster(cli, tmp_path):
    """A PKI-only state whose hosts name etcd members on 127.77.N.1..3; a real etcd on .1."""
    spec_path = write_spec(tmp_path, DOCTOR_BASE)
    state_dir = tmp_path / "state"
    assert cli("up", spec_path, "--yes", "--until", "pki", "--state-dir", state_dir).code == 0
    store = LocalStateStore("doctor", state_dir)
    subnet = f"127.77.{random.randrange(1, 255)}"
    proc = start_member(store, f"{subnet}.1", tmp_path / "etcd")
    try:
        yield spec_path, state_dir, store, subnet, proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def record_members(store, subnet: str, count: int) -> None:
    state = store.read()
    state["hosts"] = {f"doctor-etcd-{i}": {"pool": "etcd", "role": "etcd", "index": i, "etcd": True,
                                           "address": f"{subnet}.{i + 1}"} for i in range(count)}
    store.write(state)


def etcd_check(cli, spec_path, state_dir) -> dict:
    deadline = time.monotonic() + 20
    while True:
        doc = json.loads(cli("doctor", spec_path, "--state-dir", state_dir, "-o", "json").out)
        check = next(c for c in doc["checks"] if c["name"] == "etcd")
        first_up = not any("doctor-etcd-0" in f["problem"] or ".1:2379" in f["problem"] for f in check["findings"])
        if first_up or time.monotonic() > deadline:  # the real member takes a moment to start
            return check
        time.sleep(0.5)


def test_a_healthy_member_is_no_finding(cli, member_cluster):
    spec_path, state_dir, store, subnet, _ = member_cluster
    record_members(store, subnet, 1)
    check = etcd_check(cli, spec_path, state_dir)
    assert check["ok"] is True and not check["skipped"], check
    assert check["detail"] == "1 member(s) healthy, quorum held"


def test_members_that_do_not_answer_and_lost_quorum(cli, member_cluster):
    spec_path, state_dir, store, subnet, _ = member_cluster
    record_members(store, subnet, 3)
    check = etcd_check(cli, spec_path, state_dir)
    problems = [f["problem"] for f in check["findings"]]
    assert not check["ok"]
    assert [p.split(" is not healthy")[0] for p in problems[:2]] == [
        f"etcd member https://{subnet}.2:2379", f"etcd member https://{subnet}.3:2379"]
    assert problems[2] == ("etcd has no quorum: 1 of 3 members healthy, 2 needed; the cluster cannot change "
                           "anything")


def test_status_says_why_it_connected_directly(member_cluster):
    """Members here run without sshd: `status` reaches the one that answers directly, and when
    etcd is unhealthy its error says that no host took SSH (the operator route it wanted)."""
    from provision.spec import load_spec
    from provision.status import etcd_picture
    from provision.tunnel import close_all
    spec_path, _state_dir, store, subnet, _ = member_cluster
    record_members(store, subnet, 1)
    try:
        deadline = time.monotonic() + 20
        while not (one := etcd_picture(load_spec(spec_path), store, store.read()))["healthy"]:
            assert time.monotonic() < deadline, one
            time.sleep(0.5)
        assert one["error"] is None  # healthy: nothing to explain
        record_members(store, subnet, 3)
        close_all()
        three = etcd_picture(load_spec(spec_path), store, store.read())
    finally:
        close_all()
    assert not three["healthy"]
    assert "no host of the cluster takes an SSH connection" in three["error"]
    assert "doctor-etcd-0" in three["error"] and "connecting directly" in three["error"]
