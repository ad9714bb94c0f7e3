"""Trace simulation: what each policy costs and how it tracks demand."""
from __future__ import annotations

from dataclasses import replace

import pytest

from provision.headroom import simulate as sim


@pytest.fixture(scope="module")
def scores():
    return {(s.trace, s.policy): s for s in sim.run_all()}


def test_every_trace_and_policy_is_scored(scores):
    assert {t for t, _ in scores} == {"steady", "ramp", "spike", "oscillation", "diurnal"}
    assert {p for _, p in scores} == {"containers", "utilization", "predictive", "containers+utilization+predictive"}


def test_predictive_is_below_demand_less_often_on_the_ramp(scores):
    predictive = scores[("ramp", "predictive")].minutes_below_demand
    for other in ("containers", "utilization"):
        assert predictive < scores[("ramp", other)].minutes_below_demand, other


@pytest.mark.parametrize("policy", ["containers", "utilization", "predictive", "containers+utilization+predictive"])
def test_no_flapping_on_oscillation(scores, policy):
    score = scores[("oscillation", policy)]
    assert score.flaps == 0
    assert score.removes == 0  # a load that keeps coming back never makes a host removable
    assert score.actions <= 4


@pytest.mark.parametrize("policy", ["containers", "utilization", "predictive"])
def test_steady_load_takes_no_action(scores, policy):
    assert scores[("steady", policy)].actions == 0


def test_diurnal_day_grows_and_shrinks_without_flapping(scores):
    for policy in ("containers", "utilization", "predictive"):
        s = scores[("diurnal", policy)]
        assert s.adds > 0 and s.removes > 0 and s.flaps == 0, policy
        assert s.minutes_below_demand < 30, policy


def test_containers_policy_is_leanest_on_the_diurnal_day(scores):
    lean = scores[("diurnal", "containers")].idle_host_hours
    assert lean < scores[("diurnal", "utilization")].idle_host_hours


def test_simulation_is_deterministic():
    a = sim.simulate("ramp", sim.ramp, 90, sim.default_settings(["predictive"]))
    b = sim.simulate("ramp", sim.ramp, 90, sim.default_settings(["predictive"]))
    assert a.to_json() == b.to_json() and a.decisions == b.decisions


def test_flap_counter_counts_reversals():
    # A square wave with a long period and no scale-down wait forces add/remove reversals.
    def square(minute):
        return 60.0 if (minute // 15) % 2 else 10.0
    settings = replace(sim.default_settings(["containers"]), scale_down_cooldown=0.0)
    score = sim.simulate("square", square, 120, settings)
    assert score.flaps > 0


def test_table_lists_each_row(scores):
    text = sim.table(list(scores.values()))
    assert text.count("\n") >= len(scores) + 1 and "oscillation" in text
