"""Operator traffic over SSH only (issue 10): with this machine's direct route to the hosts'
etcd (2379) and API server (6443) ports refused by a firewall rule, the whole lifecycle
(`up`, `status`, `doctor`, `scale`, `headroom --once`, `down`) succeeds, and the rule counts no
connection attempt from provision: every etcd and API connection went through SSH to a master.

The rule is one iptables rule in this machine's OUTPUT chain, matching only new TCP connections
to the test cluster's own subnet on those two ports; traffic between the hosts (bridged, never
through OUTPUT) is untouched. It is removed in teardown.
"""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.real import require, require_local_host

from .conftest import cluster_namespaces, example_spec, free_subnet, needs_root, provision, unique_name

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_root]


def rule(subnet: str, name: str) -> list[str]:
    return ["OUTPUT", "-d", subnet, "-p", "tcp", "--syn", "-m", "multiport", "--dports", "2379,6443",
            "-m", "comment", "--comment", f"provision-test-{name}", "-j", "REJECT", "--reject-with", "tcp-reset"]


def refused_attempts(iptables: str, name: str) -> int:
    """Packets the test's rule has refused so far."""
    listing = subprocess.run([iptables, "-w", "-L", "OUTPUT", "-v", "-n", "-x"], capture_output=True, text=True,
                             check=True).stdout
    lines = [line for line in listing.splitlines() if f"provision-test-{name}" in line]
    assert len(lines) == 1, listing
    return int(lines[0].split()[0])


@pytest.fixture
def walled_off(tmp_path):
    """A small cluster's spec (1 master carrying etcd, 1 worker) whose subnet this machine
    reaches on port 22 only."""
    require_local_host()
    iptables = require("iptables")
    name, subnet = unique_name("ssh"), free_subnet()
    spec = example_spec(tmp_path, name, subnet, etcd={"count": 1, "placement": "masters"})
    doc = yaml.safe_load(spec.read_text())
    doc["pools"] = [{"name": "masters", "role": "master", "count": 1},
                    {"name": "workers", "role": "worker", "count": 1, "min": 1, "max": 2}]
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    state_dir = tmp_path / "state"
    subprocess.run([iptables, "-w", "-I", *rule(subnet, name)], check=True)
    try:
        yield {"name": name, "spec": spec, "state_dir": state_dir, "subnet": subnet, "iptables": iptables}
    finally:
        subprocess.run([iptables, "-w", "-D", *rule(subnet, name)], check=False)
        provision("down", spec, "--yes", "--state-dir", state_dir)
        from provision.providers import get_provider
        from provision.spec import load_spec
        get_provider(load_spec(spec), state_dir / name).teardown()


def direct_etcd_answers(c) -> subprocess.CompletedProcess:
    """etcdctl from this machine straight to the member's address (what the rule refuses)."""
    state = json.loads((c["state_dir"] / c["name"] / "state.json").read_text())
    address = next(h["address"] for h in state["hosts"].values() if h.get("etcd"))
    pki = c["state_dir"] / c["name"] / "pki"
    return subprocess.run([require("etcdctl"), f"--endpoints=https://{address}:2379", f"--cacert={pki / 'etcd-ca.crt'}",
                           f"--cert={pki / 'etcd-client-provisioner.crt'}",
                           f"--key={pki / 'etcd-client-provisioner.key'}", "--dial-timeout=2s",
                           "--command-timeout=3s", "endpoint", "health"],
                          capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})


def test_the_whole_lifecycle_runs_with_only_ssh_reachable(walled_off):
    c = walled_off
    args = ("--state-dir", c["state_dir"], "-o", "json")
    up = provision("up", c["spec"], "--yes", *args)
    assert up.returncode == 0, up.stderr[-3000:]
    assert json.loads(up.stdout)["ok"] is True

    # the wall holds: this machine cannot reach etcd directly
    probe = direct_etcd_answers(c)
    assert probe.returncode != 0 and "connection refused" in probe.stderr, probe.stderr
    refused_before = refused_attempts(c["iptables"], c["name"])
    assert refused_before > 0

    status = provision("status", c["spec"], *args)
    assert status.returncode == 0, status.stderr[-3000:]
    etcd = json.loads(status.stdout)["etcd"]
    assert etcd["healthy"] is True and etcd["error"] is None
    member_urls = [url for url in etcd["health"]]  # reported by the members' own addresses
    assert len(member_urls) == 1 and member_urls[0].startswith("https://") and member_urls[0].endswith(":2379")
    assert member_urls[0].split("//")[1].split(":")[0] != "127.0.0.1"

    doctor = provision("doctor", c["spec"], *args)
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    assert checks["etcd"]["ok"] and checks["etcd"]["detail"] == "1 member(s) healthy, quorum held", checks["etcd"]

    scaled = provision("scale", c["spec"], "workers", "2", "--yes", *args)
    assert scaled.returncode == 0, scaled.stderr[-3000:]
    state = json.loads((c["state_dir"] / c["name"] / "state.json").read_text())
    assert sorted(n for n, h in state["hosts"].items() if h["pool"] == "workers") == \
        [f"{c['name']}-workers-0", f"{c['name']}-workers-1"]

    headroom = provision("headroom", c["spec"], "--once", *args)
    assert headroom.returncode == 0, headroom.stderr[-3000:]
    assert json.loads(headroom.stdout)["status"] in ("acted", "decided")

    # nothing provision did knocked on the wall: every connection went through SSH
    assert refused_attempts(c["iptables"], c["name"]) == refused_before

    down = provision("down", c["spec"], "--yes", *args)
    assert down.returncode == 0, down.stderr[-3000:]
    assert cluster_namespaces(c["name"]) == []
    assert refused_attempts(c["iptables"], c["name"]) == refused_before
