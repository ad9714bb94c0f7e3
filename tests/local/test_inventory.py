"""`inventories/cluster.py`: the real pyinfra CLI runs a user's deploy on every host of a local
cluster, reached through provision's state, SSH key and pinned host keys."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provision.inventory import groups_of

from .conftest import REPO, example_spec, free_subnet, needs_root, provision, unique_name

INVENTORY = REPO / "inventories" / "cluster.py"
PYINFRA = Path(sys.executable).parent / "pyinfra"
MARK = "etc/provision-inventory-mark"

DEPLOY = '''
from pyinfra import host
from pyinfra.operations import server

groups = " ".join(sorted(host.groups))
server.shell(name="mark the host",
             commands=[f"echo \\"$(hostname) {host.name} {groups}\\" | sudo -n tee /%s >/dev/null"])
''' % MARK


def pyinfra(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(PYINFRA), "-y", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, **env})


class FakeSpec:
    name = "c"

    class ssh:  # noqa: N801 - shaped like Spec.ssh
        user = "core"


def test_groups_by_role_etcd_and_pool():
    cluster = {"c-edge-workers-0": {"role": "worker", "pool": "edge-workers", "address": "10.0.0.12"},
               "c-masters-0": {"role": "master", "pool": "masters", "etcd": True, "address": "10.0.0.10",
                               "host_key": "ssh-ed25519 AAAA"}}
    groups = groups_of(FakeSpec, cluster, Path("/k"), Path("/kh"))
    names = {group: [name for name, _ in members] for group, members in groups.items()}
    assert names == {"masters": ["c-masters-0"], "workers": ["c-edge-workers-0"], "etcd": ["c-masters-0"],
                     "pool_masters": ["c-masters-0"], "pool_edge_workers": ["c-edge-workers-0"]}
    master = dict(groups["masters"])["c-masters-0"]
    assert (master["ssh_hostname"], master["ssh_user"], master["ssh_key"]) == ("10.0.0.10", "core", "/k")
    assert master["ssh_strict_host_key_checking"] == "yes"  # pinned key
    assert dict(groups["workers"])["c-edge-workers-0"]["ssh_strict_host_key_checking"] == "accept-new"


def test_without_a_spec_pyinfra_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PROVISION_SPEC"}
    proc = subprocess.run([str(PYINFRA), "-y", str(INVENTORY), "exec", "--", "true"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode != 0
    assert "PROVISION_SPEC: name the cluster's spec file" in proc.stdout + proc.stderr


def test_a_cluster_without_state_is_named(tmp_path):
    spec = example_spec(tmp_path, unique_name("inv"), free_subnet())
    proc = pyinfra(str(INVENTORY), "exec", "--", "true",
                   env={"PROVISION_SPEC": str(spec), "PROVISION_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode != 0
    assert "has no state at" in proc.stdout + proc.stderr
    assert not (tmp_path / "state").exists()  # reading an inventory creates no state


@pytest.mark.slow
@pytest.mark.root
@needs_root
def test_a_deploy_reaches_every_host(tmp_path):
    name = unique_name("inv")
    pools = [{"name": "masters", "role": "master", "count": 1},
             {"name": "edge-workers", "role": "worker", "count": 2, "min": 1, "max": 4}]
    spec = example_spec(tmp_path, name, free_subnet(), pools=pools, etcd={"count": 1, "placement": "masters"},
                        headroom=None)
    state_dir = tmp_path / "state"
    try:
        up = provision("up", spec, "--yes", "--until", "wait", "--state-dir", state_dir)
        assert up.returncode == 0, up.stderr
        hosts = json.loads((state_dir / name / "state.json").read_text())["hosts"]
        assert len(hosts) == 3
        deploy = tmp_path / "deploy.py"
        deploy.write_text(DEPLOY)
        env = {"PROVISION_SPEC": str(spec), "PROVISION_STATE_DIR": str(state_dir)}
        proc = pyinfra(str(INVENTORY), str(deploy), env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for host, doc in hosts.items():
            root = state_dir / name / "local" / "hosts" / host / "root"
            hostname, inventory_name, *groups = (root / MARK).read_text().split()
            assert (hostname, inventory_name) == (host, host)  # reached the host itself, by its name
            role_group = "masters" if doc["role"] == "master" else "workers"
            assert {role_group, "pool_" + doc["pool"].replace("-", "_"), "cluster"} <= set(groups)
            assert ("etcd" in groups) == bool(doc.get("etcd"))
            assert not Path("/" + MARK).exists()
        # host keys were checked against the keys provision pinned in state, not learnt anew
        known = (state_dir / name / "inventories" / "known_hosts").read_text()
        for doc in hosts.values():
            assert f"{doc['address']} {doc['host_key']}" in known
        # a limit to one group reaches only its hosts (exec prints each host's output)
        proc = pyinfra(str(INVENTORY), "--limit", "workers", "exec", "--", "hostname", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        reached = {h for h in hosts if f"{h}]" in proc.stdout + proc.stderr}
        assert reached == {h for h, d in hosts.items() if d["role"] == "worker"}
    finally:
        down = provision("down", spec, "--yes", "--state-dir", state_dir)
        assert down.returncode == 0, down.stderr
