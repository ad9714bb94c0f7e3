"""The pure headroom policies and their combination."""
from __future__ import annotations

from dataclasses import replace

import pytest

from provision.headroom.policy import (READY, UNKNOWN, UNREADY, HostLoad, Memory, Observation, Sample, Settings,
                                       containers_hosts_needed, containers_policy, decide, memory_of, predict,
                                       predictive_policy, remember, summarize, utilization_policy)
from provision.spec.model import Reserve

NOW = 1_000_000.0


def settings(**kw) -> Settings:
    base = dict(pool="workers", min_count=1, max_count=10, policies=("containers",), containers_per_host=8,
                reserve=Reserve(count=2), scale_up_cooldown=30.0, scale_down_cooldown=600.0)
    base.update(kw)
    return Settings(**base)


def masters(n=3, status=READY):
    return [HostLoad(f"c-masters-{i}", "masters", "master", status, etcd=True) for i in range(n)]


def workers(*containers, cpu=None, memory=None, status=READY):
    return [HostLoad(f"c-workers-{i}", "workers", "worker", status, containers=c,
                     cpu=(c / 10 if cpu is None else cpu), memory=(c / 10 if memory is None else memory))
            for i, c in enumerate(containers)]


def observe(hosts, **kw):
    return Observation(at=kw.pop("at", NOW), hosts=tuple(hosts), **kw)


# ---- containers (Clocker) -------------------------------------------------------------------

@pytest.mark.parametrize("hosts, used, want, state", [
    (2, 14, 2, "OK"),      # 2 free == reserve 2: not HOT
    (2, 15, 3, "HOT"),     # 1 free < 2
    (2, 30, 4, "HOT"),     # needs ceil(32/8)=4
    (3, 14, 3, "OK"),      # 10 free: not more than reserve + 8 = 10
    (3, 13, 2, "COLD"),    # 11 free > 10: one host's worth can go
    (5, 0, 1, "COLD"),     # empty pool shrinks to one host (reserve 2 still fits)
])
def test_containers_policy_matches_clocker(hosts, used, want, state):
    need = containers_policy(settings(), hosts, used)
    assert need.hosts == want
    assert need.reason.startswith(state)


def test_containers_percentage_reserve_is_ceil_of_percent_of_possible():
    s = settings(reserve=Reserve(percent=25.0))
    # 4 hosts: 32 slots, reserve ceil(8) = 8; 25 used -> 7 free: HOT.
    assert containers_policy(s, 4, 25).reason.startswith("HOT")
    need = containers_policy(s, 4, 25)
    # 5 hosts: 40 slots, reserve 10, 15 free: keeps the reserve.
    assert need.hosts == 5
    assert containers_hosts_needed(25, 8, Reserve(percent=25.0), 10) == 5


def test_containers_need_beyond_limit_says_so():
    assert containers_hosts_needed(1000, 8, Reserve(count=0), 10) == 11


# ---- utilization (cluster-autoscaler) -------------------------------------------------------

def test_utilization_adds_enough_to_bring_mean_under_threshold():
    s = settings(policies=("utilization",), cpu_threshold=0.7)
    pool = workers(9, 9, 9, cpu=0.9, memory=0.3)
    need, _ = utilization_policy(s, pool, 0.0, 0.0, {}, NOW)
    assert need.hosts == 4  # 2.7 / 0.7 = 3.86
    need, _ = utilization_policy(s, pool, 1.5, 0.0, {}, NOW)  # pending pods add load
    assert need.hosts == 6


def test_utilization_memory_alone_triggers():
    s = settings(policies=("utilization",), memory_threshold=0.8)
    need, _ = utilization_policy(s, workers(1, 1, cpu=0.1, memory=0.95), 0.0, 0.0, {}, NOW)
    assert need.hosts == 3


def test_utilization_wants_fewer_at_once_and_decide_removes_after_the_window():
    s = settings(policies=("utilization",), scale_down_cooldown=600.0, scale_down_utilization=0.5)
    pool = workers(1, 1, 1, cpu=0.1, memory=0.1)
    need, low = utilization_policy(s, pool, 0, 0, {}, NOW)
    assert need.hosts == 1 and set(low) == {h.name for h in pool} and set(low.values()) == {NOW}
    d = decide(s, observe(masters() + pool, at=NOW), Memory())
    assert d.action == "wait"
    d = decide(s, observe(masters() + pool, at=NOW + 599), d.memory)
    assert d.action == "wait"
    d = decide(s, observe(masters() + pool, at=NOW + 600), d.memory)
    assert d.action == "remove" and len(d.remove) == 1  # non-empty hosts one at a time


def test_utilization_host_going_busy_restarts_its_timer():
    s = settings(policies=("utilization",))
    low = {"c-workers-0": NOW - 9999}
    _, new_low = utilization_policy(s, workers(1, cpu=0.6, memory=0.1), 0, 0, low, NOW)
    assert new_low == {}


