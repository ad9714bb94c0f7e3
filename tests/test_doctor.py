"""`provision doctor`: certificates about to expire, permissions, tools, quorum, drift; exit codes."""
from __future__ import annotations

import json
import os

import pytest

from provision.changes import BOOT, UPDATE, HostChange, boot_record
from provision.doctor import (certificate_findings, check_tools, drift_findings, permission_findings,
                              quorum_findings)
from provision.plan import plan
from provision.spec import parse_spec
from provision.state import LocalStateStore

from tests.spec.test_validation import mutate
from tests.test_changes import write_spec

# A subnet of its own: the local provider refuses one another interface on this machine uses.
DOCTOR_BASE = {k: v for k, v in mutate({"name": "doctor", "provider.subnet": "10.250.213.0/24"}).items()
               if k != "headroom"}


def pki_state(cli, tmp_path, extra: dict | None = None):
    """A cluster made as far as `up --until pki` (no host booted)."""
    data = {**DOCTOR_BASE, **(extra or {})}
    spec_path = write_spec(tmp_path, data)
    state_dir = tmp_path / "state"
    made = cli("up", spec_path, "--yes", "--until", "pki", "--state-dir", state_dir)
    assert made.code == 0, made.err
    return spec_path, state_dir


def test_short_lived_leaves_are_reported_with_what_to_do(cli, tmp_path):
    spec_path, state_dir = pki_state(cli, tmp_path, {"pki": {"leaf_days": 20}})
    result = cli("doctor", spec_path, "--state-dir", state_dir, "-o", "json")
    assert result.code == 1, result.err
    doc = json.loads(result.out)
    assert doc["ok"] is False and doc["exit_code"] == 1 and doc["healthy"] is False
    assert doc["cluster"] == "doctor" and doc["state"] == str((state_dir / "doctor").absolute())
    expiring = [f for f in doc["findings"] if f["check"] == "certificates"]
    names = {f["problem"].split()[1] for f in expiring}
    assert {"apiserver", "admin", "etcd-client-provisioner"} <= names
    assert "ca" not in names and "front-proxy-ca" not in names  # CAs live pki.ca_days
    first = next(f for f in expiring if f["problem"].startswith("certificate admin "))
    assert "expires in 19 day(s)" in first["problem"]
    assert first["fix"].startswith(f"provision pki rotate {spec_path} --state-dir {state_dir} (renews every leaf)")
    assert [f for f in doc["findings"] if f["check"] != "certificates"] == []
    text = cli("doctor", spec_path, "--state-dir", state_dir)
    assert text.code == 1 and "expires in 19 day(s)" in text.out.replace("\n", " ")


def test_fresh_pki_is_healthy(cli, tmp_path):
    spec_path, state_dir = pki_state(cli, tmp_path)
    result = cli("doctor", spec_path, "--state-dir", state_dir, "-o", "json")
    doc = json.loads(result.out)
    assert not [f for f in doc["findings"] if f["check"] == "certificates"]
    assert result.code == 0, doc["findings"]
    assert doc["ok"] is True and doc["healthy"] is True
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["certificates"]["ok"] and not checks["certificates"]["skipped"]
    assert checks["permissions"]["ok"] and not checks["permissions"]["skipped"]
    assert checks["etcd"]["skipped"] and checks["api"]["skipped"]


def test_loose_permissions_are_findings(cli, tmp_path):
    spec_path, state_dir = pki_state(cli, tmp_path)
    key = state_dir / "doctor" / "pki" / "admin.key"
    os.chmod(key, 0o644)
    os.chmod(state_dir / "doctor", 0o755)
    result = cli("doctor", spec_path, "--state-dir", state_dir, "-o", "json")
    assert result.code == 1
    problems = [f["problem"] for f in json.loads(result.out)["findings"] if f["check"] == "permissions"]
    assert problems == [f"{state_dir / 'doctor'} is mode 0755, not 0700",
                        f"{key} holds a secret and is mode 0644, not 0600"]


def test_permission_rules(tmp_path):
    root = tmp_path / "c"
    (root / "pki").mkdir(parents=True, mode=0o700)
    os.chmod(root, 0o700)
    (root / "hosts" / "m-0" / "root").mkdir(parents=True)  # provider scratch: a host's own files
    for name, mode in (("pki/ca.crt", 0o644), ("pki/ca.key", 0o600), ("pki/sa.pub", 0o666), ("kubeconfig", 0o640),
                       ("hosts/m-0/root/motd", 0o644)):
        (root / name).write_text("x")
        os.chmod(root / name, mode)
    problems = [f.problem for f in permission_findings(root)]
    assert problems == [f"{root / 'kubeconfig'} holds a secret and is mode 0640, not 0600",
                        f"{root / 'pki/sa.pub'} is writable by others (mode 0666)"]


def test_certificate_rules():
    certs = [{"name": "admin", "days_left": 29, "not_after": "x", "verified": True},
             {"name": "kube-proxy", "days_left": 30, "not_after": "x", "verified": True},
             {"name": "old", "days_left": -1, "not_after": "y", "verified": True},
             {"name": "ca", "ca": True, "days_left": 3, "not_after": "z", "verified": True},
             {"name": "alien", "days_left": 300, "not_after": "z", "verified": False},
             {"name": "broken", "error": "unreadable certificate"}]
    problems = [f.problem for f in certificate_findings(certs)]
    assert problems == ["certificate admin expires in 29 day(s), on x", "certificate old expired on y",
                        "certificate ca expires in 3 day(s), on z",
                        "certificate alien does not verify against the cluster's CA",
                        "certificate broken: unreadable certificate"]
    assert certificate_findings(certs)[2].fix.startswith("provision pki rotate-ca SPEC --ca kubernetes, then provision up")
    for ca, option in (("front-proxy-ca", "front-proxy"), ("etcd-ca", "etcd")):
        [finding] = certificate_findings([{**certs[3], "name": ca}])
        assert finding.fix.startswith(f"provision pki rotate-ca SPEC --ca {option}, then provision up SPEC")
    assert certificate_findings(certs)[0].fix.startswith("provision pki rotate SPEC (renews every leaf)")
    one = certificate_findings([certs[0], certs[1]])
    assert len(one) == 1 and one[0].fix.startswith("provision pki rotate SPEC --leaf admin;")


