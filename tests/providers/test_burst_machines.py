"""Cloud bursting end to end through `reconcile`: a primary pool on the local provider at its
max, and a burst pool on AWS (moto's EC2 server, real boto3). Load beyond the primary pool
creates the burst hosts on moto in one batched RunInstances call; falling load removes them
before any primary host.

What is real: the spec, the decision, `reconcile` with its state store, the providers (the
local provider and the AWS one behind `PoolProviders`), the machines phase's `apply_plan`, and
EC2 (moto). What is not: the primary pool's hosts are not booted here (they are the state
records a local `up` leaves, with the load the test sets; booting local hosts is covered by
tests/headroom/test_end_to_end_local.py), so the plan handed to `apply_plan` holds only the
new hosts, and drains succeed at once (drain is covered by the headroom tests)."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from provision.headroom.policy import READY, HostLoad, Observation
from provision.headroom.reconcile import reconcile
from provision.phases import RunContext
from provision.phases.machines import apply_plan
from provision.plan import plan
from provision.providers.pools import PoolProviders
from provision.spec import parse_spec
from provision.ui import UI

from .conftest import MOTO_AMI, SSH_KEY, unique_name
from .test_machines import rendered_store, tagged_instances


def burst_spec():
    subnet = f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"
    return parse_spec({
        "name": unique_name("b"), "provider": {"name": "local", "subnet": subnet},
        "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1}, "fleet": {"enabled": False},
        "pools": [{"name": "masters", "role": "master", "count": 1},
                  {"name": "workers", "role": "worker", "count": 2, "min": 1, "max": 2},
                  {"name": "cloud", "role": "worker", "count": 0, "max": 4,
                   "provider": {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI}}],
        "headroom": {"pool": "workers", "burst_pool": "cloud", "policies": ["containers"], "reserve": 2,
                     "containers_per_host": 8, "scale_up_cooldown": "0s", "scale_down_cooldown": "0s"}})


class BurstCluster:
    """Observer and actuator over the real providers; loads are what the test sets."""

    def __init__(self, spec, store):
        self.spec, self.store = spec, store
        self.providers = PoolProviders(spec, store.workdir)
        self.loads: dict[str, int] = {}
        self.pending = 0
        self.add_calls: list[dict[str, int]] = []

    def observe(self, state, now):
        hosts = [HostLoad(f"{self.spec.name}-masters-0", "masters", "master", READY, etcd=True)]
        primary = sorted(n for n, h in state["hosts"].items() if h["pool"] == "workers")
        burst = [r.name for r in self.providers.for_pool("cloud").list_hosts() if r.state != "terminated"]
        for name, pool in [(n, "workers") for n in primary] + [(n, "cloud") for n in sorted(burst)]:
            hosts.append(HostLoad(name, pool, "worker", READY, containers=self.loads.get(name, 0)))
        return Observation(at=now, hosts=tuple(hosts), pending=self.pending)

    def add(self, state, sizes):
        self.add_calls.append(dict(sizes))
        ctx = RunContext(spec=self.spec, store=self.store, state=state, ui=UI(verbosity=-1))
        target = plan(self.spec, state)
        new = replace(target, create=tuple(h for h in target.create if h.pool in sizes), keep=())
        return apply_plan(ctx, new, provider=self.providers)["created"]

    def stop_new_work(self, host):
        pass

    def drained(self, host):
        return True

    def resume_work(self, host):
        pass

    def destroy(self, state, hosts):
        self.providers.destroy_hosts(list(hosts))
        for name in hosts:
            state["hosts"].pop(name, None)


@pytest.fixture
def cluster(ec2_proxy, tmp_path):
    spec = burst_spec()
    store = rendered_store(spec, tmp_path, max_workers=4)
    state = store.read()
    state["hosts"] = {f"{spec.name}-{pool}-{i}": {"pool": pool, "role": role, "index": i, "etcd": pool == "masters"}
                      for pool, role, n in (("masters", "master", 1), ("workers", "worker", 2)) for i in range(n)}
    state["pools"] = {"workers": {"size": 2, "spec_count": 2}, "cloud": {"size": 0, "spec_count": 0}}
    store.write(state)
    return spec, store, BurstCluster(spec, store)


def test_peak_load_bursts_into_the_other_cloud_and_leaves_it_first(cluster, ec2_proxy):
    spec, store, edges = cluster
    clock = iter(float(t) for t in range(1_700_000_000, 1_700_100_000, 60))
    name = spec.name
    # The primary pool is at its max (2 of 2) and full; 20 containers wait.
    edges.loads = {f"{name}-workers-0": 8, f"{name}-workers-1": 8}
    edges.pending = 20
    ec2_proxy.reset_counts()
    out = reconcile(spec, store, edges.observe, edges, clock=lambda: next(clock), sleep=lambda s: None)
    assert out.status == "acted" and out.decision.adds == {"cloud": 3}
    assert edges.add_calls == [{"cloud": 3}]  # one add: one run of the machines phase
    burst = [f"{name}-cloud-{i}" for i in range(3)]
    assert sorted(out.added) == burst
    instances = tagged_instances(spec)
    # one RunInstances per zone the batch spreads over (a call takes one subnet), not one per host
    zones = {i["Placement"]["AvailabilityZone"] for i in instances}
    assert ec2_proxy.calls["RunInstances"] == len(zones) <= 3, "the burst hosts were not created one call per zone"
    assert sorted(t["Value"] for i in instances for t in i["Tags"] if t["Key"] == "provision:pool") == ["cloud"] * 3
    state = store.read()
    assert state["pools"]["cloud"]["size"] == 3 and state["pools"]["workers"]["size"] == 2
    assert all(state["hosts"][h]["provider_id"].startswith("i-") for h in burst)
    # The local provider made nothing: no namespace host of this cluster exists.
    assert edges.providers.primary.list_hosts() == []

    # Load falls: the burst hosts go first, though a primary host is emptier.
    edges.pending = 0
    edges.loads = {f"{name}-workers-0": 0, f"{name}-workers-1": 3, **{h: 1 for h in burst}}
    out = reconcile(spec, store, edges.observe, edges, clock=lambda: next(clock), sleep=lambda s: None)
    assert out.status == "acted" and out.removed and all(h in burst for h in out.removed)
    edges.loads = {f"{name}-workers-0": 0, f"{name}-workers-1": 3}
    for _ in range(4):  # one non-empty host per pass, then the rest
        if not tagged_instances(spec):
            break
        reconcile(spec, store, edges.observe, edges, clock=lambda: next(clock), sleep=lambda s: None)
    assert tagged_instances(spec) == []
    state = store.read()
    assert sorted(n for n in state["hosts"] if "-workers-" in n) == [f"{name}-workers-0", f"{name}-workers-1"]
    assert state["pools"]["cloud"]["size"] == 0
    # Only now does the primary pool shrink.
    out = reconcile(spec, store, edges.observe, edges, clock=lambda: next(clock), sleep=lambda s: None)
    assert out.removed == [f"{name}-workers-0"]


def live_instances(region, cluster):
    import boto3
    client = boto3.client("ec2", region_name=region)
    pages = client.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:provision:cluster", "Values": [cluster]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return sorted(t["Value"] for page in pages for r in page["Reservations"] for i in r["Instances"]
                  for t in i["Tags"] if t["Key"] == "provision:pool")


def test_each_pool_is_made_and_destroyed_by_its_own_provider(ec2_proxy, tmp_path, cli):
    """An AWS cluster in us-east-1 bursting into eu-west-1: the machines phase makes the burst
    pool in its own region, and `down` destroys both (found by tag in each region)."""
    import yaml
    data = {"name": unique_name("b"), "provider": {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI},
            "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1},
            "pools": [{"name": "masters", "role": "master", "count": 1},
                      {"name": "workers", "role": "worker", "count": 1, "min": 1, "max": 1},
                      {"name": "cloud", "role": "worker", "count": 0, "max": 2,
                       "provider": {"name": "aws", "region": "eu-west-1", "ami": MOTO_AMI}}],
            "headroom": {"pool": "workers", "burst_pool": "cloud"}}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    spec = parse_spec(data)
    store = rendered_store(spec, tmp_path, max_workers=2)
    ctx = RunContext(spec=spec, store=store, state=store.read(), ui=UI(verbosity=-1))
    result = apply_plan(ctx, plan(spec, ctx.state, sizes={"masters": 1, "workers": 1, "cloud": 2}))
    assert sorted(result["created"]) == sorted([f"{spec.name}-masters-0", f"{spec.name}-workers-0",
                                                f"{spec.name}-cloud-0", f"{spec.name}-cloud-1"])
    assert live_instances("us-east-1", spec.name) == ["masters", "workers"]
    assert live_instances("eu-west-1", spec.name) == ["cloud", "cloud"]
    listed = PoolProviders(spec, store.workdir).list_hosts()
    assert sorted(r.name for r in listed) == sorted(result["created"])  # each host once, from its own region

    down = cli("down", spec_file, "--yes", "--state-dir", tmp_path / "state")
    assert down.code == 0, down.err
    assert live_instances("us-east-1", spec.name) == [] and live_instances("eu-west-1", spec.name) == []


def test_the_wait_phase_asks_each_pool_its_own_provider(cluster, ec2_proxy):
    """The burst pool's config is over EC2's user-data limit, so its provider serves it from S3
    (moto); once every host has booted, `wait` lists the burst hosts where they live and has
    their provider delete what it served (the cluster's local provider knows nothing of either)."""
    import json
    import os

    import boto3

    from provision import convergence
    from provision.phases import wait
    spec, store, edges = cluster
    big = {"ignition": {"version": "3.3.0"}, "storage": {"files": [{
        "path": "/etc/burst-padding", "mode": 420,
        "contents": {"source": "data:;base64," + __import__("base64").b64encode(os.urandom(30000)).decode()}}]}}
    store.write_blob("rendered/pool-cloud.ign", json.dumps(big, sort_keys=True).encode())
    index = json.loads(store.read_blob("rendered/index.json"))
    for name, entry in index["hosts"].items():
        if entry["pool"] == "cloud":
            entry["config"] = "pool-cloud.ign"
    store.write_blob("rendered/index.json", json.dumps(index).encode())
    state = store.read()
    state["pools"]["cloud"] = {"size": 2, "spec_count": 0}
    assert sorted(edges.add(state, {"cloud": 2})) == [f"{spec.name}-cloud-0", f"{spec.name}-cloud-1"]
    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = edges.providers.for_pool("cloud").config_bucket()
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount"), "the burst config was not served from S3"
    # Every host converged earlier (as state records it): `wait` checks none over SSH.
    hosts = {n: h for n, h in state["hosts"].items() if h.get("address")}
    assert sorted(hosts) == [f"{spec.name}-cloud-0", f"{spec.name}-cloud-1"]
    # provision reaches a burst host where its own cloud says: EC2's public address
    public = {i["InstanceId"]: i["PublicIpAddress"] for i in tagged_instances(spec)}
    assert all(h["ssh_address"] == public[h["provider_id"]] for h in hosts.values())
    wanted = convergence.wanted_records(spec, store, hosts)
    for name, host in hosts.items():
        for phase in convergence.bootstrap_phases(spec, host):
            convergence.record(state, phase, {name: convergence.phase_record(state, wanted[name], phase)})
    store.write(state)
    from provision import pki
    pki.ensure_pki(spec, store, plan(spec, state).desired)  # provision's SSH key among them
    ctx = RunContext(spec=spec, store=store, state=state, ui=UI(verbosity=-1))
    result = wait.run(ctx)
    assert result["hosts"] == sorted(hosts) and result["checked"] == [] and result["logged_in"] == []
    assert not s3.list_objects_v2(Bucket=bucket).get("KeyCount"), "the burst pool's served config is left on S3"


def test_pool_providers_make_each_pool_where_it_lives(cluster, ec2_proxy):
    """What replaces a host (rollout) can hand PoolProviders a mixed list: the burst pool's
    hosts go to EC2 in one RunInstances per zone; nothing of them reaches the local provider."""
    spec, store, edges = cluster
    target = plan(spec, store.read(), sizes={"masters": 1, "workers": 2, "cloud": 2})
    cloud = [h for h in target.create if h.pool == "cloud"]
    configs = {h.name: b'{"ignition": {"version": "3.3.0"}}' for h in cloud}
    ec2_proxy.reset_counts()
    records = edges.providers.create_hosts(cloud, configs)
    assert sorted(r.name for r in records) == [f"{spec.name}-cloud-0", f"{spec.name}-cloud-1"]
    assert all(r.provider_id.startswith("i-") for r in records)
    zones = {i["Placement"]["AvailabilityZone"] for i in tagged_instances(spec)}
    assert ec2_proxy.calls["RunInstances"] == len(zones) <= 2
    assert edges.providers.primary.list_hosts() == []