def test_utilization_keeps_hosts_the_others_could_not_carry():
    s = settings(policies=("utilization",), cpu_threshold=0.7)
    pool = workers(1, 1, cpu=0.45, memory=0.1)  # 0.9 total cannot fit on one host at 0.7
    low = {h.name: NOW - 10_000 for h in pool}
    need, _ = utilization_policy(s, pool, 0, 0, low, NOW)
    assert need.hosts == 2


# ---- predictive (Stratos) -------------------------------------------------------------------

def history(values, step=60.0):
    return [Sample(NOW + i * step, float(v), v / 10, v / 20) for i, v in enumerate(values)]


def test_predict_needs_history():
    assert predict(history([1, 2]), "containers") is None


def test_predict_flat_is_the_average():
    assert predict(history([10, 10, 10, 10]), "containers") == pytest.approx(10)


def test_predict_extrapolates_a_ramp_ahead_of_the_newest_sample():
    values = [10, 20, 30, 40, 50]
    got = predict(history(values), "containers", ahead=120)
    assert got == pytest.approx(70, rel=0.01)  # 10 per minute, two minutes past 50


def test_predict_accelerating_load_predicts_more_than_linear():
    quad = [v * v for v in range(1, 7)]
    linear_guess = quad[-1] + (quad[-1] - quad[-2]) * 3
    assert predict(history(quad), "containers", ahead=180) > linear_guess * 0.95


def test_predict_never_negative():
    assert 0.0 <= predict(history([100, 60, 20, 1]), "containers") < 2
    assert predict(history([100, 75, 50, 25, 0]), "containers") == 0.0


def test_predictive_policy_meets_a_ramp_before_the_reactive_ones():
    s = settings(policies=("predictive",))
    hist = history([10, 14, 18, 22, 26])  # 26 used on 4 hosts: 6 free, reserve 2 -> reactive OK
    assert containers_policy(s, 4, 26).hosts == 4
    need = predictive_policy(s, hist, 4)
    assert need.hosts >= 5 and "predicted" in need.reason


# ---- combination ----------------------------------------------------------------------------

def test_largest_need_wins_and_is_recorded():
    s = settings(policies=("containers", "utilization"))
    obs = observe(masters() + workers(7, 7, cpu=0.95, memory=0.2))
    d = decide(s, obs, Memory())
    by = {n.policy: n.hosts for n in d.needs}
    assert by["utilization"] == 3 and by["containers"] == 2 and d.desired == 3
    obs = observe(masters() + workers(6, 6, cpu=0.99, memory=0.99))
    d = decide(s, obs, Memory())
    by = {n.policy: n.hosts for n in d.needs}
    assert by["containers"] == 2 and by["utilization"] == 3 and d.desired == 3 and d.action == "add"


def test_add_is_one_batch_up_to_max():
    s = settings(max_count=5)
    d = decide(s, observe(masters() + workers(8, 8), pending=100), Memory())
    assert d.action == "add" and d.add == 3 and d.desired == 5
    assert "bounded to 1..5" in d.reason


def test_min_holds_even_when_empty():
    s = settings(min_count=3)
    d = decide(s, observe(masters() + workers(0, 0)), Memory())
    assert d.action == "add" and d.desired == 3


def test_never_removes_masters_or_etcd_members():
    s = settings(min_count=0, scale_down_cooldown=0.0)
    pool = [HostLoad("c-workers-0", "workers", "worker", containers=0, etcd=True),
            HostLoad("c-workers-1", "workers", "master", containers=0),
            HostLoad("c-workers-2", "workers", "worker", containers=0)]
    d = decide(s, observe(masters() + pool), Memory())
    assert d.action == "remove" and d.remove == ("c-workers-2",)


def test_removes_emptiest_non_empty_one_at_a_time():
    s = settings(min_count=1, scale_down_cooldown=0.0)
    d = decide(s, observe(masters() + workers(3, 1, 2, 4)), Memory())
    assert d.desired < 4 and d.action == "remove"
    assert d.remove == ("c-workers-1",)


def test_empty_hosts_go_together():
    s = settings(min_count=1, scale_down_cooldown=0.0)
    d = decide(s, observe(masters() + workers(0, 0, 0, 1)), Memory())
    assert d.action == "remove" and set(d.remove) == {"c-workers-0", "c-workers-1", "c-workers-2"}


def test_unknown_hosts_are_never_idle_nor_removed():
    s = settings(min_count=1, scale_down_cooldown=0.0)
    hosts = masters() + [HostLoad("c-workers-0", "workers", "worker", UNKNOWN)] + workers(0)[0:0] + \
        [HostLoad("c-workers-1", "workers", "worker", READY, containers=3),
         HostLoad("c-workers-2", "workers", "worker", READY, containers=0),
         HostLoad("c-workers-3", "workers", "worker", READY, containers=0)]
    d = decide(s, observe(hosts), Memory())
    assert "c-workers-0" not in d.remove
    assert d.inputs["unknown"] == ["c-workers-0"]


