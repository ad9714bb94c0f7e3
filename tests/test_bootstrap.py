"""The inventory files bootstrap writes for a cluster (pure parts; role runs are tested on a
live local cluster in tests/local/test_cluster.py)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from provision import bootstrap

SPEC = SimpleNamespace(name="inv", ssh=SimpleNamespace(user="core"))
CLUSTER = {
    "inv-masters-0": {"role": "master", "pool": "masters", "etcd": True, "address": "10.0.0.10",
                      "host_key": "ssh-ed25519 AAAAmaster0"},
    "inv-gpu-pool-0": {"role": "worker", "pool": "gpu-pool", "address": "10.0.0.20"},
    "inv-workers-0": {"role": "worker", "pool": "workers", "address": "10.0.0.21", "ssh_address": "192.0.2.21"},
}


def test_known_hosts_keeps_remembered_keys_of_the_cluster_and_pins_state_keys():
    existing = ("10.0.0.20 ssh-ed25519 AAAAfirstseen\n"      # accept-new, no host_key in state
                "10.0.0.10 ssh-ed25519 AAAAold\n"            # replaced by the pinned key
                "10.0.0.99 ssh-ed25519 AAAAgone\n")          # no host of the cluster has it
    text = bootstrap.known_hosts_text(existing, CLUSTER)
    assert text.splitlines() == ["10.0.0.10 ssh-ed25519 AAAAmaster0", "10.0.0.20 ssh-ed25519 AAAAfirstseen"]
    assert bootstrap.known_hosts_text(text, CLUSTER) == text


def test_inventory_file_lists_the_whole_cluster_by_role_and_pool(tmp_path: Path):
    import runpy
    inventory, known_hosts = bootstrap.write_inventory(SPEC, tmp_path, CLUSTER, tmp_path / "id")
    assert inventory.stat().st_mode & 0o777 == 0o600 and known_hosts.stat().st_mode & 0o777 == 0o600
    groups = {k: v for k, v in runpy.run_path(str(inventory)).items() if isinstance(v, list)}
    names = {g: sorted(m[0] if isinstance(m, tuple) else m for m in members) for g, members in groups.items()}
    assert names == {"masters": ["inv-masters-0"], "workers": ["inv-gpu-pool-0", "inv-workers-0"],
                     "pool_masters": ["inv-masters-0"], "pool_gpu_pool": ["inv-gpu-pool-0"],
                     "pool_workers": ["inv-workers-0"]}
    data = dict(groups["workers"])["inv-workers-0"]
    assert data["ssh_hostname"] == "192.0.2.21" and data["ssh_known_hosts_file"] == str(known_hosts)
    assert inventory.read_bytes() == bootstrap.write_inventory(SPEC, tmp_path, CLUSTER, tmp_path / "id")[0].read_bytes()


def test_a_dry_run_writes_no_inventory_file(tmp_path: Path):
    with bootstrap.known_hosts_for_run(SPEC, tmp_path, CLUSTER, tmp_path / "id", dry_run=True) as known_hosts:
        assert "AAAAmaster0" in known_hosts.read_text()
    assert not known_hosts.exists()
    assert list(tmp_path.iterdir()) == []


def test_pyinfra_finds_its_connectors_once_per_process(monkeypatch):
    """Each role run makes a pyinfra Inventory, which read every installed package's entry
    points twice; after the first, none are read again."""
    from pyinfra.api import Inventory, connectors
    from provision.bootstrap import remember_connectors
    remember_connectors()
    Inventory(([("h0", {"ssh_hostname": "127.0.0.1"})], {}))
    reads = []
    real = connectors.entry_points
    monkeypatch.setattr(connectors, "entry_points", lambda **kw: reads.append(kw) or real(**kw))
    inventory = Inventory(([("h1", {"ssh_hostname": "127.0.0.1"})], {}))
    assert reads == [] and inventory.get_host("h1").connector_cls.__name__ == "SSHConnector"
