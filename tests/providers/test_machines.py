"""The machines phase and `apply_plan` against moto's EC2 server (real boto3), with rendered
configs put in the state store as the render phase leaves them."""
from __future__ import annotations

import base64
import json
import os

import boto3
import pytest

from provision.errors import ActionError
from provision.phases import RunContext
from provision.phases.machines import apply_plan, fit_config, run
from provision.plan import plan
from provision.providers.aws import AWSProvider
from provision.providers.openstack import OpenStackProvider
from provision.state import LocalStateStore
from provision.ui import UI

from .conftest import MOTO_AMI, configs_for, make_spec

ENTRY_KEYS = {"pool", "role", "index", "address", "provider_id", "etcd", "state"}


def aws_spec(workers=3):
    return make_spec({"name": "aws", "region": "us-east-1", "ami": MOTO_AMI}, workers=workers)


def rendered_store(spec, tmp_path, max_workers=10):
    """A store holding what the render phase writes: per-host master configs, one worker config."""
    store = LocalStateStore(spec.name, tmp_path / "state")
    index = {}
    for pool in spec.pools:
        for i in range(max(pool.count, max_workers if pool.role == "worker" else 0)):
            name = f"{spec.name}-{pool.name}-{i}"
            file_name = "workers.ign" if pool.role == "worker" else f"{name}.ign"
            index[name] = {"pool": pool.name, "role": pool.role, "config": file_name}
            store.write_blob(f"rendered/{file_name}",
                             configs_for([type("H", (), {"name": name, "pool": pool.name, "role": pool.role})])[name])
    store.write_blob("rendered/index.json", json.dumps({"hosts": index}).encode())
    return store


def context(spec, store, dry_run=False):
    return RunContext(spec=spec, store=store, state=store.read(), ui=UI(verbosity=-1), dry_run=dry_run)


def tagged_instances(spec):
    client = boto3.client("ec2", region_name="us-east-1")
    pages = client.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:provision:cluster", "Values": [spec.name]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def test_records_every_host_and_a_second_run_creates_nothing(ec2_proxy, tmp_path):
    spec = aws_spec()
    store = rendered_store(spec, tmp_path)
    result = run(context(spec, store))
    state = store.read()
    assert sorted(state["hosts"]) == sorted(result["created"]) and len(result["created"]) == 4
    for name, entry in state["hosts"].items():
        assert ENTRY_KEYS <= set(entry), name
        assert entry["state"] == "running" and entry["provider_id"].startswith("i-") and entry["address"]
    master = f"{spec.name}-masters-0"
    assert state["hosts"][master]["etcd"] is True
    # The etcd member keeps its planned private address; provision reaches it on the public one.
    planned = next(h for h in plan(spec, {}).create if h.name == master)
    assert state["hosts"][master]["address"] == planned.address == state["hosts"][master]["private_address"]
    assert state["hosts"][master]["ssh_address"] == state["hosts"][master]["public_address"] != planned.address
    assert state["pools"]["workers"] == {"size": 3, "spec_count": 3}
    # User data is the rendered config.
    client = boto3.client("ec2", region_name="us-east-1")
    attr = client.describe_instance_attribute(InstanceId=state["hosts"][master]["provider_id"], Attribute="userData")
    assert base64.b64decode(attr["UserData"]["Value"]) == store.read_blob(f"rendered/{master}.ign")

    calls = ec2_proxy.calls["RunInstances"]
    again = run(context(spec, store))
    assert again["created"] == [] and ec2_proxy.calls["RunInstances"] == calls
    assert len(tagged_instances(spec)) == 4


def test_dry_run_changes_nothing(ec2_proxy, tmp_path):
    spec = aws_spec()
    store = rendered_store(spec, tmp_path)
    before = store.read()
    result = run(context(spec, store, dry_run=True))
    assert result["dry_run"] is True and len(result["create"]) == 4
    assert sum(ec2_proxy.calls.values()) == 0, "a dry run called the cloud"
    assert store.read() == before


