"""flannel's host-gw routes pod addresses unencapsulated through the other node's address: it
works only where the hosts share an L2 segment that carries those addresses. `validate` (and any
verb, before anything is made) refuses it on AWS and libcloud clouds, and beside a pool with a
provider of its own, naming `network.flannel.backend` and the provider; OpenStack (allowed address
pairs), Vagrant and local keep it."""
from __future__ import annotations

import pytest
import yaml

from tests.conftest import EXAMPLES


def with_backend(tmp_path, example: str, backend: str, extra_pool: dict | None = None):
    data = yaml.safe_load((EXAMPLES / example).read_text())
    data.setdefault("network", {}).setdefault("flannel", {})["backend"] = backend
    if extra_pool is not None:
        from tests.headroom.test_burst import KEY
        data["pools"].append(extra_pool)
        data.setdefault("ssh", {})["authorized_keys"] = [KEY]  # another cloud's hosts need a key
    path = tmp_path / f"{backend}-{example}"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("example, provider", [("aws.yaml", "aws"), ("digitalocean.yaml", "libcloud")])
def test_host_gw_is_refused_where_the_cloud_network_drops_pod_addresses(cli, tmp_path, example, provider):
    result = cli("validate", with_backend(tmp_path, example, "host-gw"))
    assert result.code == 2, result
    assert f"network.flannel.backend: host-gw cannot work with provider {provider}" in result.err, result.err
    assert "use vxlan" in result.err and "Traceback" not in result.err + result.out
    assert cli("validate", with_backend(tmp_path, example, "vxlan")).code == 0  # the same spec with vxlan is fine


@pytest.mark.parametrize("example", ["openstack.yaml", "vagrant.yaml", "local.yaml"])
def test_host_gw_stays_where_the_hosts_share_a_segment(cli, tmp_path, example):
    result = cli("validate", with_backend(tmp_path, example, "host-gw"))
    assert result.code == 0, result.err


def test_host_gw_is_refused_beside_a_pool_of_another_provider(cli, tmp_path):
    pool = {"name": "cloud", "role": "worker", "count": 0, "min": 0, "max": 4,
            "provider": {"name": "aws", "region": "eu-west-1"}}
    result = cli("validate", with_backend(tmp_path, "local.yaml", "host-gw", pool))
    assert result.code == 2, result
    assert ("network.flannel.backend: host-gw cannot work with pools[" in result.err
            and "].provider aws (pool cloud)" in result.err), result.err
    assert "share no L2 segment with the local hosts" in result.err
    # with vxlan this refusal is gone (what the other cloud must reach is burst_reach's to judge)
    assert "host-gw" not in cli("validate", with_backend(tmp_path, "local.yaml", "vxlan", pool)).err


def test_up_refuses_host_gw_on_aws_before_anything_is_made(cli, tmp_path):
    state = tmp_path / "state"
    result = cli("up", with_backend(tmp_path, "aws.yaml", "host-gw"), "--yes", "--state-dir", state)
    assert result.code == 2 and "network.flannel.backend" in result.err, result
    assert not state.exists()  # no state, no cloud call: the spec is refused first
