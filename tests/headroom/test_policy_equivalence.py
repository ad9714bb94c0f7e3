"""P5 (issue 11) reworked the per-host passes of a headroom decision for speed; the decisions
must not change. Thousands of random clusters (ties on load, empty hosts, silent, booting,
clamped and burst-pool hosts, masters, undrainable and low timers) are decided twice: with the
reworked passes and with the straightforward ones they replaced (policy_reference), and the
whole decision records, memory included, must be equal. The simulator's runs are compared
the same way."""
from __future__ import annotations

import random

import pytest

from provision.headroom import policy
from provision.headroom.policy import (BOOTING, CLAMPED, READY, UNKNOWN, UNREADY, HostLoad, Memory, Observation,
                                       Sample, Settings, decide, remember)
from provision.spec.model import Reserve

from . import policy_reference as reference

NOW = 1_000_000.0
POLICY_SETS = [("containers",), ("utilization",), ("predictive",), ("containers", "utilization", "predictive"),
               ("utilization", "containers")]


def reference_decide(monkeypatch: pytest.MonkeyPatch, *args):
    with monkeypatch.context() as m:
        m.setattr(policy, "pool_view", reference.pool_view)
        m.setattr(policy, "removals", reference.removals)
        m.setattr(policy, "utilization_policy", reference.utilization_policy)
        m.setattr(policy, "low_hosts", reference.low_hosts)
        return decide(*args)


def random_case(rnd: random.Random):
    burst = rnd.random() < 0.3
    n = rnd.choice([0, 1, 2, 5, 20, 60, 200])
    pools = ["workers", "burst"] if burst else ["workers"]
    hosts = [HostLoad(f"m-{i}", "masters", "master", rnd.choice([READY, READY, UNKNOWN]), etcd=True)
             for i in range(rnd.choice([0, 1, 3]))]
    names = rnd.sample(range(10 * n + 10), n)  # names out of order, some sharing prefixes
    loads = [0.0, 0.25, 0.5, 0.1, 0.3]  # few values: ties on (containers, load) are common
    for i in names:
        pool = rnd.choice(pools + ["other"] if rnd.random() < 0.1 else pools)
        status = rnd.choices([READY, BOOTING, UNKNOWN, UNREADY], [20, 1, 1, 1])[0]
        tie = rnd.random() < 0.5
        hosts.append(HostLoad(
            f"w-{i}", pool, rnd.choice(["worker", "worker", "worker", "etcd"]), status,
            etcd=rnd.random() < 0.05, containers=rnd.choice([0, 0, 1, 2, 5, 8, 9]),
            cpu=rnd.choice(loads) if tie else rnd.random(), memory=rnd.choice(loads) if tie else rnd.random(),
            flags=(CLAMPED,) if rnd.random() < 0.05 else ()))
    rnd.shuffle(hosts)
    s = Settings(pool="workers", min_count=rnd.choice([0, 1, 3]), max_count=rnd.choice([5, 50, 400]),
                 policies=rnd.choice(POLICY_SETS), containers_per_host=rnd.choice([4, 8]),
                 reserve=rnd.choice([Reserve(count=1), Reserve(count=0), Reserve(percent=10.0)]),
                 scale_up_cooldown=rnd.choice([0.0, 30.0]), scale_down_cooldown=rnd.choice([0.0, 60.0, 600.0]),
                 scale_down_utilization=rnd.choice([0.3, 0.6]),
                 burst_pool="burst" if burst else None, primary_max=rnd.choice([2, 10]) if burst else None)
    worker_names = [h.name for h in hosts if h.role == "worker"]
    memory = Memory(
        last_change_at=rnd.choice([None, NOW - 5, NOW - 5000]), last_change=rnd.choice([None, "add", "remove"]),
        low_since={name: NOW - rnd.choice([0, 30, 700, 5000]) for name in worker_names if rnd.random() < 0.7},
        history=tuple(Sample(NOW - 60 * k, rnd.uniform(0, 8 * n + 1), rnd.uniform(0, n), rnd.uniform(0, n))
                      for k in range(rnd.choice([0, 2, 6]), 0, -1)),
        wanted=tuple((NOW - 60 * k, rnd.randint(0, n + 2)) for k in range(rnd.choice([0, 3, 12]), 0, -1)),
        undrainable={name: NOW - rnd.choice([10, 5000]) for name in worker_names if rnd.random() < 0.05},
        added={h.name: NOW - rnd.choice([10, 5000]) for h in hosts if h.status != READY and rnd.random() < 0.5})
    obs = Observation(at=NOW, hosts=tuple(hosts), pending=rnd.choice([0, 0, 3]),
                      pending_cpu=rnd.choice([0.0, 0.5]), pending_memory=0.0)
    return s, obs, memory


def test_reworked_passes_decide_as_the_reference_on_random_clusters(monkeypatch):
    rnd = random.Random(11)
    actions = set()
    for _ in range(3000):
        s, obs, memory = random_case(rnd)
        new = decide(s, obs, memory)
        old = reference_decide(monkeypatch, s, obs, memory)
        assert new.record() == old.record(), (s, obs, memory)
        assert new.memory == old.memory
        assert remember({}, new) == remember({}, old)
        actions.add(new.action)
    # the cases reach every kind of decision, removals above all
    assert {"add", "remove", "none", "wait", "halt", "replace"} <= actions


