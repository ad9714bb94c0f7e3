"""The local provider against the real Ignition engine, sshd and etcd, with hand-written configs."""
from __future__ import annotations

import hashlib
import secrets
import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from provision.errors import ActionError, UserError
from provision.plan import plan
from provision.providers import get_provider, provider_class
from provision.providers.local import net as local_net
from provision.spec import load_spec

from tests.real import require, require_local_host

from .conftest import REPO, bare_cluster, cluster_namespaces, free_subnet, needs_root, processes_mentioning, unique_name

pytestmark = [pytest.mark.slow, pytest.mark.root, needs_root]


def data_url(text: str) -> str:
    return "data:," + urllib.parse.quote(text)


def config(host, artifacts: dict, pubkey: str, etcd_hash: str | None = None) -> bytes:
    env = (f"ETCD_NAME={host.name}\nETCD_DATA_DIR=/var/lib/etcd\n"
           f"ETCD_LISTEN_CLIENT_URLS=http://{host.address}:2379\nETCD_ADVERTISE_CLIENT_URLS=http://{host.address}:2379\n"
           f"ETCD_LISTEN_PEER_URLS=http://{host.address}:2380\n"
           f"ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{host.address}:2380\n"
           f"ETCD_INITIAL_CLUSTER={host.name}=http://{host.address}:2380\n")
    etcd = artifacts["etcd"]
    doc = {
        "ignition": {"version": "3.3.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [pubkey]}]},
        "storage": {
            "files": [
                {"path": "/opt/bin/etcd", "mode": 0o755,
                 "contents": {"source": etcd["url"], "verification": {"hash": "sha512-" + (etcd_hash or etcd["sha512"])}}},
                {"path": "/etc/etcd/etcd.env", "mode": 0o644, "contents": {"source": data_url(env)}},
            ],
            "directories": [{"path": "/var/lib/etcd", "mode": 0o700}],
        },
        "systemd": {"units": [
            {"name": "etcd-member.service", "enabled": True, "contents":
             "[Service]\nEnvironmentFile=/etc/etcd/etcd.env\nExecStart=/opt/bin/etcd\nRestart=always\n"
             "[Install]\nWantedBy=multi-user.target\n"},
            {"name": "kubelet.service", "enabled": True, "contents":
             "[Service]\nExecStart=/opt/bin/kubelet\n[Install]\nWantedBy=multi-user.target\n"},
        ]},
    }
    return json.dumps(doc).encode()


def make_host(tmp: Path) -> dict:
    """A one-master cluster of its own (name, subnet, key pair), its host planned, not created."""
    require_local_host()
    name = unique_name("lp")
    spec_file = tmp / "spec.yaml"
    spec_file.write_text(f"name: {name}\nprovider:\n  name: local\n  subnet: {free_subnet()}\n"
                         "etcd:\n  count: 1\npools:\n  - name: masters\n    role: master\n    count: 1\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "key")], check=True)
    spec = load_spec(spec_file)
    workdir = tmp / "state" / name
    workdir.mkdir(parents=True, mode=0o700)
    provider = get_provider(spec, workdir)
    host = plan(spec, {}).create[0]
    return {"spec": spec, "provider": provider, "host": host, "tmp": tmp, "workdir": workdir,
            "pubkey": (tmp / "key.pub").read_text().strip()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The module's host, created and running (tests that break or remove it make their own)."""
    made = make_host(tmp_path_factory.mktemp("localprov"))
    provider, host = made["provider"], made["host"]
    try:
        provider.create_hosts([host], {host.name: config(host, provider.artifacts(), made["pubkey"])})
        provider.wait_running([host.name], timeout=30)
        yield made
    finally:
        provider.teardown()


@pytest.fixture
def own_host(tmp_path):
    made = make_host(tmp_path)
    try:
        yield made
    finally:
        made["provider"].teardown()


def ssh(setup, *command: str) -> subprocess.CompletedProcess:
    provider, host, tmp = setup["provider"], setup["host"], setup["tmp"]
    known = tmp / "known_hosts"
    known.write_text(f"{host.address} {provider.host_public_key(host.name)}\n")
    return subprocess.run(["ssh", "-i", str(tmp / "key"), "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5", f"core@{host.address}",
                           *command], capture_output=True, text=True, timeout=30)


def test_wrong_hash_fails_in_ignition_and_a_rerun_repairs(own_host):
    provider, host = own_host["provider"], own_host["host"]
    arts = provider.artifacts()
    assert arts["etcd"]["sha512"] == hashlib.sha512(Path(require("etcd")).read_bytes()).hexdigest()
    with pytest.raises(ActionError, match="Ignition .* failed"):
        provider.create_hosts([host], {host.name: config(host, arts, own_host["pubkey"], etcd_hash="0" * 128)})
    assert not (provider.host_root(host.name) / "opt/bin/etcd").exists()
    records = provider.create_hosts([host], {host.name: config(host, arts, own_host["pubkey"])})
    assert [r.name for r in records] == [host.name]
    assert provider.wait_running([host.name], timeout=30)[0].private_address == host.address


def test_ignition_wrote_the_root(setup):
    provider, host = setup["provider"], setup["host"]
    root = provider.host_root(host.name)
    assert (root / "opt/bin/etcd").read_bytes() == Path(require("etcd")).read_bytes()
    assert "ETCD_NAME=" + host.name in (root / "etc/etcd/etcd.env").read_text()
    assert setup["pubkey"] in (root / "home/core/.ssh/authorized_keys.d/ignition").read_text()
    assert "enable etcd-member.service" in (root / "etc/systemd/system-preset/20-ignition.preset").read_text()


def test_units_run_or_are_skipped_never_faked(setup):
    provider, host = setup["provider"], setup["host"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        units = provider.unit_states(host.name)
        if units.get("etcd-member.service", {}).get("state") == "running":
            break
        time.sleep(0.2)
    assert units["kubelet.service"] == {"unit": "kubelet.service", "state": "skipped",
                                        "reason": "binary /opt/bin/kubelet is not present"}
    assert units["etcd-member.service"]["state"] == "running"
    # etcd answers on the host's own address, with the environment file's settings
    deadline = time.monotonic() + 20
    while True:
        proc = subprocess.run([require("etcdctl"), f"--endpoints=http://{host.address}:2379", "member", "list"],
                              capture_output=True, text=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
        if proc.returncode == 0 and host.name in proc.stdout:
            break
        assert time.monotonic() < deadline, proc
        time.sleep(0.3)
    # and its data directory is in the host's root
    assert (provider.host_root(host.name) / "var/lib/etcd/member").is_dir()


def test_ssh_into_the_host_sees_its_own_root(setup):
    provider, host = setup["provider"], setup["host"]
    proc = ssh(setup, "hostname; cat /etc/etcd/etcd.env | head -1; sudo -n sh -c 'echo marker > /etc/provision-test'; "
                      "ls /opt/bin")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == host.name
    assert lines[1] == f"ETCD_NAME={host.name}"
    assert "etcd" in lines[2:]
    # the image's sshd, with its own host key: this machine's /etc/ssh is hidden from the host
    keys = ssh(setup, "ls /etc/ssh").stdout.split()
    assert keys == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "sshd_config"]
    assert provider.unit_states(host.name)["sshd.service"]["state"] == "running"
    # writes to /etc land in the host's root, not on this machine
    assert (provider.host_root(host.name) / "etc/provision-test").read_text() == "marker\n"
    assert not Path("/etc/provision-test").exists()


def test_a_wrong_key_is_refused(setup, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    host = setup["host"]
    proc = subprocess.run(["ssh", "-i", str(tmp_path / "other"), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", f"core@{host.address}", "true"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 255 and "Permission denied" in proc.stderr


def test_create_again_changes_nothing(setup):
    provider, host = setup["provider"], setup["host"]
    before = provider.unit_states(host.name)["etcd-member.service"]["launcher_pid"]
    provider.create_hosts([host], {host.name: config(host, provider.artifacts(), setup["pubkey"])})
    assert provider.unit_states(host.name)["etcd-member.service"]["launcher_pid"] == before
    assert len(cluster_namespaces(setup["spec"].name)) == 1
    jobs = list((provider.host_dir(host.name) / "jobs").iterdir())
    assert jobs and all(j.stat().st_mode & 0o777 == 0o600 for j in jobs)  # unit environments may hold secrets


def test_teardown_after_lost_workdir_leaves_nothing(own_host, tmp_path):
    """A crash that lost the work directory: leftovers are found by name and removed."""
    setup = own_host
    spec, provider, host = setup["spec"], setup["provider"], setup["host"]
    provider.create_hosts([host], {host.name: config(host, provider.artifacts(), setup["pubkey"])})
    provider.wait_running([host.name], timeout=30)
    deadline = time.monotonic() + 20  # a host that has booted (its units up), as a crash finds it
    while provider.unit_states(host.name).get("etcd-member.service", {}).get("state") != "running":
        assert time.monotonic() < deadline, provider.unit_states(host.name)
        time.sleep(0.2)
    lost = get_provider(spec, tmp_path / "elsewhere")
    assert [r.name for r in lost.list_hosts()] == [setup["host"].name]
    lost.teardown()
    assert cluster_namespaces(spec.name) == []
    assert not local_net.link_exists(setup["provider"].bridge)
    assert local_net.links_by_alias(spec.name) == {}
    # every process of the host is gone, and so is the mirror
    leftover = processes_mentioning(str(setup["workdir"]))
    assert leftover == [], [open(f"/proc/{p}/cmdline", "rb").read() for p in leftover]
    assert lost.mirror.pids() == []
    setup["provider"].teardown()
    assert not (setup["workdir"] / "local").exists()


def test_a_subnet_owned_by_another_interface_is_refused(tmp_path):
    subnet = free_subnet()
    gateway = subnet.replace(".0/24", ".1/24")
    other = f"pvt{secrets.token_hex(4)}"
    subprocess.run(["ip", "link", "add", other, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", gateway, "dev", other], check=True)
        spec_file = tmp_path / "spec.yaml"
        name = unique_name("lq")
        spec_file.write_text(f"name: {name}\nprovider:\n  name: local\n  subnet: {subnet}\n"
                             "etcd:\n  count: 1\npools:\n  - name: masters\n    role: master\n    count: 1\n")
        # the spec itself is fine (validate checks the spec alone); up's preflight refuses it
        # before PKI: exit 2 naming the field
        proc = subprocess.run([sys.executable, "-m", "provision", "validate", str(spec_file)], capture_output=True,
                              text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        up = subprocess.run([sys.executable, "-m", "provision", "up", str(spec_file), "--yes", "--state-dir",
                             str(tmp_path / "state")], capture_output=True, text=True, cwd=REPO)
        assert up.returncode == 2 and "Traceback" not in up.stderr
        assert f"provider.subnet: {subnet} is already used on this machine ({other}" in up.stderr
        assert not (tmp_path / "state" / name).exists()
        with pytest.raises(UserError, match="provider.subnet"):
            get_provider(load_spec(spec_file), tmp_path / "work", preflight=True)
        # and still by the bridge's own set-up, should the subnet be taken after the checks
        provider = provider_class("local")(load_spec(spec_file), workdir=tmp_path / "work")
        with pytest.raises(ActionError, match=f"provider.subnet {subnet} is already used on this machine \\({other}"):
            provider.prepare()
        assert not local_net.link_exists(provider.bridge)
    finally:
        subprocess.run(["ip", "link", "del", other], check=False)


def test_a_batch_is_created_side_by_side_and_a_failing_host_stops_no_other(tmp_path):
    """The hosts of one create_hosts call are made at once; one whose Ignition fails is named in
    the error, and the others of the batch are made and run (a re-run completes the failed one)."""
    require_local_host()
    spec, provider, pubkey, _ = bare_cluster(tmp_path, "lb", workers=2)
    try:
        hosts = plan(spec, {}).create
        arts = provider.artifacts()
        bad = hosts[1].name
        configs = {h.name: config(h, arts, pubkey, etcd_hash="0" * 128 if h.name == bad else None) for h in hosts}
        with pytest.raises(ActionError, match=f"Ignition .* failed for {bad}"):
            provider.create_hosts(hosts, configs)
        good = [h.name for h in hosts if h.name != bad]
        assert sorted(r.name for r in provider.wait_running(good, timeout=60)) == sorted(good)
        assert not (provider.host_root(bad) / "opt/bin/etcd").exists()
        configs[bad] = config(hosts[1], arts, pubkey)
        assert sorted(r.name for r in provider.create_hosts(hosts, configs)) == sorted(h.name for h in hosts)
        assert [r.name for r in provider.wait_running([bad], timeout=60)] == [bad]
    finally:
        provider.teardown()