@pytest.mark.parametrize("total, bad, halted", [
    (8, 3, False), (8, 4, True),            # more than 3 and more than 45%
    (5, 3, False), (9, 4, False),           # 60% but only 3; 4 but only 44%
    (2, 1, False), (20, 4, False), (6, 6, True),
])
def test_halts_when_too_many_hosts_are_unknown_or_unready(total, bad, halted):
    hosts = [HostLoad(f"c-workers-{i}", "workers", "worker", UNKNOWN if i < bad else READY, containers=30)
             for i in range(total)]
    hosts[0] = HostLoad(hosts[0].name, "workers", "worker", UNREADY if bad else READY)
    d = decide(settings(max_count=30), observe(hosts, pending=50), Memory())
    assert (d.action == "halt") is halted
    if halted:
        assert f"{bad} of {total} hosts unknown or unready" in d.reason and "more than 3 and more" in d.reason


def test_scale_up_cooldown_after_a_change():
    s = settings(scale_up_cooldown=30.0)
    mem = Memory(last_change_at=NOW - 10, last_change="add")
    d = decide(s, observe(masters() + workers(8, 8)), mem)
    assert d.action == "wait" and "scale-up cooldown" in d.reason
    d = decide(s, observe(masters() + workers(8, 8), at=NOW + 20), mem)
    assert d.action == "add"


def test_scale_down_shrinks_to_the_largest_size_wanted_in_the_window():
    s = settings(scale_down_cooldown=600.0)
    obs = lambda t: observe(masters() + workers(1, 0, 0), at=t)  # noqa: E731
    d1 = decide(s, obs(NOW), Memory())
    assert d1.action == "wait" and d1.memory.wanted == ((NOW, 1),)
    d2 = decide(s, obs(NOW + 300), d1.memory)
    assert d2.action == "wait"
    # load returns for one run: 3 hosts are wanted inside the window
    d3 = decide(s, observe(masters() + workers(8, 8, 0), at=NOW + 400), d2.memory)
    d4 = decide(s, obs(NOW + 700), d3.memory)
    assert d4.action == "wait" and "largest size wanted" in d4.reason
    d5 = decide(s, obs(NOW + 1299), d4.memory)  # 3 was wanted until the sample at 700
    assert d5.action == "wait"
    d5 = decide(s, obs(NOW + 1300), d5.memory)
    assert d5.action == "remove" and d5.memory.last_change == "remove"


def test_scale_down_cooldown_after_an_addition():
    s = settings(scale_down_cooldown=600.0)
    mem = Memory(last_change_at=NOW - 100, last_change="add", wanted=((NOW - 700, 1),))
    d = decide(s, observe(masters() + workers(0, 0, 0)), mem)
    assert d.action == "wait" and "scale-down cooldown" in d.reason
    # after a removal, the next one follows at once (back to back)
    d = decide(s, observe(masters() + workers(0, 0, 0)), replace(mem, last_change="remove"))
    assert d.action == "remove"


def test_steady_is_none_and_deterministic():
    s = settings(policies=("containers", "utilization", "predictive"))
    obs = observe(masters() + workers(5, 5, 5))
    a, b = decide(s, obs, Memory()), decide(s, obs, Memory())
    assert a == b and a.action == "none"


def test_decision_record_and_memory_round_trip():
    s = settings(policies=("containers", "predictive"))
    d = decide(s, observe(masters() + workers(8, 8)), Memory())
    state = remember({}, d)
    assert state["decisions"][-1]["action"] == "add"
    assert {p["policy"] for p in state["decisions"][-1]["policies"]} == {"containers", "predictive"}
    assert state["decisions"][-1]["inputs"]["containers"] == 16
    mem = memory_of(state)
    assert mem == d.memory
    for _ in range(60):
        state = remember(state, d)
    assert len(state["decisions"]) == 50
    lines = summarize(state["decisions"][-1:])
    assert "add: 2 -> 3" in lines[0] and "containers: 3 hosts" in lines[1]


def test_history_is_bounded_to_the_window():
    s = settings(policies=("predictive",))
    mem = Memory()
    for i in range(150):
        mem = decide(s, observe(masters() + workers(4, 4, 4), at=NOW + 60 * i), mem).memory
    # the slow trend is fitted over two hours (the noise over 20 minutes, the trend over 5):
    # two hours kept, not 150 minutes; the newest 20 minutes raw (21 samples a minute apart),
    # older ones as five-minute means (before: all 121 raw)
    newest = mem.history[-1].at
    assert newest - mem.history[0].at <= 7200
    assert len([h for h in mem.history if newest - h.at <= 1200]) == 21
    assert len(mem.history) <= 21 + 4 + 25