@pytest.mark.parametrize("healthy,members,quorum_lost", [(3, 3, False), (2, 3, False), (1, 3, True), (0, 1, True),
                                                         (3, 5, False), (2, 5, True)])
def test_quorum(healthy, members, quorum_lost):
    health = {f"https://m{i}:2379": {"healthy": i < healthy, "error": None if i < healthy else "refused"}
              for i in range(members)}
    findings = quorum_findings(health, members)
    assert len([f for f in findings if "not healthy" in f.problem]) == members - healthy
    assert any("no quorum" in f.problem for f in findings) is quorum_lost


def test_tools_missing_are_named():
    check = check_tools("aws", with_etcd=True, which=lambda name: None if name == "etcdctl" else "/bin/" + name,
                        has_module=lambda name: False)
    assert [f.problem for f in check.findings] == [
        "etcdctl is not installed; provider aws needs it",
        "Python module boto3 is not installed; provider aws needs it"]
    assert check_tools("aws", False, which=lambda n: "/bin/x", has_module=lambda n: True).ok


def test_drift_names_changed_fields_and_digest_changes():
    changes = {"a": HostChange("a", UPDATE), "b": HostChange("b", "keep"), "c": HostChange("c", "keep")}
    digests = {"b": ("1", "2"), "c": ("3", "3")}
    problems = [f.problem for f in drift_findings(changes, digests)]
    assert problems[0].startswith("host a needs an in-place update")
    assert problems[1].startswith("host b booted with a config that differs")
    assert len(problems) == 2


def test_doctor_reports_spec_drift_and_missing_hosts(cli, tmp_path):
    """Hosts recorded (as machines records them) that the cloud does not have, and a spec change."""
    spec_path, state_dir = pki_state(cli, tmp_path)
    spec = parse_spec(DOCTOR_BASE)
    store = LocalStateStore(spec.name, state_dir)
    state = store.read()
    p = plan(spec, {})
    workers = [h for h in p.desired if h.role == "worker"]  # no etcd member, no master: nothing to dial
    state["hosts"] = {h.name: {"pool": h.pool, "role": h.role, "index": h.index, "etcd": h.etcd,
                               "address": h.address, BOOT: boot_record(spec, h, p.desired, None)} for h in workers}
    store.write(state)
    changed = write_spec(tmp_path, dict(DOCTOR_BASE, kubernetes={"api_server_names": ["api.example.org"]}),
                         "changed.yaml")
    result = cli("doctor", changed, "--state-dir", state_dir, "-o", "json")
    assert result.code == 1
    findings = json.loads(result.out)["findings"]
    drift = [f["problem"] for f in findings if f["check"] == "drift"]
    assert "host doctor-workers-0 needs an in-place update: cluster.api_endpoint, kubernetes.api_server_names" in drift
    assert not [p for p in drift if "cannot render" in p]  # the configs did render to compare
    missing = [f["problem"] for f in findings if f["check"] == "inventory"]
    assert missing == ["host doctor-workers-0 is in state but gone from the cloud",
                       "host doctor-workers-1 is in state but gone from the cloud"]


def test_a_cluster_with_no_state_is_a_finding_and_creates_nothing(cli, tmp_path):
    spec_path = write_spec(tmp_path, DOCTOR_BASE)
    state_dir = tmp_path / "none"
    result = cli("doctor", spec_path, "--state-dir", state_dir, "-o", "json")
    assert result.code == 1
    doc = json.loads(result.out)
    assert doc["findings"][0] == {
        "check": "state", "problem": f"cluster doctor has no state at {(state_dir / 'doctor').absolute()}",
        "fix": f"create it with: provision up {spec_path} --state-dir {state_dir} --yes"}
    assert not state_dir.exists()


def test_renewed_certificates_are_drift_from_what_hosts_booted_with(cli, tmp_path):
    """Workers recorded with the config the render phase stored; `pki rotate` then makes what
    would render differ from it, with no spec field changed."""
    spec_path = write_spec(tmp_path, DOCTOR_BASE)
    state_dir = tmp_path / "state"
    made = cli("up", spec_path, "--yes", "--until", "render", "--state-dir", state_dir)
    assert made.code == 0, made.err
    spec = parse_spec(DOCTOR_BASE)
    store = LocalStateStore(spec.name, state_dir)
    state = store.read()
    p = plan(spec, state)
    config = store.read_blob("rendered/pool-workers.ign")
    state["hosts"] = {h.name: {"pool": h.pool, "role": h.role, "index": h.index, "etcd": h.etcd,
                               "address": h.address, BOOT: boot_record(spec, h, p.desired, config)}
                      for h in p.desired if h.role == "worker"}
    store.write(state)

    def drift():
        result = cli("doctor", spec_path, "--state-dir", state_dir, "-o", "json")
        return [f["problem"] for f in json.loads(result.out)["findings"] if f["check"] == "drift"]

    assert drift() == []
    assert cli("pki", "rotate", spec_path, "--state-dir", state_dir).code == 0
    assert drift() == [f"host doctor-workers-{i} booted with a config that differs from what renders now "
                       "(certificates or templates changed, no spec field did)" for i in range(2)]
