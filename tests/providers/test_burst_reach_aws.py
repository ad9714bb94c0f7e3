"""The burst reach verdicts (`providers.burst_reach`) against the security groups the AWS
provider really makes (moto's EC2 server, real boto3): for each need of a burst pool beside an
AWS cluster, what the group's ingress admits from a host outside the cluster's groups and VPC
is the verdict `validate` gives: from 0.0.0.0/0 `open`, from narrower networks only `not
checked`, from groups (or the VPC) only `blocked`."""
from __future__ import annotations

import ipaddress

import pytest

from provision.providers.aws import AWSProvider
from provision.providers.burst_reach import BLOCKED, NOT_CHECKED, OPEN
from provision.providers.pools import pool_providers_needs
from provision.spec import parse_spec

from .conftest import MOTO_AMI, SSH_KEY, unique_name
from .test_aws import group_rules

NEEDS = {"api": ("masters", "tcp", 6443), "etcd": ("etcd", "tcp", 2379), "overlay": ("nodes", "udp", 8472)}


def verdict_on_ec2(rules, vpc: str, kind: str, proto: str, port: int) -> str:
    """What the made group admits from outside the cluster's groups and its VPC."""
    sources = {src for p, low, high, src in rules[kind] if p == proto and low <= port <= high
               and "/" in src and not ipaddress.ip_network(src).subnet_of(ipaddress.ip_network(vpc))}
    return OPEN if "0.0.0.0/0" in sources else NOT_CHECKED if sources else BLOCKED


@pytest.mark.parametrize("options", [{}, {"api_cidrs": ["203.0.113.0/24"]}])
def test_the_verdicts_are_what_the_made_security_groups_admit(ec2_proxy, options):
    spec = parse_spec({
        "name": unique_name("r"), "provider": {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI, **options},
        "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1},
        "pools": [{"name": "masters", "role": "master", "count": 1},
                  {"name": "workers", "role": "worker", "count": 1, "min": 1, "max": 2},
                  {"name": "cloud", "role": "worker", "count": 0, "max": 2,
                   "provider": {"name": "vagrant", "subnet": "192.168.60.0/24"}}],
        "headroom": {"pool": "workers", "burst_pool": "cloud"}})
    provider = AWSProvider(spec)
    provider.prepare()
    try:
        rules = group_rules(provider.network())
        (entry,) = pool_providers_needs(spec)
        statuses = {r["need"]: r["status"] for r in entry["reach"]}
        made = {need: verdict_on_ec2(rules, spec.provider.options.vpc_cidr, *where) for need, where in NEEDS.items()}
        assert made["api"] == (OPEN if not options else NOT_CHECKED)
        assert made["etcd"] == made["overlay"] == BLOCKED
        assert statuses["api"] == made["api"] and statuses["etcd"] == made["etcd"]
        assert statuses["overlay"] == BLOCKED  # the cluster's side already drops it
    finally:
        provider.teardown()


BURST_NETWORKS = ["198.51.100.0/24", "203.0.113.64/26"]
ACROSS = {"api": ("masters", "tcp", 6443), "etcd": ("etcd", "tcp", 2379), "overlay": ("nodes", "udp", 8472),
          "kubelet": ("nodes", "tcp", 10250)}


def bursting_spec(primary: dict, pool_provider: dict, networks) -> object:
    return parse_spec({
        "name": unique_name("n"), "provider": primary, "ssh": {"authorized_keys": [SSH_KEY]}, "etcd": {"count": 1},
        "pools": [{"name": "masters", "role": "master", "count": 1},
                  {"name": "workers", "role": "worker", "count": 1, "min": 1, "max": 2},
                  {"name": "cloud", "role": "worker", "count": 0, "max": 2, "provider": pool_provider}],
        "headroom": {"pool": "workers", "burst_pool": "cloud", **({"burst_networks": networks} if networks else {})}})


def burst_sources(rules, kind: str, proto: str, port: int) -> set[str]:
    return {src for p, low, high, src in rules[kind] if p == proto and low <= port <= high and src in BURST_NETWORKS}


def test_the_cluster_groups_admit_the_burst_networks_and_the_verdicts_say_open(ec2_proxy):
    aws = {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI}
    spec = bursting_spec(aws, {"name": "vagrant", "subnet": "192.168.60.0/24"}, BURST_NETWORKS)
    provider = AWSProvider(spec)
    provider.prepare()
    try:
        rules = group_rules(provider.network())
        for need, (kind, proto, port) in ACROSS.items():
            assert burst_sources(rules, kind, proto, port) == set(BURST_NETWORKS), need
        # nothing else is opened to them: not SSH, not etcd's peer port
        assert {(p, low) for kind in rules for p, low, _, src in rules[kind] if src in BURST_NETWORKS} == \
            {(proto, port) for _, proto, port in ACROSS.values()}
        (entry,) = pool_providers_needs(spec)
        statuses = {r["need"]: r["status"] for r in entry["reach"]}
        assert statuses["api"] == statuses["etcd"] == OPEN
        # the field emptied again: the next prepare revokes exactly those rules
        emptied = bursting_spec(aws, {"name": "vagrant", "subnet": "192.168.60.0/24"}, None)
        emptied = emptied.model_copy(update={"name": spec.name})
        AWSProvider(emptied).prepare()
        after = group_rules(provider.network())
        assert all(not burst_sources(after, kind, proto, port) for kind, proto, port in ACROSS.values())
        assert after["etcd"] == {("tcp", 2379, 2379, "nodes"), ("tcp", 2380, 2380, "etcd")}
    finally:
        provider.teardown()


def test_a_burst_pools_own_groups_admit_the_burst_networks(ec2_proxy):
    """An AWS pool beside a cluster on this machine: its own provider (as PoolProviders builds
    it) opens its kubelets and the overlay to the networks, and the verdicts the README example
    was refused on become open."""
    from provision.providers.pools import pool_spec
    aws = {"name": "aws", "region": "us-east-1", "ami": MOTO_AMI}  # the region tests/providers/test_aws reads
    spec = bursting_spec({"name": "local", "subnet": "10.251.9.0/24"}, aws, BURST_NETWORKS)
    provider = AWSProvider(pool_spec(spec, "cloud"))
    provider.prepare()
    try:
        rules = group_rules(provider.network())
        assert burst_sources(rules, "nodes", "tcp", 10250) == burst_sources(rules, "nodes", "udp", 8472) == \
            set(BURST_NETWORKS)
        (entry,) = pool_providers_needs(spec)
        statuses = {r["need"]: r["status"] for r in entry["reach"]}
        assert BLOCKED not in statuses.values(), entry["reach"]
        assert next(r for r in entry["reach"] if r["need"] == "kubelet")["field"] == "headroom.burst_networks"
    finally:
        provider.teardown()
