"""Failure domains (provision.placement and the plan's fixed addresses): pure, no cloud."""
from __future__ import annotations

import ipaddress
import itertools

import pytest

from provision import placement
from provision.plan import plan
from tests.conftest import run_cli
from tests.helpers_render import write_spec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtK8t8Ezh0Q3c1m1xX1T8kGfQ0c6Ew1w8xvVNNxQ3eA ops@example.com"


def aws_text(extra_provider: str = "", etcd: str = "count: 3", pools: str = "") -> str:
    pools = pools or ("  - {name: masters, role: master, count: 3}\n"
                      "  - {name: workers, role: worker, count: 5}\n")
    return (f"name: zoned\nprovider:\n  name: aws\n  region: eu-west-1\n{extra_provider}"
            f"ssh:\n  authorized_keys: ['{KEY}']\netcd:\n  {etcd}\nfleet:\n  enabled: false\npools:\n{pools}")


def load(tmp_path, text):
    from provision.spec import load_spec
    return load_spec(write_spec(tmp_path, text))


def slots_of(spec, hosts):
    subnets = placement.zone_subnets(spec)
    return {h.name: placement.host_slot(spec, h.name, h.index, h.address) for h in hosts}, subnets


def test_subnet_cidr_is_cut_into_one_subnet_per_zone(tmp_path):
    spec = load(tmp_path, aws_text())
    assert placement.zone_subnets(spec) == ["10.240.0.0/22", "10.240.4.0/22", "10.240.8.0/22"]
    two = load(tmp_path, aws_text("  zones: [eu-west-1a, eu-west-1b]\n"))
    assert placement.zone_subnets(two) == ["10.240.0.0/21", "10.240.8.0/21"]
    one = load(tmp_path, aws_text("  availability_zone: eu-west-1b\n"))
    assert placement.zone_subnets(one) == ["10.240.0.0/20"]  # one zone keeps the whole subnet
    assert placement.slot_zones(3, ["eu-west-1a", "eu-west-1b"]) == ["eu-west-1a", "eu-west-1b", "eu-west-1a"]


@pytest.mark.parametrize("etcd, pools", [
    ("count: 3", "  - {name: masters, role: master, count: 3}\n  - {name: workers, role: worker, count: 4}\n"),
    ("count: 3", "  - {name: masters, role: master, count: 5}\n"),
    ("count: 3\n  placement: dedicated", "  - {name: masters, role: master, count: 2}\n"
                                          "  - {name: etcd, role: etcd, count: 3}\n"),
    ("count: 3", "  - {name: a, role: master, count: 1}\n  - {name: b, role: master, count: 2}\n"),
    ("count: 5", "  - {name: masters, role: master, count: 5}\n"),
])
def test_losing_any_one_zone_loses_at_most_one_etcd_member_of_three(tmp_path, etcd, pools):
    spec = load(tmp_path, aws_text(etcd=etcd, pools=pools))
    hosts = plan(spec, {}).desired
    slots, subnets = slots_of(spec, hosts)
    members = [h for h in hosts if h.etcd]
    masters = [h for h in hosts if h.role == "master"]
    for h in members + masters:  # every fixed address lies in its zone's subnet
        assert ipaddress.ip_address(h.address) in ipaddress.ip_network(subnets[slots[h.name]])
    for lost in range(len(subnets)):
        down = sum(1 for h in members if slots[h.name] == lost)
        assert down <= -(-len(members) // len(subnets)), (lost, slots)
        assert len(members) - down > len(members) // 2, "a zone's loss must leave etcd a quorum"
    # masters spread as evenly as they can be
    per_zone = [sum(1 for h in masters if slots[h.name] == k) for k in range(len(subnets))]
    assert max(per_zone) - min(per_zone) <= 1


def test_worker_pools_span_the_zones_and_kept_hosts_keep_their_zone(tmp_path):
    spec = load(tmp_path, aws_text())
    first = plan(spec, {})
    slots, _ = slots_of(spec, first.desired)
    workers = [h for h in first.desired if h.role == "worker"]
    assert [slots[h.name] for h in workers] == [0, 1, 2, 0, 1]
    # recorded hosts keep their addresses (and so their zones); a replacement master takes the
    # zone the others leave free
    recorded = {h.name: {"pool": h.pool, "role": h.role, "index": h.index, "address": h.address}
                for h in first.desired if h.name != "zoned-masters-1"}
    again = plan(spec, {"hosts": recorded})
    new_slots, _ = slots_of(spec, again.desired)
    for name, entry in recorded.items():
        assert new_slots[name] == slots[name]
    [replacement] = [h for h in again.create if h.role == "master"]
    assert new_slots[replacement.name] == slots["zoned-masters-1"]
    # the same spec and state give the same plan
    assert plan(spec, {"hosts": recorded}).to_json() == again.to_json()


def test_spread_fills_the_least_used_zone_first():
    assert placement.spread(3, ["a", "b", "c", "d"], {}) == {"a": 0, "b": 1, "c": 2, "d": 0}
    assert placement.spread(3, ["a", "b", "c"], {"a": 1}) == {"a": 1, "b": 0, "c": 2}
    for members in itertools.permutations(["x", "y", "z"]):
        assert sorted(placement.spread(3, members, {}).values()) == [0, 1, 2]


@pytest.mark.parametrize("provider, field, words", [
    ("  zones: [eu-west-1a, eu-west-1a]\n", "provider.zones", "twice"),
    ("  zones: [us-east-1a]\n", "provider.zones", "not a zone of provider.region eu-west-1"),
    ("  zones: [eu-west-1a]\n  availability_zone: eu-west-1a\n", "provider.zones", "not both"),
    ("  zones: ['eu-west-1a;reboot']\n", "provider.zones", "availability zone"),
    ("  subnet_cidr: 10.240.0.0/26\n", "provider.subnet_cidr", "too small for 3 zones"),
])
def test_bad_zones_are_refused_at_validate_naming_the_field(tmp_path, provider, field, words):
    result = run_cli("validate", write_spec(tmp_path, aws_text(provider)))
    assert result.code == 2 and field in result.err and words in result.err, result.err
    assert "Traceback" not in result.err
