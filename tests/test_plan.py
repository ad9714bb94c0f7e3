"""Planning: stable names, create/keep/destroy against state, recorded sizes, addresses."""
from __future__ import annotations

import json

from provision.plan import plan, pool_sizes
from provision.spec import load_spec, parse_spec

from tests.conftest import EXAMPLES
from tests.spec.test_validation import BASE, mutate


def record(p) -> dict:
    """State as the machines phase would leave it after applying plan `p`."""
    return {"hosts": {h.name: {"pool": h.pool, "role": h.role, "index": h.index, "address": h.address}
                      for h in p.desired}}


def test_names_and_etcd_placement():
    p = plan(parse_spec(BASE), {})
    assert [h.name for h in p.create] == ["demo-masters-0", "demo-masters-1", "demo-masters-2",
                                          "demo-workers-0", "demo-workers-1"]
    assert [h.name for h in p.create if h.etcd] == ["demo-masters-0", "demo-masters-1", "demo-masters-2"]
    assert not p.keep and not p.destroy


def test_same_spec_same_plan_every_time():
    spec = load_spec(EXAMPLES / "local.yaml")
    first = json.dumps(plan(spec, {}).to_json(), sort_keys=True)
    for _ in range(5):
        assert json.dumps(plan(load_spec(EXAMPLES / "local.yaml"), {}).to_json(), sort_keys=True) == first


def test_applied_plan_keeps_everything():
    spec = parse_spec(BASE)
    state = record(plan(spec, {}))
    again = plan(spec, state)
    assert not again.create and not again.destroy and len(again.keep) == 5
    assert not again.changes


def test_growing_keeps_names_and_fills_gaps():
    spec = parse_spec(BASE)
    state = record(plan(spec, {}))
    del state["hosts"]["demo-workers-0"]  # e.g. removed as the emptiest host
    bigger = plan(parse_spec(mutate({"pools[1].count": 3})), state)
    assert [h.name for h in bigger.create] == ["demo-workers-0", "demo-workers-2"]
    assert "demo-workers-1" in [h.name for h in bigger.keep]


def test_shrinking_destroys_highest_indices_and_unknown_pools():
    spec = parse_spec(BASE)
    state = record(plan(parse_spec(mutate({"pools[1].count": 4, "pools[1].max": 5})), {}))
    state["hosts"]["demo-old-0"] = {"pool": "old", "role": "worker", "index": 0}
    smaller = plan(spec, state)
    assert smaller.destroy == ("demo-old-0", "demo-workers-2", "demo-workers-3")
    assert not smaller.create


def test_addresses_are_stable_and_recorded_ones_stay():
    spec = parse_spec(BASE)
    first = plan(spec, {})
    addresses = {h.name: h.address for h in first.desired}
    assert addresses["demo-masters-0"] == "10.250.0.10"
    assert len(set(addresses.values())) == 5
    state = record(first)
    state["hosts"]["demo-workers-0"]["address"] = "10.250.0.99"
    again = plan(spec, state)
    assert {h.name: h.address for h in again.desired}["demo-workers-0"] == "10.250.0.99"
    grown = plan(parse_spec(mutate({"pools[1].count": 3})), state)
    new = grown.create[0]
    assert new.address not in {h.address for h in grown.keep}


def test_cloud_providers_fix_addresses_of_etcd_hosts_only():
    spec = load_spec(EXAMPLES / "aws.yaml")
    p = plan(spec, {})
    assert all(h.address for h in p.create if h.etcd)
    assert not any(h.address for h in p.create if not h.etcd)


def test_headroom_recorded_size_stands_until_count_changes():
    spec = parse_spec(BASE)  # workers: count 2, min 1, max 5
    state = {"pools": {"workers": {"size": 4, "spec_count": 2}}}
    assert pool_sizes(spec, state)["workers"] == 4
    state = {"pools": {"workers": {"size": 9, "spec_count": 2}}}
    assert pool_sizes(spec, state)["workers"] == 5  # clamped to max
    resized = parse_spec(mutate({"pools[1].count": 3}))
    assert pool_sizes(resized, {"pools": {"workers": {"size": 4, "spec_count": 2}}})["workers"] == 3


def test_dedicated_etcd_hosts_carry_etcd():
    spec = load_spec(EXAMPLES / "openstack.yaml")
    p = plan(spec, {})
    assert sorted(h.name for h in p.create if h.etcd) == ["lab-etcd-0", "lab-etcd-1", "lab-etcd-2"]