def test_removal_order_matches_the_reference_with_ties_and_bursts():
    rnd = random.Random(5)
    for _ in range(2000):
        s, obs, memory = random_case(rnd)
        pool = [h for h in obs.hosts if h.pool in s.pools]
        args = (s, pool, memory.low_since, memory.undrainable, NOW)
        assert policy.removal_candidates(*args) == reference.removal_candidates(*args)
        for count in (0, 1, 3, 1000):
            assert policy.removals(*args, count) == reference.removals(*args, count)


def test_observation_json_matches_the_reference_and_reads_back():
    rnd = random.Random(3)
    for _ in range(200):
        _, obs, _ = random_case(rnd)
        data = policy.observation_json(obs)
        assert data == reference.observation_json(obs)
        assert policy.hosts_of_json(data["hosts"]) == obs.hosts


def test_simulator_runs_score_as_with_the_reference(monkeypatch):
    from provision.headroom.simulate import run_all
    new = [score.to_json() for score in run_all(noises=(0.1,))]
    with monkeypatch.context() as m:
        m.setattr(policy, "pool_view", reference.pool_view)
        m.setattr(policy, "removals", reference.removals)
        m.setattr(policy, "utilization_policy", reference.utilization_policy)
        m.setattr(policy, "low_hosts", reference.low_hosts)
        old = [score.to_json() for score in run_all(noises=(0.1,))]
    assert new == old and len(new) > 10


def test_utilization_policy_and_removals_from_the_pool_view_match_the_reference():
    """What decide hands over (the pool view's ready hosts and sums, the low hosts) gives the
    same need, timers and removals as the policy's own passes over the pool did."""
    from provision.headroom.policy_rules import low_hosts
    rnd = random.Random(17)
    for _ in range(1000):
        s, obs, memory = random_case(rnd)
        view = policy.pool_view(s, obs)
        args = (s, view.pool, obs.pending_cpu, obs.pending_memory, memory.low_since, NOW)
        below = low_hosts(s, view.ready)
        given = policy.utilization_policy(*args, ready=view.ready, load=(view.cpu, view.memory), below=below)
        assert given == reference.utilization_policy(*args) == policy.utilization_policy(*args)
        timers = given[1]
        # only the utilization policy limits removals to its low hosts
        candidates = below if "utilization" in s.policies else view.ready
        for count in (1, 3, 1000):
            assert policy.removals(s, candidates, timers, memory.undrainable, NOW, count) == \
                reference.removals(s, view.ready, timers, memory.undrainable, NOW, count)


def test_a_record_shares_no_list_with_its_observation():
    """The pool view and the record read the observation's host columns once; the record gets
    copies, so a record changed afterwards changes neither the next record nor the view."""
    rnd = random.Random(23)
    for _ in range(50):
        s, obs, _ = random_case(rnd)
        if not obs.hosts:
            continue
        first = policy.observation_json(obs)
        view = policy.pool_view(s, obs)
        for column in first["hosts"].values():
            if isinstance(column, list):
                column.reverse()
                column.append("changed")
        assert policy.observation_json(obs) == reference.observation_json(obs)
        assert policy.pool_view(s, obs) == view


def test_observed_keeps_the_columns_its_hosts_would_give():
    """`observed` makes the hosts from the columns observe reads and keeps those columns: they
    are what `Observation.columns` reads off the same hosts, and the decision is the same as
    on an observation of those hosts alone."""
    from dataclasses import replace

    from provision.headroom.policy_model import observed
    rnd = random.Random(29)
    for _ in range(300):
        s, obs, memory = random_case(rnd)
        made = observed(obs.at, obs.columns, obs.pending, obs.pending_cpu, obs.pending_memory, obs.source)
        assert made == obs and made.hosts == obs.hosts
        plain = replace(made)  # no columns kept: read off its hosts
        assert made.columns == plain.columns
        assert decide(s, made, memory).record() == decide(s, plain, memory).record()
    with pytest.raises(ValueError, match="differ in length"):
        observed(NOW, {**obs.columns, "cpu": obs.columns["cpu"] + [0.5]})


def test_observe_etcd_reads_hosts_and_columns_alike():
    """observe builds the columns as it reads the load reports; they match its hosts."""
    import json

    from provision.headroom.observe import InventoryHost, observe_etcd
    from provision.headroom.policy_model import HOST_COLUMNS
    inventory = [InventoryHost("m-0", "masters", "master", etcd=True), InventoryHost("w-0", "workers", "worker"),
                 InventoryHost("w-1", "workers", "worker", pending=True), InventoryHost("w-2", "workers", "worker")]
    loads = {"m-0": json.dumps({"containers": 1, "cpu": 0.2, "memory": 0.3, "at": NOW}),
             "w-0": json.dumps({"containers": 4, "cpu": 1.5, "memory": 0.5, "at": NOW}), "w-2": "not json"}
    obs = observe_etcd(inventory, loads, NOW)
    assert [(h.name, h.status, h.containers, h.cpu, h.flags) for h in obs.hosts] == [
        ("m-0", READY, 1, 0.2, ()), ("w-0", READY, 4, 1.0, (CLAMPED,)), ("w-1", BOOTING, 0, 0.0, ()),
        ("w-2", UNKNOWN, 0, 0.0, ())]
    read = {key: [getattr(h, key) for h in obs.hosts] for key in HOST_COLUMNS + ("flags",)}
    assert obs.columns == read