def test_missing_render_fails_before_anything_is_created(ec2_proxy, tmp_path):
    spec = aws_spec()
    store = LocalStateStore(spec.name, tmp_path / "state")
    with pytest.raises(ActionError, match=r"rendered/index.json: run the render phase"):
        run(context(spec, store))
    assert ec2_proxy.calls["RunInstances"] == 0


def test_hosts_made_before_a_crash_are_adopted_not_duplicated(ec2_proxy, tmp_path):
    spec = aws_spec()
    store = rendered_store(spec, tmp_path)
    # The cloud answered, then the process died before state was written.
    hosts = plan(spec, {}).create
    AWSProvider(spec).create_hosts(hosts, configs_for(hosts))
    calls = ec2_proxy.calls["RunInstances"]
    run(context(spec, store))
    assert ec2_proxy.calls["RunInstances"] == calls
    assert sorted(store.read()["hosts"]) == sorted(h.name for h in hosts)
    assert len(tagged_instances(spec)) == len(hosts)


def test_apply_plan_resizes_a_pool(ec2_proxy, tmp_path):
    spec = aws_spec(workers=3)
    store = rendered_store(spec, tmp_path)
    run(context(spec, store))

    ctx = context(spec, store)
    smaller = plan(spec, ctx.state, sizes={"masters": 1, "workers": 1})
    result = apply_plan(ctx, smaller)
    assert result["destroyed"] == [f"{spec.name}-workers-1", f"{spec.name}-workers-2"]
    state = store.read()
    assert sorted(n for n in state["hosts"] if "workers" in n) == [f"{spec.name}-workers-0"]
    assert state["pools"]["workers"]["size"] == 1
    assert len(tagged_instances(spec)) == 2

    ctx = context(spec, store)
    ec2_proxy.reset_counts()
    result = apply_plan(ctx, plan(spec, ctx.state, sizes={"masters": 1, "workers": 5}))
    assert sorted(result["created"]) == [f"{spec.name}-workers-{i}" for i in range(1, 5)]
    instances = tagged_instances(spec)
    assert len(instances) == 6
    hosts = store.read()["hosts"]
    created = {hosts[name]["provider_id"] for name in result["created"]}
    zones = {i["Placement"]["AvailabilityZone"] for i in instances if i["InstanceId"] in created}
    assert zones
    # one call per zone the new workers spread over (a RunInstances takes one subnet), not one per host
    assert ec2_proxy.calls["RunInstances"] == len(zones) <= 3, "new workers were not created one call per zone"


def test_a_host_the_cloud_lost_is_recreated(ec2_proxy, tmp_path):
    spec = aws_spec(workers=2)
    store = rendered_store(spec, tmp_path)
    run(context(spec, store))
    lost = f"{spec.name}-workers-1"
    boto3.client("ec2", region_name="us-east-1").terminate_instances(
        InstanceIds=[store.read()["hosts"][lost]["provider_id"]])
    result = run(context(spec, store))
    assert result["recreated"] == [lost]
    assert len(tagged_instances(spec)) == 3


def test_a_config_that_cannot_fit_is_refused_clearly(tmp_path):
    spec = make_spec({"name": "openstack", "cloud": "none"})
    provider = OpenStackProvider(spec, tmp_path)
    huge = json.dumps({"ignition": {"version": "3.3.0"}, "storage": {"files": [
        {"path": "/etc/noise", "contents": {"source": "data:;base64," + base64.b64encode(os.urandom(80000)).decode()}}]}}).encode()
    with pytest.raises(ActionError, match=r"noise.ign: config is \d+ bytes even compressed, over the user-data limit of 65535"):
        fit_config(provider, huge, "noise.ign", lambda m: None)
    small = json.dumps({"ignition": {"version": "3.3.0"}}).encode()
    assert fit_config(provider, small, "small.ign", lambda m: None) == small
