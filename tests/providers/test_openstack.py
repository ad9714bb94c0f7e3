"""The openstack provider driven by the real openstacksdk against the local HTTP stand-in
(tests/fakes/openstack_api.py), configured through clouds.yaml."""
from __future__ import annotations

import base64

import pytest

from provision.errors import ActionError, UserError
from provision.plan import plan
from provision.providers.openstack import OpenStackProvider

from .conftest import configs_for, fast_backoff, make_spec


def os_spec(**options):
    base = {"name": "openstack", "cloud": "testcloud", "image": "flatcar-stable", "flavor": "m1.small"}
    base.update(options)
    return make_spec(base, workers=2)


def test_servers_get_user_data_metadata_key_and_group(openstack_api, tmp_path):
    spec = os_spec()
    provider = fast_backoff(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    configs = configs_for(hosts)
    provider.create_hosts(hosts, configs)
    servers = {s["name"]: s for s in openstack_api.servers.values()}
    assert sorted(servers) == sorted(h.name for h in hosts)
    for host in hosts:
        server = servers[host.name]
        assert base64.b64decode(server["user_data"]) == configs[host.name]
        assert server["metadata"] == {"provision:cluster": spec.name, "provision:pool": host.pool,
                                      "provision:role": host.role, "provision:host": host.name}
        assert server["key_name"] == f"provision-{spec.name}"
        assert server["security_groups"] == [{"name": f"provision-{spec.name}"}]
        assert server["flavor"]["id"] == "fl-m1.small" and server["image"]["id"] == "img-flatcar"
    master = next(h for h in hosts if h.role == "master")
    assert servers[master.name]["addresses"][f"provision-{spec.name}"][0]["addr"] == master.address


def test_network_group_and_rules_made_once(openstack_api, tmp_path):
    spec = os_spec()
    OpenStackProvider(spec, tmp_path).prepare()
    OpenStackProvider(spec, tmp_path).prepare()
    assert [n["name"] for n in openstack_api.networks.values()] == [f"provision-{spec.name}"]
    assert [s["cidr"] for s in openstack_api.subnets.values()] == ["10.241.0.0/24"]
    assert len(openstack_api.groups) == 1 and len(openstack_api.keypairs) == 1
    group_id = next(iter(openstack_api.groups))
    rules = {(r["protocol"], r["port_range_min"], r["port_range_max"], r.get("remote_ip_prefix") or
              ("members" if r.get("remote_group_id") == group_id else r.get("remote_group_id")))
             for r in openstack_api.rules.values()}
    assert rules >= {("tcp", 22, 22, "0.0.0.0/0"), ("tcp", 6443, 6443, "0.0.0.0/0"),
                     ("tcp", 2379, 2380, "members"), ("udp", 8472, 8472, "members")}
    assert len(openstack_api.rules) == len(rules), "rules were added twice"


def test_throttling_is_retried(openstack_api, tmp_path):
    spec = os_spec()
    logs = []
    provider = fast_backoff(OpenStackProvider(spec, tmp_path, log=logs.append))
    hosts = plan(spec, {}).create
    openstack_api.inject("create_server", "throttle")
    openstack_api.inject("list_servers", "throttle")
    provider.create_hosts(hosts, configs_for(hosts))
    assert any("throttled (429)" in line for line in logs)
    assert sorted(s["name"] for s in openstack_api.servers.values()) == sorted(h.name for h in hosts)


def test_unknown_cloud_and_missing_image_are_user_errors(openstack_api, tmp_path):
    with pytest.raises(UserError, match=r"provider.cloud: .*nosuchcloud"):
        OpenStackProvider(os_spec(cloud="nosuchcloud"), tmp_path).list_hosts()
    spec = os_spec(image="no-such-image")
    provider = fast_backoff(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    with pytest.raises(UserError, match=r"provider.image: no image 'no-such-image'"):
        provider.create_hosts(hosts, configs_for(hosts))
    assert (openstack_api.servers, openstack_api.networks, openstack_api.groups) == ({}, {}, {}), \
        "a spec naming a missing image created something"


def test_refused_request_stops_with_the_cloud_message(openstack_api, tmp_path):
    spec = os_spec()
    provider = fast_backoff(OpenStackProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    openstack_api.inject("create_server", "fail")
    with pytest.raises(ActionError, match=r"openstack create server .*injected failure"):
        provider.create_hosts(hosts, configs_for(hosts))
    assert openstack_api.calls["create_server"] == 1


def test_teardown_removes_what_prepare_made(openstack_api, tmp_path):
    spec = os_spec()
    provider = OpenStackProvider(spec, tmp_path)
    hosts = plan(spec, {}).create
    provider.create_hosts(hosts, configs_for(hosts))
    provider.destroy_hosts([h.name for h in hosts])
    provider.teardown()
    assert (openstack_api.servers, openstack_api.networks, openstack_api.subnets, openstack_api.groups,
            openstack_api.keypairs) == ({}, {}, {}, {}, {})
    assert openstack_api.unknown == []
