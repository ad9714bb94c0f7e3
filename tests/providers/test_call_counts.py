"""Cloud calls per scale-out and per no-op (issue 11), counted by the HTTP proxy in front of moto
(`ec2_proxy` records the Action= of every request boto3 sends): `provision up --until machines`
through the CLI, as a user runs it.

- creating 100 workers makes at most 2 mutating calls per pool and batch (the tags ride in
  RunInstances; no per-host CreateTags);
- a no-op `up` makes no mutating call at all and lists the cluster's hosts with one
  DescribeInstances page (one page per 1,000 hosts).
"""
from __future__ import annotations

import collections
import json

import boto3

from provision.providers.aws import FLATCAR_OWNER, MAX_BATCH

from .test_down import aws_example, artifact_mirror, publish_flatcar_ami  # noqa: F401 (fixture)

READ_PREFIXES = ("Describe", "Get", "List")
# Calls that act on hosts (one set per pool and batch at most); the rest make the shared network.
HOST_CALLS = {"RunInstances", "CreateTags", "ModifyInstanceAttribute", "RegisterTargets", "TerminateInstances"}


def mutating(proxy) -> collections.Counter:
    """Mutating API actions seen by the proxy (S3's REST calls carry no Action and are not EC2's)."""
    return collections.Counter({a: n for a, n in proxy.calls.items() if a and not a.startswith(READ_PREFIXES)})


def test_hundred_workers_cost_two_mutating_calls_per_pool_and_batch_and_a_noop_none(
        ec2_proxy, monkeypatch, tmp_path, cli, example, artifact_mirror):  # noqa: F811
    monkeypatch.setenv("MOTO_ACCOUNT_ID", FLATCAR_OWNER)
    spec_path, data = aws_example(example, tmp_path, artifact_mirror, name="calls")
    data["pools"][1].update(count=100, max=200)
    spec_path.write_text(json.dumps(data))
    publish_flatcar_ami(data["provider"]["region"])
    state_dir = tmp_path / "state"
    ec2_proxy.reset_counts()

    first = cli("up", spec_path, "--yes", "--until", "machines", "--state-dir", state_dir, "-o", "json")
    assert first.code == 0, first.err
    assert len(json.loads(first.out)["results"]["machines"]["created"]) == 103
    calls = mutating(ec2_proxy)
    # a batch is the hosts of a pool sharing one config and one zone (a RunInstances call takes
    # one subnet): each master has its own config (its name and certificates), a worker pool one
    # batch per zone it spreads over (the region's first three) and per MAX_BATCH hosts
    zones = 3
    pools_and_batches = sum(p["count"] if p["role"] == "master" else zones * -(-p["count"] // (MAX_BATCH * zones))
                            for p in data["pools"])
    assert calls["RunInstances"] == pools_and_batches == 6
    assert calls["CreateTags"] == 0
    host_calls = sum(n for action, n in calls.items() if action in HOST_CALLS)
    assert host_calls <= 2 * pools_and_batches, calls
    # everything else made the cluster's shared resources once, whatever the pool sizes
    assert all(n <= 4 for action, n in calls.items() if action not in HOST_CALLS), calls
    # per pool: one RunInstances (one reservation) per zone its hosts spread over, each host in
    # its zone slot: 100 workers over 3 zones are 3 calls, each master 1 in a zone of its own
    reservations = boto3.client("ec2", region_name=data["provider"]["region"]).describe_instances(
        Filters=[{"Name": "tag:provision:cluster", "Values": [data["name"]]}])["Reservations"]
    per_pool: dict[str, list[set[str]]] = collections.defaultdict(list)
    for reservation in reservations:
        pool = {t["Key"]: t["Value"] for t in reservation["Instances"][0]["Tags"]}["provision:pool"]
        per_pool[pool].append({i["Placement"]["AvailabilityZone"] for i in reservation["Instances"]})
    workers, masters = data["pools"][1]["name"], data["pools"][0]["name"]
    assert sorted(len(z) for z in per_pool[workers]) == [1, 1, 1], per_pool  # a call takes one zone
    assert len(set().union(*per_pool[workers])) == zones
    assert len(per_pool[masters]) == 3 and len(set().union(*per_pool[masters])) == 3, per_pool

    ec2_proxy.reset_counts()
    again = cli("up", spec_path, "--yes", "--until", "machines", "--state-dir", state_dir, "-o", "json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["results"]["machines"]["created"] == []
    assert mutating(ec2_proxy) == collections.Counter(), ec2_proxy.calls
    assert ec2_proxy.calls["DescribeInstances"] == 1  # 103 hosts: one page (pages hold 1,000)
