"""Pure parts of the local-provider work: status figures, role summaries, inventory, kubeconfig,
scale's argument checks, and `up --dry-run` creating nothing."""
from __future__ import annotations

import json

import pytest
import yaml

from provision.bootstrap import RoleOutcome, cluster_hosts, summarize, write_inventory
from provision.errors import UserError
from provision.phases.kubeconfig import admin_kubeconfig, api_server_url
from provision.spec import parse_spec
from provision.state import LocalStateStore
from provision.etcd.keys import flannel_config
from provision.status import headroom_figures
from provision.api import check_pool_request as check_request

from .conftest import REPO, provision

SPEC = parse_spec(yaml.safe_load((REPO / "examples/local.yaml").read_text()))
HOSTS = {
    "demo-masters-0": {"pool": "masters", "role": "master", "etcd": True, "address": "10.250.0.10"},
    "demo-workers-0": {"pool": "workers", "role": "worker", "etcd": False, "address": "10.250.0.13",
                       "host_key": "ssh-ed25519 AAAAkey"},
    "demo-workers-1": {"pool": "workers", "role": "worker", "etcd": False, "address": "10.250.0.14"},
    "demo-workers-2": {"pool": "workers", "role": "worker", "etcd": False},  # no address yet
}


def test_cluster_hosts_filters_by_role_and_etcd_and_needs_an_address():
    state = {"hosts": HOSTS}
    assert list(cluster_hosts(state, etcd=True)) == ["demo-masters-0"]
    assert list(cluster_hosts(state, roles=("worker",))) == ["demo-workers-0", "demo-workers-1"]


def test_summarize_names_missing_files_and_failed_units():
    outcomes = {"a": RoleOutcome("a", changed=1, units={"x.service": {"state": "failed"},
                                                       "k.service": {"state": "skipped"}}),
                "b": RoleOutcome("b", missing=["/etc/kubernetes/kubelet.env"]),
                "c": RoleOutcome("c", error="cannot connect over SSH")}
    changed, problems = summarize(outcomes, dry_run=False)
    assert changed == 1
    assert problems == ["a: unit x.service is failed", "b: missing /etc/kubernetes/kubelet.env",
                        "c: cannot connect over SSH"]


def test_inventory_pins_known_host_keys(tmp_path):
    hosts = {k: v for k, v in HOSTS.items() if v.get("address")}
    inventory, known = write_inventory(SPEC, tmp_path, hosts, tmp_path / "id")
    assert known.read_text() == "10.250.0.13 ssh-ed25519 AAAAkey\n"
    assert oct(inventory.stat().st_mode & 0o777) == "0o600"
    namespace: dict = {}
    exec(inventory.read_text(), namespace)  # a pyinfra inventory file is Python
    assert [name for name, _ in namespace["workers"]] == ["demo-workers-0", "demo-workers-1"]
    data = dict(namespace["workers"])["demo-workers-0"]
    assert (data["ssh_hostname"], data["ssh_user"], data["ssh_strict_host_key_checking"]) == \
        ("10.250.0.13", "core", "yes")
    assert dict(namespace["workers"])["demo-workers-1"]["ssh_strict_host_key_checking"] == "accept-new"


def test_inventory_reaches_hosts_on_their_ssh_address(tmp_path):
    hosts = {"demo-masters-0": {"pool": "masters", "role": "master", "etcd": True, "address": "10.240.0.10",
                                "ssh_address": "203.0.113.7", "host_key": "ssh-ed25519 AAAAm0"}}
    inventory, known = write_inventory(SPEC, tmp_path, hosts, tmp_path / "id")
    assert known.read_text() == "203.0.113.7 ssh-ed25519 AAAAm0\n"
    namespace: dict = {}
    exec(inventory.read_text(), namespace)
    assert dict(namespace["masters"])["demo-masters-0"]["ssh_hostname"] == "203.0.113.7"


def test_headroom_figures_count_unknown_hosts_as_unknown():
    loads = {"demo-workers-0": {"containers": 3, "cpu": 0.5, "memory": 0.2}, "demo-workers-1": None}
    figures = headroom_figures(SPEC, HOSTS, loads)
    assert figures["hosts"] == 3 and figures["reporting"] == 1
    assert figures["unknown"] == ["demo-workers-1", "demo-workers-2"]
    assert (figures["possible"], figures["used"], figures["available"], figures["reserve"]) == (24, 3, 21, 2)


def test_flannel_config_is_the_spec_network():
    assert json.loads(flannel_config(SPEC)) == {"Network": "10.2.0.0/16", "Backend": {"Type": "vxlan"}}


def test_admin_kubeconfig_is_deterministic(tmp_path):
    store = LocalStateStore("demo", tmp_path)
    for name in ("pki/ca.crt", "pki/admin.crt", "pki/admin.key"):
        store.write_blob(name, f"-----{name}-----\n".encode())
    state = {"hosts": HOSTS}
    assert admin_kubeconfig(SPEC, store, state) == admin_kubeconfig(SPEC, store, state)
    doc = yaml.safe_load(admin_kubeconfig(SPEC, store, state))
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.250.0.10:6443"
    assert api_server_url(SPEC, state) == "https://10.250.0.10:6443"


@pytest.mark.parametrize("pool,count,message", [
    ("workers", 5, "COUNT: 5 is outside pool 'workers''s min..max (1..4)"),
    ("workers", 0, "COUNT: 0 is outside"),
    ("masters", 3, "POOL: 'masters' is a master pool"),
    ("nope", 1, "POOL: no pool 'nope'"),
])
def test_scale_checks_pool_and_count(pool, count, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_request(SPEC, pool, count)


def test_scale_out_of_range_exits_2_and_creates_nothing(tmp_path):
    proc = provision("scale", REPO / "examples/local.yaml", "workers", "7", "--yes", "--state-dir", tmp_path)
    assert proc.returncode == 2 and "COUNT: 7" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_up_dry_run_creates_nothing(tmp_path):
    proc = provision("up", REPO / "examples/local.yaml", "--dry-run", "--state-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[etcd] would check 3 members: demo-masters-0, demo-masters-1, demo-masters-2" in proc.stderr
    assert not (tmp_path / "demo" / "state.json").exists()
    assert not (tmp_path / "demo" / "local").exists()


def test_provider_paths_are_absolute_for_a_relative_state_dir(tmp_path, monkeypatch):
    """Processes of local hosts start in /: a relative state dir (the default .provision) must
    not leak into their paths."""
    from pathlib import Path

    from provision.providers.local import LocalProvider
    monkeypatch.chdir(tmp_path)
    provider = LocalProvider(SPEC, Path(".provision/demo"))
    assert provider.host_root("demo-masters-0") == tmp_path / ".provision/demo/local/hosts/demo-masters-0/root"


def test_an_etcd_series_this_machine_lacks_is_refused_before_anything_is_made(tmp_path):
    """The local provider serves this machine's etcd: never one of another series under the
    spec's version. `up` exits 2 naming etcd.version and what is there, creating nothing."""
    doc = yaml.safe_load((REPO / "examples/local.yaml").read_text())
    doc["etcd"]["version"] = "3.9.1"
    doc["provider"]["subnet"] = "10.199.251.0/24"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    proc = provision("up", spec, "--yes", "--state-dir", tmp_path / "state")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "etcd.version: 3.9.1: the local provider serves this machine's etcd, and no etcd 3.9.x" in proc.stderr
    assert not (tmp_path / "state" / "demo").exists()
