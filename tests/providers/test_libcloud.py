"""The libcloud provider: its EC2 driver against moto over HTTP; the Dummy driver for plumbing
(and for the refusal of a driver that cannot pass user data)."""
from __future__ import annotations

import base64

import boto3
import pytest

from provision.errors import UserError
from provision.plan import plan
from provision.providers import get_provider
from provision.providers.libcloud_driver import LibcloudProvider

from .conftest import MOTO_AMI, configs_for, fast_backoff, make_spec


def test_dummy_driver_is_refused_for_want_of_user_data(monkeypatch, tmp_path):
    monkeypatch.setenv("LIBCLOUD_KEY", "0")
    spec = make_spec({"name": "libcloud", "driver": "dummy"})
    provider = get_provider(spec, tmp_path)
    caps = provider.capabilities()
    assert caps["user_data"] is None and caps["tags"] is None
    # Plumbing: the Dummy driver's own nodes are not this cluster's.
    assert [n.name for n in provider.driver.list_nodes()] and provider.list_hosts() == []
    hosts = plan(spec, {}).create
    with pytest.raises(UserError, match=r"provider.driver: libcloud driver 'dummy' cannot pass user data"):
        provider.create_hosts(hosts, configs_for(hosts))
    assert len(provider.driver.list_nodes()) == 2, "a node was created although the driver was refused"


def test_unknown_driver_names_the_field():
    with pytest.raises(UserError, match=r"provider.driver: libcloud has no compute driver 'nosuchcloud'"):
        get_provider(make_spec({"name": "libcloud", "driver": "nosuchcloud"}))


def test_ec2_driver_passes_user_data_and_tags(libcloud_ec2_env, tmp_path):
    spec = make_spec({"name": "libcloud", "driver": "ec2", "region": "us-east-1", "image": MOTO_AMI,
                      "size": "t2.micro"}, workers=2)
    provider = fast_backoff(LibcloudProvider(spec, tmp_path))
    caps = provider.capabilities()
    assert caps == {"user_data": "ex_userdata", "tags": "ex_metadata", "client_token": "ex_clienttoken"}
    hosts = plan(spec, {}).create
    configs = configs_for(hosts)
    records = {r.name: r for r in provider.create_hosts(hosts, configs)}
    client = boto3.client("ec2", region_name="us-east-1")
    for host in hosts:
        instance_id = records[host.name].provider_id
        attr = client.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        assert base64.b64decode(attr["UserData"]["Value"]) == configs[host.name]
        described = client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        tags = {t["Key"]: t["Value"] for t in described["Tags"]}
        assert tags["provision:cluster"] == spec.name and tags["provision:pool"] == host.pool
        assert tags["provision:host"] == host.name


def test_ec2_driver_throttling_is_retried_without_duplicates(libcloud_ec2_env, tmp_path):
    proxy = libcloud_ec2_env
    spec = make_spec({"name": "libcloud", "driver": "ec2", "region": "us-east-1", "image": MOTO_AMI,
                      "size": "t2.micro"}, workers=1)
    logs = []
    provider = fast_backoff(LibcloudProvider(spec, tmp_path, log=logs.append))
    hosts = plan(spec, {}).create
    proxy.inject("RunInstances", "throttle", "throttle")
    provider.create_hosts(hosts, configs_for(hosts))
    # Two answers were RequestLimitExceeded (503); libcloud's own retry or ours tried again.
    assert proxy.calls["RunInstances"] == len(hosts) + 2
    assert sorted(r.name for r in provider.list_hosts()) == sorted(h.name for h in hosts)


def test_ec2_driver_missing_size_names_the_field(libcloud_ec2_env, tmp_path):
    spec = make_spec({"name": "libcloud", "driver": "ec2", "region": "us-east-1", "image": MOTO_AMI,
                      "size": "no-such-size"}, workers=0)
    provider = fast_backoff(LibcloudProvider(spec, tmp_path))
    hosts = plan(spec, {}).create
    with pytest.raises(UserError, match=r"provider.size: driver ec2 has no size 'no-such-size'"):
        provider.create_hosts(hosts, configs_for(hosts))
    assert provider.list_hosts() == []


def test_the_clouds_user_data_limit_is_enforced(tmp_path):
    import json
    import os

    from provision.errors import ActionError
    from provision.phases.machines import fit_config
    provider = LibcloudProvider(make_spec({"name": "libcloud", "driver": "ec2", "image": MOTO_AMI}), tmp_path)
    noise = base64.b64encode(os.urandom(20000)).decode()
    config = json.dumps({"ignition": {"version": "3.3.0"}, "storage": {"files": [
        {"path": "/etc/noise", "contents": {"source": "data:;base64," + noise}}]}}).encode()
    with pytest.raises(ActionError, match=r"over the user-data limit of 16384 bytes \(raw\)"):
        fit_config(provider, config, "noise.ign", lambda m: None)


def test_ec2_driver_ignores_an_untagged_node_with_our_host_name(libcloud_ec2_env, tmp_path):
    """A driver that tags: a node is ours only when tagged ours, never by its name alone."""
    spec = make_spec({"name": "libcloud", "driver": "ec2", "region": "us-east-1", "image": MOTO_AMI,
                      "size": "t2.micro"}, workers=1)
    hosts = plan(spec, {}).create
    client = boto3.client("ec2", region_name="us-east-1")
    foreign = client.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": hosts[-1].name}]}])["Instances"][0]["InstanceId"]
    provider = fast_backoff(LibcloudProvider(spec, tmp_path))
    assert provider.list_hosts() == []
    records = {r.name: r.provider_id for r in provider.create_hosts(hosts, configs_for(hosts))}
    assert records[hosts[-1].name] != foreign
    provider.destroy_hosts([h.name for h in hosts])
    state = client.describe_instances(InstanceIds=[foreign])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"
